"""The best-checkpoint picker: which of a training run's saved embeddings to use.

Why: textual inversion keeps getting "more of the style" with steps, and past some point the
token starts to carry the training pictures' *content* too, so "a <S> style of a dog" stops
looking like a dog. The last file is not automatically the best one. Each intermediate
embedding is scored on a fixed prompt grid on two axes:

- style: the learned Ghiasi style similarity (`styleprompt.evaluation.evaluate.style_similarity`, real
  weights) of each generated image to each training artwork, averaged. Higher is better.
- prompt fidelity: with a CLIP model, CLIP's text-image score of each image against its prompt
  without the token ("a dog"). Without one, a content-leak proxy: images made from the same
  seed for *different* subjects should differ; the mean SSIM between them (grey, 128 px) is
  the leak, and 1 - leak the fidelity. A token that paints the same picture whatever the
  subject scores low. The same number for the model without the token is drawn as a reference.

The recommendation is the Pareto-optimal checkpoint with the highest sum of the two scores,
each min-max normalised over the run (ties: the earlier step, the less over-fitted one).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

PICK_CLASSES = ("lighthouse", "dog", "portrait", "city")
# The micro model knows only its world's classes: its picker paints those.
MICRO_PICK_CLASSES = ("lighthouse", "boat", "fish", "city")
PICK_PROMPT = "a {token} style of a {class}"
FIDELITY_TEXT = "a {class}"  # what the picture should still show, without the token
BASELINE_PROMPT = "a painting of a {class}"  # the model without the token, for the reference line
LEAK_SIDE = 128  # px: SSIM of structure, not of fine noise
_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")

Progress = Callable[[str, float], None]


@dataclass
class CheckpointScore:
    step: int
    path: str
    style: float
    fidelity: float
    images: list[str] = field(default_factory=list)
    pareto: bool = False
    combined: float = 0.0


@dataclass
class PickResult:
    recommended: CheckpointScore
    scores: list[CheckpointScore]
    fidelity_kind: str  # "clip text score (...)" or "1 - cross-subject SSIM"
    baseline_fidelity: float | None
    plot: Path
    csv: Path
    json: Path
    sheet: Path


# -- the run's files ---------------------------------------------------------------------------


def run_embeddings(run: Path) -> list[tuple[int, Path]]:
    """(step, file) for every intermediate embedding, plus the final one if its step is new."""
    from styleprompt.diffusion.tokens import DIFFUSERS_WEIGHT_NAME

    found: dict[int, Path] = {}
    folder = run / "embeddings"
    if folder.is_dir():
        for path in folder.iterdir():
            match = _STEP_FILE.match(path.name)
            if match:
                found[int(match.group(1))] = path
    final = run / DIFFUSERS_WEIGHT_NAME
    if final.is_file():
        step = _file_step(final)
        if step is not None and step not in found:
            found[step] = final
    return sorted(found.items())


def _file_step(path: Path) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            value = (handle.metadata() or {}).get("styleprompt.step")
        return int(value) if value is not None else None
    except (OSError, ValueError, RuntimeError):
        return None


def default_classes(run: Path, model: str | None) -> tuple[str, ...]:
    """The subjects to paint when none are given: the world's for the micro model."""
    name = model or (run_config(run).get("model") if (run / "config.json").is_file() else None)
    return MICRO_PICK_CLASSES if name == "micro" else PICK_CLASSES


# The fields of a run's config.json that pick reads, and their types (the file is data: validated here).
_CONFIG_FIELDS = {"images": str, "model": str, "token": str}


def run_config(run: Path) -> dict:
    """The run's config.json, checked where pick reads it; a missing file is an empty config.

    A damaged or hand-made file is refused in one line naming it (a list, a number, a `model`
    that is not text would otherwise surface as a TypeError deep in the model loader).
    """
    path = run / "config.json"
    if not path.is_file():
        return {}
    fix = "fix or remove it, or pass --images and --model"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        raise UserError(f"cannot read {path} ({type(exc).__name__}); {fix}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a {type(config).__name__}, not a run's settings; {fix}")
    for key, kind in _CONFIG_FIELDS.items():
        if config.get(key) is not None and not isinstance(config[key], kind):
            raise UserError(f"{path}: '{key}' is {type(config[key]).__name__}, not {kind.__name__}; {fix}")
    return config


def _artworks_folder(run: Path, config: dict, images: str | Path | None) -> Path:
    """The training artworks: --images, else config.json's folder (relative to the working
    directory at training time, so tried from here and from the run's parent)."""
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise UserError(f"--images {folder} is not a folder")
        return folder
    recorded = config.get("images")
    if recorded:
        for candidate in (Path(recorded), run.parent / recorded, run / recorded):
            if candidate.is_dir():
                return candidate
    raise UserError(f"cannot find the training artworks of {run} (config.json says {recorded!r}); pass --images FOLDER")


# -- scoring ----------------------------------------------------------------------------------------


def _generate(loaded, prompt: str, seed: int, steps: int | None, tokens: list[str]) -> Image.Image:
    from styleprompt.diffusion.generate import GenerateConfig, generate

    options: dict[str, Any] = dict(prompt=prompt, seed=seed, count=1)
    if steps:
        options["steps"] = steps
    return generate(loaded, GenerateConfig(**options), tokens, show_progress=False)[0].image


def style_score(images: Sequence[Image.Image], artworks: Sequence[Image.Image]) -> float:
    """Mean learned style similarity of the images to the artworks (higher: more of the style)."""
    from styleprompt.evaluation.evaluate import style_similarity

    values = [style_similarity(img, art) for img in images for art in artworks]
    return float(sum(values) / len(values))


def leak_fidelity(by_seed: dict[int, list[Image.Image]]) -> float:
    """1 - mean SSIM between pictures of different subjects made from the same seed."""
    from styleprompt.evaluation.evaluate import ssim

    values = []
    for images in by_seed.values():
        small = [img.convert("L").resize((LEAK_SIDE, LEAK_SIDE), Image.Resampling.BICUBIC) for img in images]
        values += [float(ssim(a, b)) for a, b in combinations(small, 2)]
    if not values:
        raise UserError("the leak proxy needs at least two subjects (--class) to compare")
    return 1.0 - sum(values) / len(values)


def clip_fidelity(images: Sequence[tuple[Image.Image, str]], clip_model: str, device: str) -> float:
    """Mean CLIP text-image score of each picture against its subject without the token."""
    from styleprompt.evaluation.evaluate import clip_text_score

    values = [float(clip_text_score(img, text, clip_model, device=device)) for img, text in images]
    return sum(values) / len(values)


def mark_recommendation(scores: list[CheckpointScore]) -> CheckpointScore:
    """Pareto front on (style, fidelity); among it, the best normalised sum; ties -> earlier."""

    def norm(values: list[float]) -> list[float]:
        lo, hi = min(values), max(values)
        return [1.0 if hi - lo < 1e-12 else (v - lo) / (hi - lo) for v in values]

    style_n = norm([s.style for s in scores])
    fid_n = norm([s.fidelity for s in scores])
    for s, a, b in zip(scores, style_n, fid_n):
        s.combined = a + b
        s.pareto = not any(
            (o.style >= s.style and o.fidelity >= s.fidelity) and (o.style > s.style or o.fidelity > s.fidelity)
            for o in scores
        )
    front = [s for s in scores if s.pareto]
    return max(front, key=lambda s: (round(s.combined, 9), -s.step))


def pick_checkpoint(
    run: str | Path,
    *,
    model: Any = None,
    images: str | Path | None = None,
    classes: Sequence[str] = PICK_CLASSES,
    seeds: Sequence[int] = (0,),
    steps: int | None = None,
    clip_model: str | None = None,
    device: str | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
    show_progress: bool = True,
) -> PickResult:
    """Score every saved embedding of a training run and name the one to use."""
    from tqdm.auto import tqdm

    from styleprompt.diffusion.generate import load_embeddings
    from styleprompt.diffusion.models import LoadedModel, load_pipeline, text_copy
    from styleprompt.plumbing.images import list_images, load_image

    say = progress or (lambda message, fraction: None)
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a training run folder (the --output of `styleprompt train`)")
    checkpoints = run_embeddings(run_dir)
    if not checkpoints:
        raise UserError(f"{run_dir} holds no embeddings (embeddings/step-*.safetensors); train with --save-every N")
    classes = [c.strip() for c in classes if c and c.strip()]
    if not classes:
        raise UserError("give at least one subject (--class)")
    if clip_model is None and len(classes) < 2:
        raise UserError(
            "without --clip-model the picker compares subjects with each other; give at least two --class values"
        )
    seeds = list(dict.fromkeys(int(s) for s in seeds)) or [0]
    config = run_config(run_dir)
    art_paths = list_images(_artworks_folder(run_dir, config, images))
    if not art_paths:
        raise UserError("the training artworks folder holds no images")
    artworks = [load_image(p) for p in art_paths]
    out = Path(output) if output else run_dir / "pick"
    if isinstance(model, LoadedModel):
        base = model
    else:
        name = model or config.get("model")
        if not name:
            raise UserError(f"{run_dir}/config.json names no model; pass --model")
        say(f"loading {name}", 0.0)
        base = load_pipeline(str(name), device=device)
    dev = str(base.device)
    prompts = [(cls, seed) for cls in classes for seed in seeds]
    fidelity_kind = (
        f"CLIP text-image score ({clip_model})" if clip_model else "1 - cross-subject SSIM (content-leak proxy)"
    )

    def fidelity(pictures: list[tuple[str, int, Image.Image]]) -> float:
        if clip_model:
            return clip_fidelity(
                [(img, FIDELITY_TEXT.replace("{class}", cls)) for cls, _, img in pictures], clip_model, dev
            )
        by_seed: dict[int, list[Image.Image]] = {}
        for _, seed, img in pictures:
            by_seed.setdefault(seed, []).append(img)
        return leak_fidelity(by_seed)

    total = (len(checkpoints) + 1) * len(prompts)
    bar = tqdm(total=total, desc="pick", unit="image", disable=not show_progress)
    done = 0
    scores: list[CheckpointScore] = []
    try:
        say("reference: the model without the token", 0.0)
        baseline = []
        for cls, seed in prompts:
            baseline.append((cls, seed, _generate(base, BASELINE_PROMPT.replace("{class}", cls), seed, steps, [])))
            done += 1
            bar.update(1)
        baseline_fidelity = fidelity(baseline)
        for step, path in checkpoints:
            # A fresh copy of the text encoder per checkpoint: one token name, many versions.
            view = text_copy(base)
            tokens = load_embeddings(view, [str(path)])
            if not tokens:
                raise UserError(f"{path} holds no token")
            pictures, files = [], []
            for cls, seed in prompts:
                say(f"step {step}: {cls}, seed {seed}", done / total)
                prompt = PICK_PROMPT.replace("{token}", tokens[0]).replace("{class}", cls)
                img = _generate(view, prompt, seed, steps, tokens)
                pictures.append((cls, seed, img))
                files.append(
                    str(
                        _save(
                            img,
                            out / "images" / f"step-{step:06d}" / f"{_slug(cls)}-seed{seed}.png",
                            {"prompt": prompt, "seed": str(seed), "embedding": str(path), "step": str(step)},
                        )
                    )
                )
                done += 1
                bar.update(1)
            scores.append(
                CheckpointScore(
                    step, str(path), style_score([p[2] for p in pictures], artworks), fidelity(pictures), files
                )
            )
            del view
    finally:
        bar.close()
    best = mark_recommendation(scores)
    say("writing the plot", 1.0)
    result = PickResult(
        best,
        scores,
        fidelity_kind,
        baseline_fidelity,
        out / "pick.png",
        out / "pick.csv",
        out / "pick.json",
        out / "pick-grid.png",
    )
    plot_tradeoff(result, config.get("token", ""))
    _write_tables(result, classes, seeds)
    _write_sheet(result, classes, seeds)
    return result


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "subject"


def _save(img: Image.Image, path: Path, text: dict[str, str]) -> Path:
    from styleprompt.plumbing.images import save_image

    return save_image(img, path, text=text)


# -- outputs ----------------------------------------------------------------------------------------


def plot_tradeoff(result: PickResult, token: str = "") -> Path:
    """pick.png: style against fidelity per checkpoint (left) and both against step (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = result.scores
    best = result.recommended
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    ax.plot([s.style for s in scores], [s.fidelity for s in scores], "-", color="#bbb", lw=1, zorder=1)
    ax.scatter(
        [s.style for s in scores], [s.fidelity for s in scores], c=[s.step for s in scores], cmap="viridis", zorder=2
    )
    for s in scores:
        ax.annotate(str(s.step), (s.style, s.fidelity), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.scatter(
        [best.style],
        [best.fidelity],
        s=220,
        facecolors="none",
        edgecolors="red",
        linewidths=2,
        zorder=3,
        label=f"recommended: step {best.step}",
    )
    if result.baseline_fidelity is not None:
        ax.axhline(result.baseline_fidelity, color="gray", ls="--", lw=1, label="fidelity without the token")
    ax.set_xlabel("style similarity to the artworks (Ghiasi, higher = more style)")
    ax.set_ylabel(f"prompt fidelity: {result.fidelity_kind}", fontsize=8)
    ax.set_title(f"style vs prompt fidelity {token}".strip())
    ax.legend(fontsize=8, loc="best")
    steps = [s.step for s in scores]
    # The two series share the x positions and, each scaled to its own axis, often the heights too:
    # small filled circles inside large hollow squares keep both visible where they coincide.
    ax2.plot(steps, [s.style for s in scores], "o-", label="style", color="tab:blue", ms=4, zorder=3)
    ax2.set_xlabel("training step")
    ax2.set_ylabel("style", color="tab:blue")
    twin = ax2.twinx()
    twin.plot(
        steps, [s.fidelity for s in scores], "s--", label="fidelity", color="tab:orange", ms=9, mfc="none", mew=1.5
    )
    twin.set_ylabel("fidelity", color="tab:orange")
    ax2.axvline(best.step, color="red", lw=1, ls=":")
    ax2.set_title("scores by step")
    fig.tight_layout()
    with atomic_path(result.plot) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return result.plot


def _write_tables(result: PickResult, classes: Sequence[str], seeds: Sequence[int]) -> None:
    fields = ["step", "file", "style", "fidelity", "pareto", "combined", "recommended"]
    with atomic_path(result.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        for s in result.scores:
            writer.writerow(
                {
                    "step": s.step,
                    "file": s.path,
                    "style": f"{s.style:.6f}",
                    "fidelity": f"{s.fidelity:.6f}",
                    "pareto": s.pareto,
                    "combined": f"{s.combined:.4f}",
                    "recommended": s is result.recommended,
                }
            )
    doc = {
        "recommended": result.recommended.path,
        "recommended_step": result.recommended.step,
        "style_metric": "mean Ghiasi style similarity to the training artworks (higher is better, real weights)",
        "fidelity_metric": result.fidelity_kind + " (higher is better)",
        "baseline_fidelity": result.baseline_fidelity,
        "prompt": PICK_PROMPT,
        "classes": list(classes),
        "seeds": list(seeds),
        "rule": "Pareto front of (style, fidelity), then the highest sum of min-max normalised scores; ties: earlier step",
        "checkpoints": [asdict(s) for s in result.scores],
    }
    write_text_atomic(result.json, json.dumps(doc, indent=2) + "\n")


def _write_sheet(result: PickResult, classes: Sequence[str], seeds: Sequence[int], side: int = 128) -> None:
    """pick-grid.png: a row per checkpoint, a column per prompt, the recommended row marked."""
    from PIL import ImageDraw

    from styleprompt.evaluation.report import _font, fit_into

    label_w, pad = 110, 4
    columns = len(classes) * len(seeds)
    sheet = Image.new("RGB", (label_w + columns * (side + pad), 22 + len(result.scores) * (side + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    for k, (cls, seed) in enumerate((c, s) for c in classes for s in seeds):
        draw.text((label_w + k * (side + pad), 4), f"{cls} (seed {seed})"[:22], fill="black", font=font)
    for r, score in enumerate(result.scores):
        y = 22 + r * (side + pad)
        mark = " *" if score is result.recommended else ""
        draw.text((4, y + side // 2 - 14), f"step {score.step}{mark}", fill="red" if mark else "black", font=font)
        draw.text((4, y + side // 2 + 2), f"S {score.style:.4g} F {score.fidelity:.3g}", fill="#555", font=_font(10))
        for k, path in enumerate(score.images):
            sheet.paste(fit_into(Image.open(path), side), (label_w + k * (side + pad), y))
    with atomic_path(result.sheet) as tmp:
        sheet.save(tmp, format="PNG")
