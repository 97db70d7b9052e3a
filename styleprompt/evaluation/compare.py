"""The side-by-side comparison: Gatys, AdaIN, Ghiasi and the learned style token on the same
inputs, measured the same way. `styleprompt compare` and the app's Compare tab both call
`run_compare`.

Why it is shaped like this:
- Every method is a small runner with `prepare` (load its networks, once) and `run` (one
  output). A runner that cannot prepare (no weights, no embedding, no model) turns into a
  "skipped: why" column; a runner that fails on one image loses only that cell. One method's
  trouble never costs the others' results.
- Time and memory are measured around `run` only, with the networks already loaded, so the
  numbers compare methods rather than disk speed; load times are listed separately.
- The metrics are `styleprompt.evaluation.evaluate.evaluate_image`, the same function `styleprompt
  evaluate` uses, so a number in the comparison means what it means everywhere else.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from PIL import Image

from classic import limits
from styleprompt.evaluation import methods as style_methods
from styleprompt.evaluation.methods import (
    LocalNetworks,
    Request,
    Sources,
    StyleMethod,
    StyleResult,
    Stylizer,
    own_options,
)
from styleprompt.evaluation.report import (
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
from styleprompt.plumbing.files import check_output_folder, write_text_atomic
from styleprompt.plumbing.images import load_image, resize_long_side, save_image
from styleprompt.plumbing.measure import measure

if TYPE_CHECKING:
    from styleprompt.diffusion.models import LoadedModel

log = logging.getLogger(__name__)

TOKEN_METHODS = ("token-txt2img", "token-img2img")  # the other columns are styleprompt.evaluation.methods' registry
TOKEN_LABELS = {"token-txt2img": "token text\u2192image", "token-img2img": "token image\u2192image"}
TOKEN_PROMPT = "a {token} style of a {class}"
SUBJECT_TEXT = "a {class}"  # what CLIP's text score checks every output against
MANIFEST_NAME = "compare.json"
DEFAULT_SIZE = 512
DEFAULT_GATYS_ITERATIONS = 100
# On a CPU Gatys is the slow method by far (100 evaluations at 512 px: 3 min on an idle 2-core
# machine, 13 on a busy laptop); 20 keeps a whole comparison within a few minutes there.
CPU_GATYS_ITERATIONS = 20
DEFAULT_STRENGTH = 0.6
STYLE_THUMB = 384  # long side of the style copies kept with a run (report, survey)

Progress = Callable[[str, float], None]


# -- the methods --------------------------------------------------------------------------------


@dataclass
class Options:
    styles: list[Image.Image]
    device: str
    size: int | None
    seed: int
    random_weights: bool
    vgg_weights: str | None
    decoder_weights: str | None
    ghiasi_models: str | None
    gatys_iterations: int
    strength: float
    token_steps: int | None
    show_progress: bool
    networks: LocalNetworks = field(default_factory=LocalNetworks)  # loaded once, shared (one VGG-19)

    @property
    def sources(self) -> Sources:
        return Sources(
            device=self.device,
            random_weights=self.random_weights,
            vgg_weights=self.vgg_weights,
            decoder_weights=self.decoder_weights,
            ghiasi_models=self.ghiasi_models,
            seed=self.seed,
        )

    @property
    def adain_style_size(self) -> int:
        """pytorch-AdaIN resizes styles to 512 px (short side); never above the content's size,
        so at small sizes AdaIN sees the styles at the scale Gatys does."""
        return min(512, self.size) if self.size else 512

    def method_options(self, method: StyleMethod) -> dict[str, Any]:
        """The comparison's settings that `method` reads (iterations for Gatys, style size for AdaIN)."""
        return own_options(method, {"iterations": self.gatys_iterations, "style_size": self.adain_style_size})


class Runner:
    """One column. `prepare` raises UserError when the method cannot run here (-> skipped)."""

    name = ""
    weights = "real"  # whether this method's own networks are real or random, once prepared

    def __init__(self, opts: Options):
        self.opts = opts

    def prepare(self) -> None:
        pass

    def run(self, content: Image.Image, cls: str) -> StyleResult:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        """Parameters written into each output PNG (what reproduces it)."""
        return {"method": self.name, "weights": self.weights}


class MethodRunner(Runner):
    """A registered stylization method (`styleprompt.evaluation.methods`): loaded once, run per content image."""

    def __init__(self, opts: Options, method: StyleMethod):
        super().__init__(opts)
        self.method = method
        self.name = method.name
        self.stylizer: Stylizer | None = None

    def prepare(self) -> None:
        self.stylizer = self.method.load(self.opts.sources, self.opts.networks)
        self.weights = "random" if self.stylizer.random_weights else "real"

    def run(self, content: Image.Image, cls: str) -> StyleResult:
        o = self.opts
        assert self.stylizer is not None, "prepare() first"
        request = Request(
            styles=o.styles,
            size=o.size,
            seed=o.seed,
            show_progress=o.show_progress,
            options=o.method_options(self.method),
        )
        return self.stylizer.stylize(content, request)

    def describe(self) -> dict[str, str]:
        own = {k: str(v) for k, v in self.opts.method_options(self.method).items()}
        return dict(super().describe(), **own, **(self.stylizer.describe() if self.stylizer else {}))


class TokenModel:
    """The diffusion model with the style token loaded, shared by both token methods."""

    def __init__(self, model: Any, embedding: str | None, device: str):
        self.model, self.embedding, self.device = model, embedding, device
        self.loaded: LoadedModel | None = None
        self.token = ""
        self.error: UserError | None = None

    def get(self):
        if self.error is not None:
            raise self.error
        if self.loaded is None:
            try:
                self._load()
            except UserError as exc:
                self.error = exc
                raise
        return self.loaded

    def _load(self) -> None:
        if not self.embedding:
            raise UserError("no style token given (--embedding FILE)")
        from styleprompt.diffusion.generate import load_embeddings
        from styleprompt.diffusion.models import LoadedModel, load_pipeline

        if not Path(self.embedding).is_file():
            raise UserError(
                f"embedding {self.embedding} does not exist; pass the learned_embeds.safetensors of a training run"
            )
        loaded = (
            self.model if isinstance(self.model, LoadedModel) else load_pipeline(str(self.model), device=self.device)
        )
        tokens = load_embeddings(loaded, [str(self.embedding)])
        if not tokens:
            raise UserError(f"{self.embedding} holds no token")
        self.loaded, self.token = loaded, tokens[0]

    @property
    def weights(self) -> str:
        from styleprompt.diffusion.models import TINY_MODELS

        return "random" if self.loaded is not None and self.loaded.name in TINY_MODELS else "real"


class TokenRunner(Runner):
    """The learned token: text->image from the prompt alone, or image->image from the content."""

    def __init__(self, opts: Options, token_model: TokenModel, img2img: bool):
        super().__init__(opts)
        self.token_model = token_model
        self.img2img = img2img
        self.name = "token-img2img" if img2img else "token-txt2img"

    def prepare(self) -> None:
        self.token_model.get()
        self.weights = self.token_model.weights

    def prompt(self, cls: str) -> str:
        from styleprompt.diffusion.templates import fill

        return fill(TOKEN_PROMPT, self.token_model.token, cls)

    def run(self, content: Image.Image, cls: str) -> StyleResult:
        from styleprompt.diffusion.generate import GenerateConfig, generate

        o = self.opts
        options: dict[str, Any] = dict(prompt=self.prompt(cls), seed=o.seed, count=1)
        if o.token_steps:
            options["steps"] = o.token_steps
        if self.img2img:
            options.update(image=content, strength=o.strength)
        items = generate(
            self.token_model.get(), GenerateConfig(**options), [self.token_model.token], show_progress=o.show_progress
        )
        return StyleResult(items[0].image, random_weights=self.weights == "random")

    def describe(self) -> dict[str, str]:
        loaded = self.token_model.loaded
        extra = {
            "model": loaded.name if loaded is not None else "",
            "embedding": str(self.token_model.embedding),
            "token": self.token_model.token,
            "seed": str(self.opts.seed),
        }
        if self.img2img:
            extra["strength"] = str(self.opts.strength)
        return dict(super().describe(), **extra)


def method_names() -> list[str]:
    """Every registered stylization method, then the two token methods."""
    return [*style_methods.names(), *TOKEN_METHODS]


def method_label(name: str) -> str:
    return TOKEN_LABELS.get(name) or style_methods.label(name)


def build_runners(methods: Sequence[str], opts: Options, token_model: TokenModel) -> list[Runner]:
    known = method_names()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; choose from {', '.join(known)}")
    if not methods:
        raise UserError(f"no method chosen; choose from {', '.join(known)}")
    runners: list[Runner] = []
    for name in dict.fromkeys(methods):
        if name in TOKEN_METHODS:
            runners.append(TokenRunner(opts, token_model, img2img=name == "token-img2img"))
        else:
            runners.append(MethodRunner(opts, style_methods.get(name)))
    return runners


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
    vgg_weights: str | None = None,
    decoder_weights: str | None = None,
    ghiasi_models: str | None = None,
    gatys_iterations: int = DEFAULT_GATYS_ITERATIONS,
    size: int | None = DEFAULT_SIZE,
    seed: int = 0,
    strength: float = DEFAULT_STRENGTH,
    token_steps: int | None = None,
    gallery: Sequence[str | Path | Image.Image] | None = None,
    clip_model: str | None = None,
    device: str | None = None,
    cell_size: int = 256,
    metrics: bool = True,
    progress: Progress | None = None,
    show_progress: bool = True,
) -> CompareResult:
    """Run every method on every content image, measure them, and write the report.

    Styles: all style images drive every classic method with equal weights (the counterpart of a
    token learned from the same set); the token methods use the token alone.
    """
    from tqdm.auto import tqdm

    from styleprompt.diffusion.models import pick_device

    say = progress or (lambda message, fraction: None)
    out = Path(output)
    methods = method_names() if methods is None else list(methods)
    dev = str(pick_device(device))
    limits.check_side_flag("--size", size)
    limits.check_range(
        "--cell-size", cell_size, 64, limits.MAX_CELL_SIZE, "the grid holds (methods + 1) x contents cells in one image"
    )
    limits.check_seed(seed)
    check_output_folder(out)
    if gatys_iterations < 1:
        raise UserError("--gatys-iterations must be at least 1")
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"--strength must be between 0 and 1 (got {strength})")
    content_items = _content_images(contents)
    for img, name in content_items:  # what each classic method would make of it, before any runs
        for method in (m for m in methods if m in limits.FOOTPRINTS):
            limits.check_working_image(
                method,
                f"the content image {name}",
                img.size,
                limits.scaled_long_side(img.size, size),
                f"--size {size}" if size else "its own size",
            )
    wants_token = any(m.startswith("token") for m in methods)
    cls_list = _class_per_content(classes, len(content_items), needed=wants_token and bool(embedding))
    styles = [s.convert("RGB") if isinstance(s, Image.Image) else load_image(s) for s in style_images]
    if not styles:
        raise UserError("a comparison needs at least one style image (--style-images DIR)")
    if "gatys" in methods:  # the styles as each method would scale them, before any runs
        from classic.gatys import check_style_sizes as gatys_styles

        for long_side in {size} if size else {max(img.size) for img, _ in content_items}:
            gatys_styles(styles, long_side)
    if "adain" in methods:
        from classic.adain import check_style_sizes as adain_styles

        adain_styles(styles, min(512, size) if size else 512)
    gallery_images = [
        g.convert("RGB") if isinstance(g, Image.Image) else load_image(g) for g in (gallery or [])
    ] or None
    opts = Options(
        styles=styles,
        device=dev,
        size=size,
        seed=seed,
        random_weights=random_weights,
        vgg_weights=vgg_weights,
        decoder_weights=decoder_weights,
        ghiasi_models=ghiasi_models,
        gatys_iterations=gatys_iterations,
        strength=strength,
        token_steps=token_steps,
        show_progress=show_progress,
    )
    token_model = TokenModel(model, embedding, dev)
    runners = build_runners(methods, opts, token_model)
    out.mkdir(parents=True, exist_ok=True)

    # Inputs as the methods saw them, kept with the run (report, survey, reproduction).
    sized = [(resize_long_side(img, size) if size else img, name) for img, name in content_items]
    inputs = out / "inputs"
    for k, (img, name) in enumerate(sized):
        save_image(img, inputs / f"content-{k + 1:02d}.png", text={"name": name})
    style_files = []
    for k, style in enumerate(styles):
        thumb = style.copy()
        thumb.thumbnail((STYLE_THUMB, STYLE_THUMB), Image.Resampling.LANCZOS)
        style_files.append(save_image(thumb, inputs / f"style-{k + 1:02d}.png"))

    total = len(runners) * (1 + 2 * len(sized))  # prepare, run and evaluate: progress units
    units = 0
    setup: dict[str, str] = {}
    prepared: dict[str, Status] = {}
    for runner in runners:
        say(f"loading {method_label(runner.name)}", units / total)
        start = time.perf_counter()
        try:
            runner.prepare()
            prepared[runner.name] = Status()
            setup[runner.name] = f"{time.perf_counter() - start:.2f} s to load ({runner.weights} weights)"
        except UserError as exc:
            prepared[runner.name] = Status(State.SKIPPED, _reason(exc))
        except Exception as exc:
            log.exception("preparing %s failed", runner.name)
            prepared[runner.name] = Status(State.FAILED, f"{type(exc).__name__}: {_reason(exc)}")
        units += 1

    cells: list[Cell] = []
    bar = tqdm(total=len(runners) * len(sized), desc="compare", unit="output", disable=not show_progress)
    try:
        for i, (content, name) in enumerate(sized):
            for runner in runners:
                cell = Cell(i, name, cls_list[i], runner.name)
                cells.append(cell)
                say(f"{method_label(runner.name)} on {name}", units / total)
                if not prepared[runner.name].ok:
                    cell.outcome = Status(State.SKIPPED, prepared[runner.name].reason)
                else:
                    _run_one(runner, cell, content, out)
                units += 1
                bar.update(1)  # outside the try: a Stop raised from a progress hook ends the run
    finally:
        bar.close()

    to_score = [c for c in cells if c.ok and metrics]
    bar = tqdm(total=len(to_score), desc="metrics", unit="output", disable=not show_progress or not to_score)
    try:
        for cell in cells:
            say(f"metrics for {method_label(cell.method)} on {cell.content_name}", units / total)
            if cell.ok and not metrics:
                cell.unavailable["metrics"] = "not computed (metrics turned off)"
            elif cell.ok:
                _evaluate(cell, sized[cell.content_index][0], styles, gallery_images, opts, clip_model)
                bar.update(1)
            units += 1
    finally:
        bar.close()

    states = {r.name: method_status([c for c in cells if c.method == r.name], prepared[r.name]) for r in runners}
    say("writing the report", 1.0)
    result = write_report(
        out,
        cells,
        sized,
        styles,
        runners=[r.name for r in runners],
        states=states,
        settings=_settings(opts, token_model, embedding, setup, dev, clip_model),
        cell_size=cell_size,
    )
    _write_manifest(result, cells, sized, style_files, token_model, embedding, opts)
    return result


def _run_one(runner: Runner, cell: Cell, content: Image.Image, out: Path) -> None:
    try:
        with measure(runner.opts.device) as m:
            result = runner.run(content, cell.cls)
        image = result.image
        cell.seconds, cell.peak_mib, cell.memory_kind = m.seconds, m.peak_mib, m.kind
        cell.method_weights = "random" if result.random_weights else runner.weights
        text = dict(runner.describe(), content=cell.content_name, seconds=f"{m.seconds:.3f}")
        if isinstance(runner, TokenRunner):
            text["prompt"] = runner.prompt(cell.cls)
        cell.image = save_image(
            image.convert("RGB"),
            out / "images" / f"{cell.content_index + 1:02d}-{cell.content_name}" / f"{runner.name}.png",
            text=text,
        )
    except UserError as exc:
        cell.outcome = Status(State.SKIPPED, _reason(exc))
    except Exception as exc:
        log.exception("%s failed on %s", runner.name, cell.content_name)
        cell.outcome = Status(State.FAILED, f"{type(exc).__name__}: {_reason(exc)}")


def _evaluate(cell: Cell, content: Image.Image, styles, gallery, opts: Options, clip_model: str | None) -> None:
    """Metrics of one output. Text->image has no content input, so content metrics are not asked."""
    try:
        from styleprompt.evaluation.evaluate import METRICS, evaluate_image

        if cell.image is None:
            return
        image = load_image(cell.image)
        reference = None if cell.method == "token-txt2img" else content
        # The CLIP text score asks whether the subject is still there ("a city"), for every method
        # alike: the token's own prompt would include a word CLIP has never seen.
        result = evaluate_image(
            image,
            reference,
            styles,
            gallery=gallery,
            vgg_weights=opts.vgg_weights,
            random_weights=opts.random_weights,
            clip_model=clip_model,
            device=opts.device,
            prompt=SUBJECT_TEXT.replace("{class}", cell.cls),
            ghiasi_models=opts.ghiasi_models,
        )
        cell.metrics, cell.unavailable = metrics_from_evaluation(result)
        if reference is None:  # the user did give a content image; this method just does not use one
            for name in cell.unavailable:
                info = METRICS.get(name)
                if info is not None and info.unavailable is None and "content" in info.needs:
                    cell.unavailable[name] = "text->image has no content input"
    except Exception as exc:  # noqa: BLE001 - a metric failure must not lose the picture
        log.warning("metrics for %s on %s failed: %s", cell.method, cell.content_name, exc)
        cell.unavailable["metrics"] = _reason(exc)


def _settings(
    opts: Options, token_model: TokenModel, embedding, setup: dict[str, str], device: str, clip_model: str | None
) -> dict[str, str]:
    settings = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "size (long side, px)": str(opts.size or "original"),
        "style images": f"{len(opts.styles)}, equal weights for Gatys/AdaIN/Ghiasi",
        "Gatys iterations": str(opts.gatys_iterations),
        "seed": str(opts.seed),
        "random weights requested": str(opts.random_weights),
        "CLIP model": clip_model or "none",
    }
    if token_model.loaded is not None:
        settings.update(
            {
                "model": token_model.loaded.name,
                "embedding": str(embedding),
                "token": token_model.token,
                "token prompt": TOKEN_PROMPT.replace("{token}", token_model.token),
                "img2img strength": str(opts.strength),
            }
        )
    settings.update({f"setup {method_label(k)}": v for k, v in setup.items()})
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
) -> CompareResult:
    """grid.png, metrics.csv, metrics.md, report.html from finished cells."""
    status = {m: str(state) for m, state in states.items()}
    columns = [(m, method_label(m)) for m in runners]
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
    paths = {name: out / name for name in ("grid.png", "metrics.csv", "metrics.md", "report.html")}
    save_grid(grid, paths["grid.png"])
    info = ReportInfo(
        title="Style token vs neural style transfer",
        methods=runners,
        labels={m: method_label(m) for m in runners},
        contents=[(name, "") for _, name in contents],
        settings=settings,
        status=status,
    )
    write_csv(cells, paths["metrics.csv"])
    write_markdown(cells, info, paths["metrics.md"])
    write_html(cells, info, paths["report.html"], paths["grid.png"])
    return CompareResult(
        output=out,
        grid=paths["grid.png"],
        csv=paths["metrics.csv"],
        md=paths["metrics.md"],
        html=paths["report.html"],
        manifest=out / MANIFEST_NAME,
        rows=table_rows(cells),
        status=status,
        states=states,
        cells=cells,
    )


def _write_manifest(
    result: CompareResult,
    cells: list[Cell],
    contents,
    style_files: list[Path],
    token_model: TokenModel,
    embedding,
    opts: Options,
) -> None:
    """compare.json: what the survey and later tools read back (paths relative to the run)."""
    out = result.output

    def rel(path: Path | None) -> str | None:
        return None if path is None else str(Path(path).relative_to(out))

    manifest = {
        "format": "styleprompt-compare",
        "version": 1,
        "methods": list(result.status),
        "labels": {m: method_label(m) for m in result.status},
        "status": result.status,
        "token": token_model.token or None,
        "embedding": str(embedding) if embedding else None,
        "seed": opts.seed,
        "contents": [
            {
                "name": name,
                "class": next((c.cls for c in cells if c.content_index == k), ""),
                "image": f"inputs/content-{k + 1:02d}.png",
            }
            for k, (_, name) in enumerate(contents)
        ],
        "styles": [rel(p) for p in style_files],
        "cells": [
            {
                "content_index": c.content_index,
                "method": c.method,
                "status": c.status,
                "image": rel(c.image),
                "seconds": c.seconds,
                "peak_mib": c.peak_mib,
                "memory_measure": c.memory_kind,
                "method_weights": c.method_weights,
                "metrics": {
                    k: {"value": v.value, "better": v.better, "weights": v.weights} for k, v in c.metrics.items()
                },
                "unavailable": c.unavailable,
            }
            for c in cells
        ],
    }
    write_text_atomic(result.manifest, json.dumps(manifest, indent=2, default=str))


def read_manifest(folder: str | Path) -> dict:
    """A compare run's compare.json, checked enough that the survey can trust its paths."""
    root = Path(folder)
    path = root / MANIFEST_NAME if root.is_dir() else root
    if not path.is_file():
        raise UserError(f"{root} is not a comparison folder (no {MANIFEST_NAME}); run `styleprompt compare` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not readable JSON ({_reason(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != "styleprompt-compare":
        raise UserError(f"{path} is not a styleprompt comparison manifest")
    _check_manifest(data, path)
    return data


def _check_manifest(data: dict, path: Path) -> None:
    """The fields the survey reads, with the right types, and every image inside the run folder.

    Why the folder rule: survey.html embeds these pictures and is mailed to raters, so a crafted
    compare.json naming `/home/me/.ssh/id_rsa.png` or `../../private.jpg` must not put that file
    in the page. Paths are taken relative to the folder, resolved (links followed), and kept
    only when they stay inside it.
    """
    root = path.parent.resolve()
    bad = f"{path} is damaged or was edited"
    cells, styles, labels = data.get("cells", []), data.get("styles", []), data.get("labels", {})
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise UserError(f"{bad}: 'cells' is not a list of objects")
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        raise UserError(f"{bad}: 'styles' is not a list of file names")
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise UserError(f"{bad}: 'labels' is not an object of names")
    for cell in cells:
        index, method, image = cell.get("content_index"), cell.get("method"), cell.get("image")
        if isinstance(index, bool) or not isinstance(index, int) or not isinstance(method, str):
            raise UserError(f"{bad}: a cell's content_index or method is missing or of the wrong type")
        if not isinstance(cell.get("status", ""), str) or not (image is None or isinstance(image, str)):
            raise UserError(f"{bad}: a cell's status or image is of the wrong type")
    for name in styles + [c["image"] for c in cells if c.get("image")]:
        target = (root / name).resolve()
        if not target.is_relative_to(root):
            raise UserError(
                f"{path} names the image {name!r}, which is outside its run folder {root}; "
                "only the run's own pictures are read"
            )
        if not target.is_file():
            raise UserError(f"{path} names the image {name!r}, which is not in {root}; was the folder moved in parts?")
