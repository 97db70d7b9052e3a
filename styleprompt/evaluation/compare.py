"""The side-by-side comparison: every registered method (Gatys, AdaIN, Ghiasi, the learned style
token, ...) on the same inputs, measured the same way. `styleprompt compare` and the app's
Compare tab both call `run_compare`.

Why it is shaped like this:
- Every column is a method of `styleprompt.evaluation.methods`' registry, loaded once through
  one networks cache (so Gatys and AdaIN share one VGG-19 and both token methods one pipeline)
  and run per content image. A method that cannot load (no weights, no embedding, no model)
  turns into a "skipped: why" column; one that fails on one image loses only that cell. One
  method's trouble never costs the others' results. Compare never names a method: what a
  method needs and offers (its options, sources, checks, whether it uses the content) is read
  from the method.
- By default it runs the methods that can run with the weights at hand, real-weight ones
  first; the others are listed with the reason.
- Time and memory are measured around the call that makes one output only, with the networks
  already loaded, so the numbers compare methods rather than disk speed; load times are listed
  separately.
- The metrics are `styleprompt.evaluation.evaluate.evaluate_image`, the same function
  `styleprompt evaluate` uses, plus each method's style gain over its own content picture
  (`STYLE_GAIN`): raw style similarity rewards a photo that already shares the painting's palette.
- The folder's layout and manifest belong to `compare_run.CompareRun`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from PIL import Image

from classic import limits
from styleprompt.evaluation import methods as registry
from styleprompt.evaluation.compare_run import CompareRun, read_manifest
from styleprompt.evaluation.methods import (
    LocalNetworks,
    Plan,
    Request,
    Sources,
    StyleMethod,
    StyleResult,
    Stylizer,
)
from styleprompt.evaluation.report import (
    STYLE_GAIN,
    Cell,
    Metric,
    ReportInfo,
    State,
    Status,
    make_grid,
    method_status,
    save_grid,
    table_rows,
    write_csv,
    write_html,
    write_markdown,
)
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import check_output_folder
from styleprompt.plumbing.images import load_image, resize_long_side, save_image
from styleprompt.plumbing.measure import measure

log = logging.getLogger(__name__)

__all__ = [
    "CompareResult",
    "default_methods",
    "measure",
    "method_label",
    "method_names",
    "read_manifest",
    "run_compare",
]

SUBJECT_TEXT = "a {class}"  # what CLIP's text score checks every output against
DEFAULT_SIZE = 512
STYLE_THUMB = 384  # long side of the style copies kept with a run (report, survey)

Progress = Callable[[str, float], None]


def method_names() -> list[str]:
    """Every registered method (the columns a comparison can have), in registration order."""
    return registry.names()


def method_label(name: str) -> str:
    return registry.label(name)


def default_methods(sources: Sources) -> tuple[list[str], dict[str, str]]:
    """The methods that can run with these sources, real-weight ones first, and the others with the reason."""
    return registry.available(method_names(), sources)


# -- the columns --------------------------------------------------------------------------------


@dataclass
class Column:
    """One method in this comparison: its options here, and once loaded, its stylizer."""

    method: StyleMethod
    options: dict[str, Any]
    stylizer: Stylizer | None = None
    weights: str = "real"  # whether its own networks are real or random, once loaded
    status: Status = field(default_factory=Status)
    setup: str = ""

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def label(self) -> str:
        """The column's name: the loaded stylizer's own where it says more than the method's (the
        token with a LoRA), else the method's label."""
        return getattr(self.stylizer, "label", None) or method_label(self.name)

    def describe(self) -> dict[str, str]:
        """Parameters written into each output PNG (what reproduces it)."""
        own = {k: str(v) for k, v in self.options.items()}
        return {
            "method": self.name,
            "weights": self.weights,
            **own,
            **(self.stylizer.describe() if self.stylizer else {}),
        }


def _columns(chosen: Sequence[str], offered: Mapping[str, Any], size: int | None, device: str) -> list[Column]:
    known = method_names()
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; choose from {', '.join(known)}")
    if not chosen:
        raise UserError(f"no method chosen; choose from {', '.join(known)}")
    columns = []
    for name in dict.fromkeys(chosen):
        method = registry.get(name)
        columns.append(Column(method, method.compare_options(offered, size, device)))
    return columns


# -- metrics --------------------------------------------------------------------------------------


def metrics_from_evaluation(result: dict) -> tuple[dict[str, Metric], dict[str, str]]:
    """Our records from `evaluate_image`'s dict: each metric's value, direction and weights,
    plus the metrics it could not compute and why."""
    metrics: dict[str, Metric] = {}
    for name, entry in (result.get("metrics") or {}).items():
        metrics[name] = Metric(
            value=entry.get("value"), better=str(entry.get("better", "")), weights=str(entry.get("weights", "none"))
        )
    unavailable = {str(k): str(v) for k, v in (result.get("unavailable") or {}).items()}
    return metrics, unavailable


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class CompareResult:
    """Where the report files are, one row per (content, method), and each method's status."""

    output: Path
    grid: Path
    csv: Path
    md: Path
    html: Path
    manifest: Path
    rows: list[dict] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)  # each method's status as text (what the files hold)
    states: dict[str, Status] = field(default_factory=dict)  # the same, typed: what code decides on
    cells: list[Cell] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)  # methods left out by default, with the reason


def _content_images(contents: Sequence[Image.Image | str | Path]) -> list[tuple[Image.Image, str]]:
    if not contents:
        raise UserError("a comparison needs at least one content image (--content PHOTO)")
    out, names = [], set()
    for i, item in enumerate(contents):
        if isinstance(item, Image.Image):
            img, name = item.convert("RGB"), f"content-{i + 1}"
        else:
            img, name = load_image(item), Path(item).stem
        if name in names:
            name = f"{name}-{i + 1}"
        names.add(name)
        out.append((img, name))
    return out


def _class_per_content(classes: Sequence[str], n: int, needed: bool) -> list[str]:
    cleaned = [c.strip() for c in classes if c and c.strip()]
    cleaned = [_strip_article(c) for c in cleaned]
    if not cleaned:
        if needed:
            raise UserError(
                'the style token methods need a subject: pass --class "a city" (one, or one per content image)'
            )
        return ["picture"] * n
    if len(cleaned) == 1:
        return cleaned * n
    if len(cleaned) != n:
        raise UserError(f"got {len(cleaned)} classes for {n} content images; give one class, or one per content image")
    return cleaned


def _strip_article(text: str) -> str:
    """ "a city" -> "city": the prompt template supplies its own article ("a <S> style of a city")."""
    for article in ("a ", "an ", "the "):
        if text.lower().startswith(article) and len(text) > len(article):
            return text[len(article) :].strip()
    return text


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


def run_compare(
    contents: Sequence[Image.Image | str | Path],
    style_images: Sequence[str | Path | Image.Image],
    *,
    embedding: str | None,
    classes: Sequence[str],
    model: Any,
    output: str | Path,
    methods: Sequence[str] | None = None,
    random_weights: bool = False,
    weights: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    size: int | None = DEFAULT_SIZE,
    seed: int = 0,
    gallery: Sequence[str | Path | Image.Image] | None = None,
    clip_model: str | None = None,
    device: str | None = None,
    cell_size: int = 256,
    metrics: bool = True,
    progress: Progress | None = None,
    notes: Callable[[str], None] | None = None,
    show_progress: bool = True,
) -> CompareResult:
    """Run every method on every content image, measure them, and write the report.

    weights: the methods' weight sources by key (`WeightSource.key`: vgg_weights, ...);
    options: the methods' fields by option (`Field.option`: iterations, steps, strength, ...);
    methods: None runs the methods that can run here (`default_methods`), real-weight ones first.
    notes: told what a method says before the run (Gatys on a CPU: how slow, and how to cut it).

    Styles: all style images drive every style-transfer method with equal weights (the
    counterpart of a token learned from the same set); the token methods use the token alone.
    """

    from styleprompt.diffusion.models import pick_device

    say: Progress = progress or (lambda message, fraction: None)
    run = CompareRun(output)
    out = run.root
    dev = str(pick_device(device))
    sources = Sources(
        device=dev,
        random_weights=random_weights,
        seed=seed,
        files={**(weights or {}), registry.EMBEDDING.key: embedding, registry.DIFFUSION_MODEL.key: model},
    )
    not_run: dict[str, str] = {}
    if methods is None:
        chosen, not_run = default_methods(sources)
        if not chosen:
            raise UserError(
                "no method can run with the weights at hand: " + "; ".join(f"{m}: {why}" for m, why in not_run.items())
            )
    else:
        chosen = list(methods)
    limits.check_side_flag("size", size)
    limits.check_bound("cell_size", cell_size)
    limits.check_seed(seed)
    check_output_folder(out)
    columns = _columns(chosen, options or {}, size, dev)
    content_items = _content_images(contents)
    styles = [s.convert("RGB") if isinstance(s, Image.Image) else load_image(s) for s in style_images]
    if not styles:
        raise UserError("a comparison needs at least one style image (--style-images DIR)")
    told: list[str] = []
    for column in columns:  # what each method would make of the inputs, before any runs
        plan = Plan(
            contents=[(f"the content image {name}", img.size) for img, name in content_items],
            styles=styles,
            size=size,
            how=f"{{setting}} {size}" if size else "its own size",
            options=column.options,
            device=dev,
            methods=[c.name for c in columns],
            sources=sources,
        )
        told += column.method.check(plan)
    needed = any(c.method.needs_subject and c.method.availability(sources).ok for c in columns)
    cls_list = _class_per_content(classes, len(content_items), needed=needed)
    for text in told:
        (notes or log.info)(text)
    gallery_images = [
        g.convert("RGB") if isinstance(g, Image.Image) else load_image(g) for g in (gallery or [])
    ] or None
    with run.locked():  # the CLI holds it already (re-entered); the app's runs take it here
        return _run(
            run,
            columns,
            sources,
            sized_from=content_items,
            styles=styles,
            cls_list=cls_list,
            gallery_images=gallery_images,
            size=size,
            seed=seed,
            metrics=metrics,
            clip_model=clip_model,
            cell_size=cell_size,
            not_run=not_run,
            embedding=embedding,
            say=say,
            show_progress=show_progress,
        )


def _run(
    run: CompareRun,
    columns: list[Column],
    sources: Sources,
    *,
    sized_from: list[tuple[Image.Image, str]],
    styles: list[Image.Image],
    cls_list: list[str],
    gallery_images: list[Image.Image] | None,
    size: int | None,
    seed: int,
    metrics: bool,
    clip_model: str | None,
    cell_size: int,
    not_run: dict[str, str],
    embedding: str | None,
    say: Progress,
    show_progress: bool,
) -> CompareResult:
    """The comparison itself, with the folder locked and every input checked."""
    from tqdm.auto import tqdm

    out, dev, content_items = run.root, sources.device, sized_from
    networks = LocalNetworks()  # loaded once, shared (one VGG-19, one pipeline with the token)
    out.mkdir(parents=True, exist_ok=True)

    # Inputs as the methods saw them, kept with the run (report, survey, reproduction).
    sized = [(resize_long_side(img, size) if size else img, name) for img, name in content_items]
    for k, (img, name) in enumerate(sized):
        save_image(img, run.content_input(k), text={"name": name})
    style_files = []
    for k, style in enumerate(styles):
        thumb = style.copy()
        thumb.thumbnail((STYLE_THUMB, STYLE_THUMB), Image.Resampling.LANCZOS)
        style_files.append(save_image(thumb, run.style_input(k)))

    total = len(columns) * (1 + 2 * len(sized)) + (len(sized) if metrics else 0)  # progress units
    units = 0
    for column in columns:
        say(f"loading {column.label}", units / total)
        start = time.perf_counter()
        try:
            column.stylizer = column.method.load(sources, networks)
            column.weights = "random" if column.stylizer.random_weights else "real"
            column.setup = f"{time.perf_counter() - start:.2f} s to load ({column.weights} weights)"
        except UserError as exc:
            column.status = Status(State.SKIPPED, _reason(exc))
        except Exception as exc:
            log.exception("preparing %s failed", column.name)
            column.status = Status(State.FAILED, f"{type(exc).__name__}: {_reason(exc)}")
        units += 1

    cells: list[Cell] = []
    bar = tqdm(total=len(columns) * len(sized), desc="compare", unit="output", disable=not show_progress)
    try:
        for i, (content, name) in enumerate(sized):
            for column in columns:
                cell = Cell(i, name, cls_list[i], column.name)
                cells.append(cell)
                say(f"{column.label} on {name}", units / total)
                if not column.status.ok:
                    cell.outcome = Status(State.SKIPPED, column.status.reason)
                else:
                    _run_one(column, cell, content, run, seed, size, styles, show_progress, dev)
                units += 1
                bar.update(1)  # outside the try: a Stop raised from a progress hook ends the run
    finally:
        bar.close()

    by_name = {c.name: c for c in columns}
    to_score = [c for c in cells if c.ok and metrics]
    bar = tqdm(total=len(to_score), desc="metrics", unit="output", disable=not show_progress or not to_score)
    baselines: dict[tuple[int, str], Metric | None] = {}  # (content, method) -> its own content picture's similarity
    try:
        if metrics and to_score:
            for k, (content, name) in enumerate(sized):
                say(f"style similarity of the content {name}", units / total)
                photo = _content_style(content, styles, sources)
                for column in columns:
                    baselines[(k, column.name)] = photo if column.method.uses_content else None
                units += 1
            for column in columns:  # a method without a content input: the picture it starts from
                reference = getattr(column.stylizer, "reference", None)
                if column.method.uses_content or reference is None or not column.status.ok:
                    continue
                for k, (content, name) in enumerate(sized):
                    picture = _reference(reference, column, content, cls_list[k], seed, size, styles, run, k, name)
                    baselines[(k, column.name)] = _content_style(picture, styles, sources) if picture else None
        for cell in cells:
            say(f"metrics for {method_label(cell.method)} on {cell.content_name}", units / total)
            if cell.ok and not metrics:
                cell.unavailable["metrics"] = "not computed (metrics turned off)"
            elif cell.ok:
                method = by_name[cell.method].method
                _evaluate(cell, method, sized[cell.content_index][0], styles, gallery_images, sources, clip_model)
                _style_gain(cell, method, baselines.get((cell.content_index, cell.method)))
                bar.update(1)
            units += 1
    finally:
        bar.close()

    states = {c.name: method_status([x for x in cells if x.method == c.name], c.status) for c in columns}
    labels = {c.name: c.label for c in columns}
    say("writing the report", 1.0)
    result = write_report(
        out,
        cells,
        sized,
        styles,
        runners=[c.name for c in columns],
        states=states,
        settings=_settings(columns, sources, size, seed, len(styles), clip_model, baselines, sized),
        cell_size=cell_size,
        not_run=not_run,
        labels=labels,
    )
    # What each column's networks were (files, hashes, a LoRA's scale): what reproduces it.
    described_by = {c.name: c.stylizer.describe() for c in columns if c.stylizer is not None}
    run.write_manifest(
        status=result.status,
        labels={m: labels.get(m, method_label(m)) for m in result.status},
        cells=cells,
        contents=[name for _, name in sized],
        style_files=style_files,
        token=next((d["token"] for d in described_by.values() if d.get("token")), None),
        embedding=str(embedding) if embedding else None,
        seed=seed,
        extra={"networks": described_by, **({"not_run": not_run} if not_run else {})},
    )
    return result


def _run_one(
    column: Column,
    cell: Cell,
    content: Image.Image,
    run: CompareRun,
    seed: int,
    size: int | None,
    styles: list[Image.Image],
    show_progress: bool,
    device: str,
) -> None:
    assert column.stylizer is not None, "loaded first"
    request = Request(
        styles=styles, size=size, seed=seed, show_progress=show_progress, subject=cell.cls, options=column.options
    )
    try:
        with measure(device) as m:
            result: StyleResult = column.stylizer.stylize(content, request)
        cell.seconds, cell.peak_mib, cell.memory_kind = m.seconds, m.peak_mib, m.kind
        cell.method_weights = "random" if result.random_weights else column.weights
        text = dict(
            column.describe(),
            **result.notes.as_text(),
            content=cell.content_name,
            seed=str(seed),
            seconds=f"{m.seconds:.3f}",
        )
        cell.image = save_image(
            result.image.convert("RGB"), run.output_image(cell.content_index, cell.content_name, column.name), text=text
        )
    except UserError as exc:
        cell.outcome = Status(State.SKIPPED, _reason(exc))
    except Exception as exc:
        log.exception("%s failed on %s", column.name, cell.content_name)
        cell.outcome = Status(State.FAILED, f"{type(exc).__name__}: {_reason(exc)}")


def _metric_weights(sources: Sources) -> dict[str, Any]:
    """The metrics' own networks: VGG-19 for the Gram and content losses, Ghiasi's for the style similarity."""
    return dict(
        vgg_weights=sources.file(registry.VGG_WEIGHTS.key),
        random_weights=sources.random_weights,
        ghiasi_models=sources.file(registry.GHIASI_MODELS.key),
        device=sources.device,
    )


def _content_style(content: Image.Image, styles: list[Image.Image], sources: Sources) -> Metric | None:
    """The content photo's own style similarity: what a method's output is measured against (style gain)."""
    try:
        from styleprompt.evaluation.evaluate import evaluate_image

        result = evaluate_image(content, None, styles, metrics=["style_similarity"], **_metric_weights(sources))
        found, _ = metrics_from_evaluation(result)
        return found.get("style_similarity")
    except Exception as exc:  # noqa: BLE001 - without a baseline there is no gain, but the rest stands
        log.warning("the content's own style similarity failed: %s", exc)
        return None


def _reference(
    reference: Callable[[Image.Image, Request], Image.Image | None],
    column: Column,
    content: Image.Image,
    subject: str,
    seed: int,
    size: int | None,
    styles: list[Image.Image],
    run: CompareRun,
    index: int,
    name: str,
) -> Image.Image | None:
    """The picture a method without a content input starts from, kept beside its output."""
    request = Request(styles=styles, size=size, seed=seed, show_progress=False, subject=subject, options=column.options)
    try:
        picture = reference(content, request)
    except Exception as exc:  # noqa: BLE001 - without a baseline there is no gain, but the rest stands
        log.warning("the reference picture of %s failed: %s", column.name, exc)
        return None
    if picture is not None:
        save_image(picture.convert("RGB"), run.reference_image(index, name, column.name), text={"method": column.name})
    return picture


def _style_gain(cell: Cell, method: StyleMethod, baseline: Metric | None) -> None:
    """style_gain = the output's style similarity minus its own content picture's (the photo; for
    text->image, the model's picture of the subject without the token)."""
    own = cell.metrics.get("style_similarity")
    if own is None or own.value is None:
        return
    if baseline is None or baseline.value is None:
        cell.unavailable[STYLE_GAIN] = (
            f"{method.kind} has no content picture to gain over"
            if not method.uses_content
            else "the content's own style similarity could not be computed"
        )
    else:
        gain = float(own.value) - float(baseline.value)
        cell.metrics[STYLE_GAIN] = Metric(value=gain, better="higher", weights=own.weights)
        cell.metrics = dict(_after(cell.metrics, "style_similarity"))  # the gain right beside the raw similarity


def _after(metrics: dict[str, Metric], first: str) -> list[tuple[str, Metric]]:
    items = [(k, v) for k, v in metrics.items() if k != STYLE_GAIN]
    at = next((i + 1 for i, (k, _) in enumerate(items) if k == first), len(items))
    return items[:at] + [(STYLE_GAIN, metrics[STYLE_GAIN])] + items[at:]


def _evaluate(
    cell: Cell,
    method: StyleMethod,
    content: Image.Image,
    styles,
    gallery,
    sources: Sources,
    clip_model: str | None,
) -> None:
    """Metrics of one output. A method without a content input (text->image) is not asked content metrics."""
    try:
        from styleprompt.evaluation.evaluate import METRICS, evaluate_image

        if cell.image is None:
            return
        image = load_image(cell.image)
        reference = content if method.uses_content else None
        # The CLIP text score asks whether the subject is still there ("a city"), for every method
        # alike: the token's own prompt would include a word CLIP has never seen.
        result = evaluate_image(
            image,
            reference,
            styles,
            gallery=gallery,
            clip_model=clip_model,
            prompt=SUBJECT_TEXT.replace("{class}", cell.cls),
            **_metric_weights(sources),
        )
        cell.metrics, cell.unavailable = metrics_from_evaluation(result)
        if reference is None:  # the user did give a content image; this method just does not use one
            for name in cell.unavailable:
                info = METRICS.get(name)
                if info is not None and info.unavailable is None and "content" in info.needs:
                    cell.unavailable[name] = f"{method.kind} has no content input"
    except Exception as exc:  # noqa: BLE001 - a metric failure must not lose the picture
        log.warning("metrics for %s on %s failed: %s", cell.method, cell.content_name, exc)
        cell.unavailable["metrics"] = _reason(exc)


def _settings(
    columns: list[Column],
    sources: Sources,
    size: int | None,
    seed: int,
    style_count: int,
    clip_model: str | None,
    baselines: dict[tuple[int, str], Metric | None],
    contents: list[tuple[Image.Image, str]],
) -> dict[str, str]:
    settings = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": sources.device,
        "size (long side, px)": str(size or "original"),
        "style images": f"{style_count}, equal weights for every style-transfer method",
        "seed": str(seed),
        "random weights requested": str(sources.random_weights),
        "CLIP model": clip_model or "none",
    }
    for (k, method), base in baselines.items():
        if base is not None and base.value is not None and registry.get(method).uses_content:
            settings[f"style_similarity of the content {contents[k][1]} itself"] = f"{float(base.value):.4f}"
        elif base is not None and base.value is not None:
            settings[f"style_similarity of what {method_label(method)} starts from ({contents[k][1]})"] = (
                f"{float(base.value):.4f}"
            )
    for column in columns:
        label = column.label
        if column.options:
            settings[f"{label} options"] = ", ".join(f"{k} {v}" for k, v in column.options.items())
        if column.stylizer is not None:
            described = {k: v for k, v in column.stylizer.describe().items() if v}
            if described:
                settings[f"{label} networks"] = ", ".join(f"{k} {v}" for k, v in described.items())
        if column.setup:
            settings[f"setup {label}"] = column.setup
    return settings


def write_report(
    out: Path,
    cells: list[Cell],
    contents: list[tuple[Image.Image, str]],
    styles: list[Image.Image],
    *,
    runners: list[str],
    states: dict[str, Status],
    settings: dict[str, str],
    cell_size: int = 256,
    not_run: dict[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> CompareResult:
    """grid.png, metrics.csv, metrics.md, report.html from finished cells. `labels`: a column's
    name where its stylizer gave one (`Column.label`), else the method's."""
    run = CompareRun(out)
    status = {m: str(state) for m, state in states.items()}
    named = {m: (labels or {}).get(m) or method_label(m) for m in [*runners, *(not_run or {})]}
    columns = [(m, named[m]) for m in runners]
    grid_cells: dict[tuple[int, str], Image.Image | str] = {}
    captions: dict[tuple[int, str], str] = {}
    for cell in cells:
        key = (cell.content_index, cell.method)
        if cell.ok and cell.image is not None:
            grid_cells[key] = Image.open(cell.image)
            mark = " \u2020" if cell.method_weights == "random" else ""
            mem = f" \u00b7 {cell.peak_mib:.0f} MiB" if cell.peak_mib is not None else ""
            captions[key] = f"{cell.seconds:.2f} s{mem}{mark}"
        else:
            grid_cells[key] = cell.status
    rows = [
        (img, f"{name} \u00b7 {next((c.cls for c in cells if c.content_index == k), '')}")
        for k, (img, name) in enumerate(contents)
    ]
    style_caption = f"{len(styles)} style image{'s' if len(styles) != 1 else ''}"
    grid = make_grid(rows, columns, grid_cells, captions, styles, side=cell_size, style_caption=style_caption)
    save_grid(grid, run.grid)
    info = ReportInfo(
        title="Style token vs neural style transfer",
        methods=runners,
        labels=named,
        contents=[(name, "") for _, name in contents],
        settings=settings,
        status=status,
        not_run=dict(not_run or {}),
    )
    write_csv(cells, run.csv)
    write_markdown(cells, info, run.markdown)
    write_html(cells, info, run.html, run.grid)
    return CompareResult(
        output=out,
        grid=run.grid,
        csv=run.csv,
        md=run.markdown,
        html=run.html,
        manifest=run.manifest,
        rows=table_rows(cells),
        status=status,
        states=states,
        cells=cells,
        not_run=dict(not_run or {}),
    )
