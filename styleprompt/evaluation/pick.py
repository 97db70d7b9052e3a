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

A pivotal run (`train --adapter lora`) saves each step's LoRA beside its token, and the two were
trained together: a step's token without its LoRA is not what that step learned. Its candidates
are therefore (token, LoRA) pairs (`run_pairs`); each pair's pictures are painted with its LoRA in
the model (loaded as `generate --lora` loads it, taken off afterwards), and `--quick` puts each
step's LoRA into the rebuilt trainer. The reference line stays the model without token and LoRA.

Speed: the model is loaded once and only each candidate's text encoder is copied; every
candidate's prompts are encoded first and the pictures of all candidates are then painted
together in large batches (a CPU runs a small UNet on 88 rows in about the time of 8), the
style judge encodes the artworks once and each candidate's pictures in one batch. A pair's
pictures are painted in batches of their own (its LoRA is in the UNet only for them). `--quick`
paints nothing: it ranks the candidates by the validation loss (`diffusion.validation`), a
first pass in seconds; the full pick also shows that loss where loss.csv holds it.
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

from styleprompt.diffusion.training_run import TrainingRun
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

Progress = Callable[[str, float], None]
# The bar counts pictures in fractions (each denoising step of a batch); show them whole, with the ETA.
_BAR = "{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


@dataclass
class CheckpointScore:
    step: int
    path: str
    style: float
    fidelity: float
    images: list[str] = field(default_factory=list)
    pareto: bool = False
    combined: float = 0.0
    validation: float | None = None  # loss.csv's val_loss at this step, where the run logged one
    lora: str | None = None  # pivotal tuning: the LoRA of the same step, painted with the token


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
    found: dict[int, Path] = dict(TrainingRun(run).step_embeddings())
    final = TrainingRun(run).embedding
    if final.is_file():
        step = _file_step(final)
        if step is not None and step not in found:
            found[step] = final
    return sorted(found.items())


def run_pairs(run: Path) -> list[tuple[int, Path, Path | None]]:
    """(step, token file, the LoRA of the same step or None) for every candidate of `run_embeddings`.

    Why pairs: a pivotal run's token and LoRA were trained together, so a step's token is only
    judged fairly with that step's LoRA (`embeddings/step-N.lora.safetensors` beside
    `step-N.safetensors`; the final token with the final LoRA). A token-only run has no LoRA: None.
    """
    names = TrainingRun(run)
    pairs = []
    for step, path in run_embeddings(run):
        lora = names.lora if path == names.embedding else names.step_lora(step)
        pairs.append((step, path, lora if lora.is_file() else None))
    return pairs


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
    name = model or run_config(run).get("model")
    return MICRO_PICK_CLASSES if name == "micro" else PICK_CLASSES


def run_config(run: Path) -> dict:
    """The run's config.json, schema-checked by `TrainingRun.read_config`; a missing file is {}."""
    return TrainingRun(run).read_config()


def _free_threads(device):
    """On a CPU, the threads free now for the painting and the judges (one beside other jobs:
    OpenMP threads that spin against another process's made a micro UNet step 6x slower,
    `plumbing.cpu_threads`); the process's own count comes back afterwards."""
    from contextlib import nullcontext

    from styleprompt.plumbing import cpu_threads

    return cpu_threads.fixed_for_run() if device.type == "cpu" else nullcontext()


def validation_by_step(run: Path, column: str = "val_loss") -> dict[int, float]:
    """step -> the validation loss loss.csv logged (none: an older run, validation off, or no file)."""
    from styleprompt.diffusion.training import LossLog, validation_points

    try:
        rows = LossLog.read(TrainingRun(run).loss_log)
    except UserError as exc:
        log.warning("%s; pick goes on without the logged validation loss", exc)
        return {}
    return dict(zip(*validation_points(rows, column)))


# -- scoring ----------------------------------------------------------------------------------------


# Latent pixels (rows x h x w, before classifier-free guidance doubles the rows) painted in one UNet call:
# 16 pictures of SD 1.5 (64 x 64 latents), all 44 of the tiny smoke run's (16 x 16).
BATCH_LATENT_PIXELS = 16 * 64 * 64


@dataclass
class _Job:
    """One picture to paint: whose it is (candidate index, -1: the model without the token) and its encoded prompt."""

    owner: int
    cls: str
    seed: int
    prompt: str
    embeds: dict[str, Any]  # encode_prompt's tensors for one picture (batch 1)


class _Painter:
    """Paints pictures of many candidates in shared batches on one loaded model.

    Each candidate's prompts are encoded with its own text encoder copy (`encode`); `paint` then
    runs the shared UNet on the concatenated embeddings. Each picture keeps its own CPU generator
    seeded with its seed, so it is the picture `styleprompt generate` makes for that prompt and
    seed (batched arithmetic may differ in the last bits).
    """

    def __init__(self, base, steps: int | None):
        from styleprompt.diffusion.generate import GenerateConfig
        from styleprompt.diffusion.models import is_sdxl, native_resolution

        defaults = GenerateConfig(prompt="-")
        self.base = base
        self.steps = int(steps or defaults.steps)
        self.guidance = defaults.guidance
        self.scheduler = defaults.scheduler
        self.sdxl = is_sdxl(base.pipe)
        self.side = native_resolution(base.pipe)
        latent = self.side // int(base.pipe.vae_scale_factor)
        self.batch = max(1, BATCH_LATENT_PIXELS // (latent * latent))

    def encode(self, loaded, prompts: Sequence[str]) -> list[dict[str, Any]]:
        """encode_prompt's tensors for each prompt, split into one dict per picture."""
        import torch

        pipe = loaded.pipe
        with torch.no_grad():
            if self.sdxl:
                cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
                    prompt=list(prompts), device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=True
                )
                named = {
                    "prompt_embeds": cond,
                    "negative_prompt_embeds": uncond,
                    "pooled_prompt_embeds": pooled,
                    "negative_pooled_prompt_embeds": uncond_pooled,
                }
            else:
                cond, uncond = pipe.encode_prompt(list(prompts), pipe.device, 1, True)
                named = {"prompt_embeds": cond, "negative_prompt_embeds": uncond}
        return [{k: v[i : i + 1] for k, v in named.items()} for i in range(len(prompts))]

    def paint(self, jobs: Sequence[_Job], tick: Callable[[float], None], pipe: Any = None) -> list[Image.Image]:
        """Every job's picture, in order, `self.batch` pictures per UNet call; `tick(pictures)` per step.
        `pipe`: another pipeline over the model (one with a LoRA in its UNet); the base one by default."""
        import torch

        from styleprompt.diffusion.generate import make_scheduler, runner_for

        pipe = pipe if pipe is not None else self.base.pipe
        images: list[Image.Image] = []
        for start in range(0, len(jobs), self.batch):
            chunk = jobs[start : start + self.batch]
            runner = runner_for(pipe, False, make_scheduler(self.scheduler, pipe.scheduler.config))
            embeds = {k: torch.cat([job.embeds[k] for job in chunk]) for k in chunk[0].embeds}
            share = len(chunk) / self.steps

            def on_step(pipe, step, timestep, kwargs, share=share):
                tick(share)
                return {}

            with torch.no_grad():
                out = runner(
                    **embeds,
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    generator=[torch.Generator("cpu").manual_seed(job.seed) for job in chunk],
                    height=self.side,
                    width=self.side,
                    callback_on_step_end=on_step,
                )
            images += out.images
        return images


def style_score(images: Sequence[Image.Image], artworks: Sequence[Image.Image]) -> float:
    """Mean learned style similarity of the images to the artworks (higher: more of the style)."""
    from styleprompt.evaluation.evaluate import style_vectors

    return _style_score_of(style_vectors(list(images)), style_vectors(list(artworks)))


def _style_score_of(image_vectors, artwork_vectors) -> float:
    """The mean cosine of every (image, artwork) pair of style vectors: `style_similarity` in one matrix."""
    import torch.nn.functional as F

    a = F.normalize(image_vectors.float(), dim=1)
    b = F.normalize(artwork_vectors.float(), dim=1)
    return float((a @ b.T).mean())


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

    from styleprompt.diffusion.models import LoadedModel, load_pipeline, text_copy, unet_copy
    from styleprompt.plumbing.images import list_images, load_image

    say = progress or (lambda message, fraction: None)
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a training run folder (the --output of `styleprompt train`)")
    pairs = run_pairs(run_dir)
    if not pairs:
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
    art_paths = list_images(TrainingRun(run_dir).artworks_folder(config, images))
    if not art_paths:
        raise UserError("the training artworks folder holds no images")
    artworks = [load_image(p) for p in art_paths]
    out = Path(output) if output else TrainingRun(run_dir).pick_folder
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

    painter = _Painter(base, steps)
    say("encoding the prompts", 0.0)
    jobs = [
        _Job(-1, cls, seed, prompt, emb)
        for (cls, seed), prompt, emb in zip(
            prompts,
            [BASELINE_PROMPT.replace("{class}", cls) for cls, _ in prompts],
            painter.encode(base, [BASELINE_PROMPT.replace("{class}", cls) for cls, _ in prompts]),
        )
    ]
    for k, (_, path, lora) in enumerate(pairs):
        if lora is None:  # a token alone: encoded now, painted with the others in shared batches
            jobs += _encoded(painter, text_copy(base), k, path, prompts)
    total = len(prompts) * (len(pairs) + 1)
    log.warning(
        "pick: %d pictures (%d candidates%s and the model without the token, %d each) at %d steps, %d per batch",
        total,
        len(pairs),
        " (token + LoRA pairs)" if any(lora for _, _, lora in pairs) else "",
        len(prompts),
        painter.steps,
        painter.batch,
    )
    bar = tqdm(total=total, desc="pick", unit="image", disable=not show_progress, bar_format=_BAR)
    painted = {"n": 0.0}

    def tick(share: float) -> None:
        painted["n"] += share
        bar.update(share)
        say(f"painting: {painted['n']:.0f} of {total} pictures", painted["n"] / total)

    with _free_threads(base.device):
        try:
            images = painter.paint(jobs, tick)
            # A (token, LoRA) pair: its LoRA in the UNet while its own pictures are encoded and painted.
            # On a UNet of its own when the caller lent the model (it may be shared); pick's own is its own.
            lora_base = None
            for k, (_, path, lora) in enumerate(pairs):
                if lora is not None:
                    if lora_base is None:
                        lora_base = unet_copy(base) if isinstance(model, LoadedModel) else base
                    more, pictures = _paint_pair(painter, lora_base, k, path, lora, prompts, tick)
                    jobs, images = jobs + more, images + pictures
        finally:
            bar.close()
        scores, baseline_fidelity = _score(run_dir, out, pairs, jobs, images, artworks, fidelity, say)
    best = mark_recommendation(scores)
    say("writing the plot", 1.0)
    named = TrainingRun.pick_files(out)
    result = PickResult(
        best, scores, fidelity_kind, baseline_fidelity, named.plot, named.table, named.summary, named.sheet
    )
    plot_tradeoff(result, config.get("token", "") + (" + LoRA" if any(lora for _, _, lora in pairs) else ""))
    _write_tables(result, classes, seeds)
    _write_sheet(result, classes, seeds)
    return result


def _encoded(painter: _Painter, view: Any, owner: int, path: Path, prompts: Sequence[tuple[str, int]]) -> list[_Job]:
    """One candidate's jobs, its prompts encoded by `view` (a fresh text copy: one token name, many
    versions) with its token loaded."""
    from styleprompt.diffusion.generate import load_embeddings

    tokens = load_embeddings(view, [str(path)])
    if not tokens:
        raise UserError(f"{path} holds no token")
    texts = [PICK_PROMPT.replace("{token}", tokens[0]).replace("{class}", cls) for cls, _ in prompts]
    return [
        _Job(owner, cls, seed, text, emb) for (cls, seed), text, emb in zip(prompts, texts, painter.encode(view, texts))
    ]


def _paint_pair(
    painter: _Painter, base: Any, owner: int, path: Path, lora: Path, prompts: Sequence[tuple[str, int]], tick
) -> tuple[list[_Job], list[Image.Image]]:
    """A (token, LoRA) candidate's pictures: the LoRA loaded as `generate --lora` loads it (scale 1,
    the run's own), the prompts encoded through it (a LoRA on the text encoder acts there), its
    pictures painted with it in the UNet, and the LoRA taken off again."""
    from styleprompt.diffusion.lora import load_loras
    from styleprompt.diffusion.models import text_copy
    from styleprompt.plumbing.errors import SettingError

    view = text_copy(base)
    try:
        try:
            load_loras(view, [(str(lora), 1.0)])
        except SettingError as exc:  # named as pick sees it: the run's file, not a --lora flag
            raise UserError(exc.named("the run's LoRA")) from None
        jobs = _encoded(painter, view, owner, path, prompts)
        return jobs, painter.paint(jobs, tick, pipe=view.pipe)
    finally:
        view.pipe.unload_lora_weights()  # diffusers' own: the shared UNet is the base model again


def _score(run_dir: Path, out: Path, pairs, jobs: Sequence[_Job], images, artworks, fidelity, say):
    """Each candidate's CheckpointScore (its pictures saved under out/images), and the reference fidelity."""
    from styleprompt.evaluation.evaluate import style_vectors

    say("scoring", 1.0)
    baseline = [(job.cls, job.seed, img) for job, img in zip(jobs, images) if job.owner < 0]
    baseline_fidelity = fidelity(baseline)
    artwork_vectors = style_vectors(artworks)
    logged = validation_by_step(run_dir)
    scores: list[CheckpointScore] = []
    for k, (step, path, lora) in enumerate(pairs):
        pictures = [(job.cls, job.seed, img) for job, img in zip(jobs, images) if job.owner == k]
        texts = [job.prompt for job in jobs if job.owner == k]
        text = {"embedding": str(path), "step": str(step), **({"lora": str(lora), "lora_scale": "1"} if lora else {})}
        files = [
            str(
                _save(
                    img,
                    TrainingRun.pick_image(out, step, f"{_slug(cls)}-seed{seed}.png"),
                    {"prompt": prompt, "seed": str(seed), **text},
                )
            )
            for (cls, seed, img), prompt in zip(pictures, texts)
        ]
        style = _style_score_of(style_vectors([img for _, _, img in pictures]), artwork_vectors)
        scores.append(
            CheckpointScore(
                step,
                str(path),
                style,
                fidelity(pictures),
                files,
                validation=logged.get(step),
                lora=str(lora) if lora else None,
            )
        )
    return scores, baseline_fidelity


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
    fields = ["step", "file", "lora", "style", "fidelity", "pareto", "combined", "recommended", "val_loss"]
    with atomic_path(result.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        for s in result.scores:
            writer.writerow(
                {
                    "step": s.step,
                    "file": s.path,
                    "lora": s.lora or "",  # the LoRA painted with the token (pivotal tuning); empty: the token alone
                    "style": f"{s.style:.6f}",
                    "fidelity": f"{s.fidelity:.6f}",
                    "pareto": s.pareto,
                    "combined": f"{s.combined:.4f}",
                    "recommended": s is result.recommended,
                    "val_loss": "" if s.validation is None else f"{s.validation:.6f}",
                }
            )
    doc = {
        "recommended": result.recommended.path,
        "recommended_lora": result.recommended.lora,  # paint with both: --embedding FILE --lora THIS
        "recommended_step": result.recommended.step,
        "candidates": "(token, LoRA) pairs of the same step, the LoRA applied at scale 1"
        if any(s.lora for s in result.scores)
        else "tokens",
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

    label_w, pad = (140 if any(s.lora for s in result.scores) else 110), 4
    columns = len(classes) * len(seeds)
    sheet = Image.new("RGB", (label_w + columns * (side + pad), 22 + len(result.scores) * (side + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    for k, (cls, seed) in enumerate((c, s) for c in classes for s in seeds):
        draw.text((label_w + k * (side + pad), 4), f"{cls} (seed {seed})"[:22], fill="black", font=font)
    for r, score in enumerate(result.scores):
        y = 22 + r * (side + pad)
        mark = " *" if score is result.recommended else ""
        with_lora = " + LoRA" if score.lora else ""
        draw.text(
            (4, y + side // 2 - 14), f"step {score.step}{with_lora}{mark}", fill="red" if mark else "black", font=font
        )
        draw.text((4, y + side // 2 + 2), f"S {score.style:.4g} F {score.fidelity:.3g}", fill="#555", font=_font(10))
        for k, path in enumerate(score.images):
            sheet.paste(fit_into(Image.open(path), side), (label_w + k * (side + pad), y))
    with atomic_path(result.sheet) as tmp:
        sheet.save(tmp, format="PNG")


# -- pick --quick: the same loss for each saved embedding of a finished run ----------------------------


@dataclass
class QuickRow:
    step: int
    path: str
    seen: float
    held_out: float | None
    lora: str | None = None  # pivotal tuning: the LoRA of the same step, in the model for this loss


@dataclass
class QuickPick:
    recommended: QuickRow
    rows: list[QuickRow]
    ranked_by: str
    csv: Path
    json: Path
    plot: Path


_PRECISION_OF = {"fp16": "fp16", "bf16": "bf16"}


def quick_pick(
    run: str | Path,
    *,
    model: Any = None,
    images: str | Path | None = None,
    device: str | None = None,
    output: str | Path | None = None,
    show_progress: bool = True,
) -> QuickPick:
    """Rank a run's saved embeddings by the validation loss, painting nothing (`pick --quick`).

    The trainer is rebuilt from the run's config.json (same artworks, held-out one, resolution,
    seed, templates), so each number is the one training logged at that step (up to float
    rounding when the device or thread count differs). Ranked by the held-out artwork's loss
    when the run held one out (it tells style learned from pictures copied), else by the loss
    on the training artworks' fixed crops; the recommendation is where that loss stops falling
    (`plateau_start`).
    """
    from dataclasses import fields

    from styleprompt.diffusion.config import TrainConfig
    from styleprompt.diffusion.models import LoadedModel, load_pipeline, text_copy
    from styleprompt.diffusion.training import StyleTokenTrainer, runs_on_cpu

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a training run folder (the --output of `styleprompt train`)")
    pairs = run_pairs(run_dir)
    if not pairs:
        raise UserError(f"{run_dir} holds no embeddings (embeddings/step-*.safetensors); train with --save-every N")
    config = run_config(run_dir)
    if not config.get("token"):
        raise UserError(f"{run_dir}/config.json names no token; --quick rebuilds the run's validation set from it")
    known = {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in config.items() if k in known}
    settings.update(
        images=str(TrainingRun(run_dir).artworks_folder(config, images)),
        output=str(run_dir),
        resume=None,
        device=device,
        preview_every=0,
        gradient_checkpointing=False,
        validate_every=int(config.get("validate_every") or 0),  # 0 in older runs: nothing was held out
    )
    if model is not None and not isinstance(model, LoadedModel):
        settings["model"] = str(model)
    try:
        cfg = TrainConfig(**settings)
    except TypeError as exc:
        raise UserError(f"{run_dir}/config.json does not describe a training run ({exc}); fix or remove it") from None
    if isinstance(model, LoadedModel):
        loaded = text_copy(model)  # the caller's model keeps its own text encoder
    else:
        precision = _PRECISION_OF.get(cfg.mixed_precision, "fp32")
        if precision == "fp16" and runs_on_cpu(cfg):
            precision = "fp32"
        loaded = load_pipeline(cfg.model, device=device, precision=precision)
    import torch

    mixed_of = {torch.float16: "fp16", torch.bfloat16: "bf16"}
    cfg.mixed_precision = mixed_of.get(loaded.dtype, "no")  # never cast the loaded model
    from contextlib import nullcontext

    from styleprompt.plumbing import cpu_threads

    # On a CPU, the threads free now (one beside other jobs: spinning OpenMP threads cost 6x, cpu_threads).
    trainer = StyleTokenTrainer(cfg, loaded)
    try:
        with cpu_threads.fixed_for_run() if loaded.device.type == "cpu" else nullcontext():
            rows = _score_embeddings(trainer, pairs, config, show_progress)
    finally:
        trainer.finish()  # a pivotal run's LoRA off the model again (a caller's model shares its UNet)
    by_held = all(r.held_out is not None for r in rows)
    ranked_by = "the held-out artwork's validation loss" if by_held else "the validation loss on fixed crops"
    best = plateau_start(rows, [r.held_out if by_held else r.seen for r in rows])  # type: ignore[misc]
    out = Path(output) if output else TrainingRun(run_dir).pick_folder
    result = QuickPick(best, rows, ranked_by, out / "pick-quick.csv", out / "pick-quick.json", out / "pick-quick.png")
    _write_quick(result)
    return result


def _score_embeddings(trainer, pairs, config: dict, show_progress: bool) -> list[QuickRow]:
    """The validation losses of each saved embedding, put into the rebuilt trainer's rows in turn;
    in a pivotal run with the LoRA of the same step put into the trainer's LoRA (the pair training
    validated), or, where a step has none, the LoRA at the identity (the token alone)."""
    import torch
    from tqdm.auto import tqdm

    from styleprompt.diffusion import lora as lora_lib
    from styleprompt.diffusion.formats import read_embedding
    from styleprompt.diffusion.validation import validation_losses

    recorded = config.get("validation_held_out")
    if recorded != trainer.held_out_name:
        log.warning(
            "the run held out %s, this validation set holds out %s (the artworks folder changed?)",
            recorded,
            trainer.held_out_name,
        )
    rows = []
    for step, path, lora in tqdm(pairs, desc="validation loss", unit="embedding", disable=not show_progress):
        vectors = read_embedding(str(path)).parts()
        if len(vectors) != len(trainer.parts) or any(
            v.shape != part.vectors.shape for v, part in zip(vectors, trainer.parts)
        ):
            raise UserError(
                f"{path} does not fit the run's token ({config.get('token')}, {trainer.cfg.vectors} vectors)"
            )
        with torch.no_grad():
            for part, v in zip(trainer.parts, vectors):
                part.vectors.copy_(v.to(part.vectors))
        applied = lora if trainer.lora is not None else None
        if trainer.lora is not None:
            if lora is not None:
                lora_lib.load_file_into(trainer.lora, lora)
            else:
                lora_lib.reset(trainer.lora)
        seen, held = validation_losses(trainer)
        rows.append(QuickRow(step, str(path), seen, held, str(applied) if applied else None))
    return rows


# A checkpoint within this share of the run's whole fall of the minimum counts as the minimum.
PLATEAU = 0.05


def plateau_start(rows: list[QuickRow], losses: list[float]) -> QuickRow:
    """The earliest checkpoint whose loss is within PLATEAU of the run's fall from its minimum.

    Why not the minimum itself: a validation loss falls and then flattens while the token goes on
    growing (and starts to carry the artworks' content), so the strict minimum often lands at an
    arbitrary late step of the plateau; the start of the plateau is the token that is done learning.
    """
    low, high = min(losses), max(losses)
    limit = low + PLATEAU * (high - low)
    return next(row for row, loss in zip(rows, losses) if loss <= limit)


def _write_quick(result: QuickPick) -> None:
    import csv
    import json

    import matplotlib

    from styleprompt.plumbing.files import atomic_path, write_text_atomic

    result.csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(result.csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "file", "lora", "val_loss", "val_heldout", "recommended"])
        for r in result.rows:
            held = "" if r.held_out is None else f"{r.held_out:.6f}"
            writer.writerow([r.step, r.path, r.lora or "", f"{r.seen:.6f}", held, r is result.recommended])
    doc = {
        "recommended": result.recommended.path,
        "recommended_lora": result.recommended.lora,
        "recommended_step": result.recommended.step,
        "ranked_by": result.ranked_by,
        "rule": f"the earliest step within {PLATEAU:.0%} of the run's fall of the lowest validation loss "
        "(the held-out artwork's when there is one)",
        "checkpoints": [vars(r) for r in result.rows],
    }
    write_text_atomic(result.json, json.dumps(doc, indent=2) + "\n")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [r.step for r in result.rows]
    ax.plot(steps, [r.seen for r in result.rows], "o-", ms=4, color="tab:green", label="fixed crops of the artworks")
    if all(r.held_out is not None for r in result.rows):
        ax.plot(steps, [r.held_out for r in result.rows], "s--", ms=4, color="tab:red", label="held-out artwork")
    ax.axvline(result.recommended.step, color="red", lw=1, ls=":", label=f"plateau from step {result.recommended.step}")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation MSE")
    ax.set_title("validation loss of each saved embedding")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(result.plot) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
