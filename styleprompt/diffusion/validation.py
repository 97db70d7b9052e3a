"""A validation loss for textual inversion: the same MSE as training, on a set that never changes.

Why: the per-step training loss mostly says which random timestep was drawn (a token run on the
micro model plots a moving average that rises from 0.11 to 0.17 while the token learns), so
nobody can tell from it when to stop. kohya's sd-scripts answered the same request with a
deterministic validation loss; this is that recipe:
- fixed crops of the artworks (positions, orientation and the latent draw, chosen once),
- fixed noise, and timesteps spread evenly over the schedule (stratified, not drawn), so an
  early and a late step are measured on exactly the same problems,
- fixed prompts from the same templates training samples,
- a held-out artwork when there are enough of them (`HOLD_OUT_FROM`): the token never trains
  on it, so its loss tells style learned from style copied.

Everything comes from its own generator seeded from the run's seed, built once when the
trainer starts: evaluating it reads no training RNG and writes nothing the optimizer sees,
so a resumed run stays bit-identical to a straight one and two runs log the same numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from styleprompt.diffusion.data import Artwork, CropWindow, LatentCache
from styleprompt.plumbing.errors import UserError

if TYPE_CHECKING:
    from styleprompt.diffusion.training import Batch, StyleTokenTrainer

log = logging.getLogger(__name__)

# Items of the validation set drawn from the training artworks, and from the held-out one.
SEEN_ITEMS = 16
HELD_OUT_ITEMS = 8
# One artwork is held out only from this many on: below it each artwork is a large share of what
# the token learns from (the micro bench trains on 8 pictures, so its tokens are unaffected).
HOLD_OUT_FROM = 10
# Items per UNet call: enough to batch well, small enough for SD 1.5 at 512 px on a modest GPU.
CHUNK = 8
_SEED_OFFSET = 0x5EED_7A11  # keeps the validation draws apart from the training batches' seeds


def split_held_out(artworks: list[Artwork], validate_every: int) -> tuple[list[Artwork], Artwork | None]:
    """(artworks to train on, the held-out one or None): the last by file name, when there are enough.

    The last by name rather than a random one so a user can see which it is (and rename a file
    to choose another); nothing is held out while validation is off.
    """
    if validate_every <= 0 or len(artworks) < HOLD_OUT_FROM:
        return artworks, None
    ordered = sorted(artworks, key=lambda art: art.path.name)
    held = ordered[-1]
    log.warning("holding out %s for the validation loss (training on the other %d)", held.path.name, len(ordered) - 1)
    return [art for art in artworks if art is not held], held


def spread_timesteps(count: int, num_train_timesteps: int) -> torch.Tensor:
    """`count` timesteps at the centres of equal slices of the schedule (e.g. 62, 187, ... of 1000 for 8)."""
    return ((torch.arange(count, dtype=torch.float64) + 0.5) * num_train_timesteps / count).long()


@dataclass
class ValidationSet:
    """The fixed batches: training artworks' crops (`seen`) and the held-out artwork's (`held_out`)."""

    seen: list[Batch]
    held_out: list[Batch]

    @classmethod
    def build(cls, trainer: StyleTokenTrainer, held_out: LatentCache | None) -> ValidationSet:
        generator = torch.Generator().manual_seed((trainer.cfg.seed + _SEED_OFFSET) % 2**64)
        seen = _fixed_batches(trainer, trainer.latents, SEEN_ITEMS, generator, held_out=False)
        held = _fixed_batches(trainer, held_out, HELD_OUT_ITEMS, generator, held_out=True) if held_out else []
        return cls(seen, held)


def _fixed_batches(
    trainer: StyleTokenTrainer, cache: LatentCache, count: int, generator: torch.Generator, held_out: bool
) -> list[Batch]:
    """`count` items cycling through the cache's entries (plain and mirrored artworks), each a fixed
    crop with fixed noise at its own slice of the schedule, in chunks of CHUNK."""
    from styleprompt.diffusion.training import Batch, SdxlConditioning

    steps = spread_timesteps(count, int(trainer.noise_scheduler.config.num_train_timesteps))
    # Interleave the timesteps so every chunk spans the schedule, not just one end of it.
    order = torch.randperm(count, generator=generator)
    items = []
    for k in range(count):
        entry = k % len(cache)
        mean, std = cache.means[entry], cache.stds[entry]
        h, w = mean.shape[-2:]
        top = int(torch.randint(h - cache.crop + 1, (1,), generator=generator))
        left = int(torch.randint(w - cache.crop + 1, (1,), generator=generator))
        window = (..., slice(top, top + cache.crop), slice(left, left + cache.crop))
        eps = torch.randn(mean[window].shape, generator=generator).to(mean.device)
        latent = mean[window] + std[window] * eps
        noise = torch.randn(latent.shape, generator=generator)
        prompt = trainer.sampler.sample(generator, trainer.token_text, cache.captions[entry])
        # A held-out artwork's SDXL size conditioning uses a training artwork's size slot: the
        # crop is what matters, and the held-out artwork has no slot of its own.
        size_entry = entry if not held_out else 0
        items.append((latent, noise, steps[int(order[k])], prompt, CropWindow(size_entry, top, left)))
    batches = []
    for start in range(0, count, CHUNK):
        chunk = items[start : start + CHUNK]
        ids = trainer.prompt_ids_of([item[3] for item in chunk])
        windows = [item[4] for item in chunk]
        sdxl = SdxlConditioning(ids[1], trainer._time_ids(windows)) if trainer.is_sdxl else None
        batches.append(
            Batch(
                torch.cat([item[0] for item in chunk]),
                ids[0],
                torch.cat([item[1] for item in chunk]),
                torch.stack([item[2] for item in chunk]),
                windows,
                sdxl,
            )
        )
    return batches


@torch.no_grad()
def mean_loss(trainer: StyleTokenTrainer, batches: Sequence[Batch]) -> float | None:
    """The training loss's MSE over every item of `batches` (None for none), in eval mode."""
    if not batches:
        return None
    unet = trainer.pipe.unet
    was_training = unet.training
    unet.eval()
    try:
        total, items = 0.0, 0
        for batch in batches:
            size = int(batch.latents.shape[0])
            total += float(trainer.loss_on(batch)) * size
            items += size
    finally:
        unet.train(was_training)
    return total / items


def validation_losses(trainer: StyleTokenTrainer) -> tuple[float, float | None]:
    """(loss on the training artworks' fixed crops, loss on the held-out artwork or None)."""
    vset = trainer.validation_set()
    seen = mean_loss(trainer, vset.seen)
    assert seen is not None  # the trainer has at least one artwork
    return seen, mean_loss(trainer, vset.held_out)


# -- pick --quick: the same loss for each saved embedding of a finished run ----------------------------


@dataclass
class QuickRow:
    step: int
    path: str
    seen: float
    held_out: float | None


@dataclass
class QuickPick:
    recommended: QuickRow
    rows: list[QuickRow]
    ranked_by: str
    csv: Path
    json: Path
    plot: Path


_PRECISION_OF = {"fp16": "fp16", "bf16": "bf16"}
_MIXED_OF = {torch.float16: "fp16", torch.bfloat16: "bf16"}


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
    from styleprompt.evaluation.pick import _artworks_folder, run_config, run_embeddings

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a training run folder (the --output of `styleprompt train`)")
    checkpoints = run_embeddings(run_dir)
    if not checkpoints:
        raise UserError(f"{run_dir} holds no embeddings (embeddings/step-*.safetensors); train with --save-every N")
    config = run_config(run_dir)
    if not config.get("token"):
        raise UserError(f"{run_dir}/config.json names no token; --quick rebuilds the run's validation set from it")
    known = {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in config.items() if k in known}
    settings.update(
        images=str(_artworks_folder(run_dir, config, images)),
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
    cfg.mixed_precision = _MIXED_OF.get(loaded.dtype, "no")  # never cast the loaded model
    from contextlib import nullcontext

    from styleprompt.plumbing import cpu_threads

    # On a CPU, the threads free now (one beside other jobs: spinning OpenMP threads cost 6x, cpu_threads).
    with cpu_threads.fixed_for_run() if loaded.device.type == "cpu" else nullcontext():
        rows = _score_embeddings(StyleTokenTrainer(cfg, loaded), checkpoints, config, show_progress)
    by_held = all(r.held_out is not None for r in rows)
    ranked_by = "the held-out artwork's validation loss" if by_held else "the validation loss on fixed crops"
    best = plateau_start(rows, [r.held_out if by_held else r.seen for r in rows])  # type: ignore[misc]
    out = Path(output) if output else run_dir / "pick"
    result = QuickPick(best, rows, ranked_by, out / "pick-quick.csv", out / "pick-quick.json", out / "pick-quick.png")
    _write_quick(result)
    return result


def _score_embeddings(trainer: StyleTokenTrainer, checkpoints, config: dict, show_progress: bool) -> list[QuickRow]:
    """The validation losses of each saved embedding, put into the rebuilt trainer's rows in turn."""
    from tqdm.auto import tqdm

    from styleprompt.diffusion.formats import read_embedding

    recorded = config.get("validation_held_out")
    if recorded != trainer.held_out_name:
        log.warning(
            "the run held out %s, this validation set holds out %s (the artworks folder changed?)",
            recorded,
            trainer.held_out_name,
        )
    rows = []
    for step, path in tqdm(checkpoints, desc="validation loss", unit="embedding", disable=not show_progress):
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
        seen, held = validation_losses(trainer)
        rows.append(QuickRow(step, str(path), seen, held))
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
        writer.writerow(["step", "file", "val_loss", "val_heldout", "recommended"])
        for r in result.rows:
            held = "" if r.held_out is None else f"{r.held_out:.6f}"
            writer.writerow([r.step, r.path, f"{r.seen:.6f}", held, r is result.recommended])
    doc = {
        "recommended": result.recommended.path,
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
