"""The largest (and smallest) sizes every method accepts, with the reason for each, in one place.

Why one module: a size flag (`--size 100000`), or an image whose proportions blow up when it is
scaled (a 1x20000 style scaled to a 512-px short side is 512x10240000), can ask for more memory
than any machine has; the process then grows until the OOM killer ends it, with no message.
Every entry point (the commands and the app's fields) checks against these numbers before any
network is loaded, and a request that is too large fails in one line that says the largest
accepted size and why. The bounds are derived from measurements (docs/benchmarks.md), not
guessed, so they move when the methods' memory does.

`classic` is the package both `classic` and `styleprompt` import, so the diffusion-side bounds
(training resolution, image size, vectors, count) live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from styleprompt.plumbing.errors import UserError

# What one request may use: the memory of a modest laptop, and under the 8 GiB the project's
# acceptance runs are held to (docs/benchmarks.md). The robustness tests run the size cases
# under a 6 GB address-space limit.
MEMORY_BUDGET_MIB = 6144

# No side of any working image below this: VGG-19 halves the image four times before relu5_1
# (Gatys), AdaIN's decoder reflection-pads its 1/8-size features by 1, Ghiasi's 9x9 convolution
# reflection-pads by 4. Measured: a 10-px-wide content fails in all three, 16 px works in all.
MIN_SIDE = 16

# No side of any working image above this (a flag check, before any file is read). 4x a 4K
# frame's long side; the per-method pixel budgets below are the finer bound.
MAX_SIDE = 16384

# Smallest explicit tile: the tiles' halo (the receptive radius, up to ~200 px at relu5_1)
# would otherwise be most of every window.
MIN_TILE = 64


@dataclass(frozen=True)
class Footprint:
    """A classic method's measured memory: a fixed part plus a part per megapixel of output."""

    baseline_mib: float  # torch, the networks and the inputs loaded
    tiled_mib_per_mpx: float  # the whole-image tensors that tiling keeps (image, features, output)
    whole_mib_per_mpx: float  # one untiled pass (--tile-size 0, or the untiled style pass)
    measured: str

    def max_pixels(self, tiled: bool = True) -> int:
        per_mpx = self.tiled_mib_per_mpx if tiled else self.whole_mib_per_mpx
        return int((MEMORY_BUDGET_MIB - self.baseline_mib) / per_mpx * 1e6)


FOOTPRINTS: dict[str, Footprint] = {
    # bench/sizes.py: one iteration at 3840x2160 (8.3 Mpx, 32 tiles) peaks at 3010 MiB over a
    # 588 MiB baseline; untiled, 1 Mpx already takes about 3 GiB (gatys.AUTO_TILE_PIXELS).
    "gatys": Footprint(588, 292, 2500, "3010 MiB at 3840x2160 tiled; ~3 GiB at 1 Mpx untiled"),
    # bench/sizes.py: 2143 MiB at 3840x2160 tiled over 391 MiB; 1.9 GiB untiled at 1920x1080.
    "adain": Footprint(391, 211, 750, "2143 MiB at 3840x2160 tiled; 1.9 GiB at 1920x1080 untiled"),
    # bench/ghiasi: 1314 MiB at 3840x2880 tiled over 339 MiB; 1.1 GiB one pass at 2048x1536.
    "ghiasi": Footprint(339, 88, 250, "1314 MiB at 3840x2880 tiled; 1.1 GiB at 2048x1536 in one pass"),
    # bench/classic_real.py speed children, 2026-12-02 (RSS above a 306-359 MiB baseline).
    # WCT with cd-wct: 330 MiB at 1024x768 in one pass; tiles hold less per Mpx than one pass,
    # so the one-pass figure bounds both.
    "wct": Footprint(359, 420, 420, "330 MiB at 1024x768 in one pass, tiles bounded by that"),
    # WCT with the full-width `wct` set: 547 MiB at 512x384 in one pass; tiled, 914 MiB at
    # 1024x768 and 2163 MiB at 1600x1200 (1.1 GiB per Mpx): a 4K frame does not fit.
    "wct-vgg": Footprint(306, 1130, 2780, "2163 MiB at 1600x1200 tiled; 547 MiB at 512x384 in one pass"),
    # MicroAST: 365 MiB at 1024x768 in one pass (the tiled stages hold less per Mpx).
    "microast": Footprint(332, 464, 464, "365 MiB at 1024x768 in one pass, tiles bounded by that"),
}

# The diffusion side. A CLIP prompt holds 77 tokens, two of them start/end: a token of more
# vectors cannot fit in any prompt (the rest would be cut off silently).
MAX_VECTORS = 75
# Images per class in one generate run, all held in memory until written (and each a full
# sampling run: 100 at 25 steps is hours on a CPU).
MAX_COUNT = 100
# Generated images: SD's attention grows with the square of the latent's pixels; 2048 px is 4x
# SD 1.5's native side and 2x SDXL's. Multiples of 8 (the VAE's downscaling).
MAX_GENERATE_SIDE = 2048
# Training: the latents of every artwork are cached and the UNet runs forward and backward at
# this size; 1024 is SDXL's native size (2x SD 1.5's).
MAX_TRAIN_RESOLUTION = 1024
# compare's grid: (methods + 1) x contents cells of this many pixels, in one image.
MAX_CELL_SIZE = 1024
# Sampling steps of a preview or an image (diffusers' schedulers go to 1000 timesteps).
MAX_SAMPLING_STEPS = 1000
# Seeds: torch.Generator.manual_seed takes 64 bits.
MAX_SEED = 2**64 - 1


def _mpx(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} Mpx"


def check_seed(value: int, flag: str = "--seed") -> int:
    """A seed torch can take (0 .. 2**64-1)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise UserError(f"{flag} {value} is out of range: use a whole number from 0 to {MAX_SEED} (64 bits)")
    return value


def check_range(flag: str, value, low, high, why: str = "") -> None:
    """`low <= value <= high` (and finite), else one line with the accepted range and the reason."""
    bad = value is None or isinstance(value, bool)
    if not bad and isinstance(value, float):
        bad = not math.isfinite(value)
    if bad or not low <= value <= high:
        reason = f" ({why})" if why else ""
        raise UserError(f"{flag} {value} is out of range: use {low} to {high}{reason}")


def check_side_flag(flag: str, value: int | None, *, allow_none: bool = True) -> None:
    """A side length in pixels given on the command line or in a field, before anything is read."""
    if value is None and allow_none:
        return
    check_range(
        flag,
        value,
        MIN_SIDE,
        MAX_SIDE,
        f"no method here works below {MIN_SIDE} px, and none holds a side over {MAX_SIDE} px",
    )


def check_tile_flag(value: int | None, flag: str = "--tile-size") -> None:
    """0 (never tile), None (automatic) or a tile of MIN_TILE..MAX_SIDE pixels."""
    if value is None or value == 0:
        return
    check_range(flag, value, MIN_TILE, MAX_SIDE, "0 never tiles; smaller tiles are mostly halo")


def _largest(limit: int, width: int, height: int, side: str) -> int:
    """The largest long (or short) side an image of these proportions may have within `limit` pixels."""
    long_, short = max(width, height), min(width, height)
    if side == "long":
        return int(math.sqrt(limit * long_ / short))
    return int(math.sqrt(limit * short / long_))


def check_working_image(
    method: str,
    what: str,
    original: tuple[int, int],
    scaled: tuple[int, int],
    how: str,
    *,
    side: str = "long",
    tiled: bool = True,
    fix: str = "",
) -> None:
    """Refuse a working image that is too thin for the networks or too large for `method`'s memory.

    original/scaled: (width, height) as read and after the method's scaling; `how` says what
    scaled it ("--size 512"), `side` which side that flag sets (for the largest accepted value).
    """
    ow, oh = original
    sw, sh = scaled
    if min(sw, sh) < MIN_SIDE:
        raise UserError(
            f"{what} is {ow}x{oh}: {how} makes it {sw}x{sh}, thinner than the {MIN_SIDE} px the networks need; "
            "crop it nearer to square or give a larger size"
        )
    footprint = FOOTPRINTS[method]
    limit = footprint.max_pixels(tiled)
    if sw * sh > limit:
        largest = _largest(limit, ow, oh, side)
        advice = fix or f"the largest this image takes is {largest} px"
        untiled = "" if tiled else " untiled"
        raise UserError(
            f"{what} is {ow}x{oh}: {how} makes it {sw}x{sh} ({_mpx(sw * sh)}), more than the {_mpx(limit)} "
            f"{method}{untiled} holds in {MEMORY_BUDGET_MIB // 1024} GiB ({footprint.measured}); {advice}"
        )


def scaled_long_side(size: tuple[int, int], long_side: int | None) -> tuple[int, int]:
    """(w, h) after scaling the long side to `long_side` (None: unchanged), as `resize_long_side` does."""
    w, h = size
    if long_side is None:
        return w, h
    scale = long_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def scaled_short_side(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(w, h) after scaling the short side to `short_side`, as `resize_short_side` does."""
    w, h = size
    scale = short_side / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def check_generate_size(width: int | None, height: int | None, multiple: int = 8) -> None:
    """Width and height of a generated image: 32 .. MAX_GENERATE_SIDE, multiples of 8."""
    for flag, value in (("--width", width), ("--height", height)):
        if value is None:
            continue
        check_range(
            flag,
            value,
            32,
            MAX_GENERATE_SIDE,
            f"the model's attention grows with the square of the pixels; {MAX_GENERATE_SIDE} is 4x SD 1.5's side",
        )
        if value % multiple:
            raise UserError(
                f"{flag} {value} is not a multiple of {multiple}: use {value // multiple * multiple or multiple}"
            )
