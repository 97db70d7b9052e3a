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
from typing import Any, Sequence

import torch

from styleprompt.diffusion.data import Artwork, CropWindow, LatentCache

# `trainer` below is a `training.Trainer` and a batch its `training.Batch`: not imported,
# because training imports this module (the one arrow between them points this way).
Trainer = Any
Batch = Any

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
    def build(cls, trainer: Trainer, held_out: LatentCache | None) -> ValidationSet:
        generator = torch.Generator().manual_seed((trainer.cfg.seed + _SEED_OFFSET) % 2**64)
        seen = _fixed_batches(trainer, trainer.latents, SEEN_ITEMS, generator, held_out=False)
        held = _fixed_batches(trainer, held_out, HELD_OUT_ITEMS, generator, held_out=True) if held_out else []
        return cls(seen, held)


def _fixed_batches(
    trainer: Trainer, cache: LatentCache, count: int, generator: torch.Generator, held_out: bool
) -> list[Batch]:
    """`count` items cycling through the cache's entries (plain and mirrored artworks), each a fixed
    crop with fixed noise at its own slice of the schedule, in chunks of CHUNK."""
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
        batches.append(
            trainer.batch_of(
                torch.cat([item[0] for item in chunk]),
                [item[3] for item in chunk],
                torch.cat([item[1] for item in chunk]),
                torch.stack([item[2] for item in chunk]),
                [item[4] for item in chunk],
            )
        )
    return batches


@torch.no_grad()
def mean_loss(trainer: Trainer, batches: Sequence[Batch]) -> float | None:
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


def validation_losses(trainer: Trainer) -> tuple[float, float | None]:
    """(loss on the training artworks' fixed crops, loss on the held-out artwork or None)."""
    vset = trainer.validation_set()
    seen = mean_loss(trainer, vset.seen)
    assert seen is not None  # the trainer has at least one artwork
    return seen, mean_loss(trainer, vset.held_out)
