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

`BOUNDS` is the one table of every bounded number a user sets, by the library's own setting name:
the library checks against it, the CLI's messages come from those checks, and the app's sliders
and number fields take their ranges from it (`span`). Errors name the setting, not a flag
(`SettingError`): the CLI shows it as `--vectors`, the app as its field's label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from styleprompt.plumbing.errors import SettingError, UserError

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
    """A method's measured memory: a fixed part plus a part per megapixel of output.

    Each method owns its footprint (`styleprompt.evaluation.methods`' `footprint`, measured by
    its bench); the classic ones are defined here because `classic` checks them itself.
    """

    method: str  # the name messages use
    baseline_mib: float  # torch, the networks and the inputs loaded
    tiled_mib_per_mpx: float  # the whole-image tensors that tiling keeps (image, features, output)
    whole_mib_per_mpx: float  # one untiled pass (--tile-size 0, or the untiled style pass)
    measured: str

    def max_pixels(self, tiled: bool = True) -> int:
        per_mpx = self.tiled_mib_per_mpx if tiled else self.whole_mib_per_mpx
        return int((MEMORY_BUDGET_MIB - self.baseline_mib) / per_mpx * 1e6)


# bench/sizes.py: one iteration at 3840x2160 (8.3 Mpx, 32 tiles) peaks at 3010 MiB over a
# 588 MiB baseline; untiled, 1 Mpx already takes about 3 GiB (gatys.AUTO_TILE_PIXELS).
GATYS_FOOTPRINT = Footprint("gatys", 588, 292, 2500, "3010 MiB at 3840x2160 tiled; ~3 GiB at 1 Mpx untiled")
# bench/sizes.py: 2143 MiB at 3840x2160 tiled over 391 MiB; 1.9 GiB untiled at 1920x1080.
ADAIN_FOOTPRINT = Footprint("adain", 391, 211, 750, "2143 MiB at 3840x2160 tiled; 1.9 GiB at 1920x1080 untiled")
# bench/ghiasi: 1314 MiB at 3840x2880 tiled over 339 MiB; 1.1 GiB one pass at 2048x1536.
GHIASI_FOOTPRINT = Footprint("ghiasi", 339, 88, 250, "1314 MiB at 3840x2880 tiled; 1.1 GiB at 2048x1536 in one pass")
# bench/classic_real.py speed children, 2026-12-02 (RSS above a 306-359 MiB baseline).
# WCT with cd-wct: 330 MiB at 1024x768 in one pass; tiles hold less per Mpx than one pass,
# so the one-pass figure bounds both.
WCT_FOOTPRINT = Footprint("wct", 359, 420, 420, "330 MiB at 1024x768 in one pass, tiles bounded by that")
# WCT with the full-width `wct` set: 547 MiB at 512x384 in one pass; tiled, 914 MiB at
# 1024x768 and 2163 MiB at 1600x1200 (1.1 GiB per Mpx): a 4K frame does not fit.
WCT_VGG_FOOTPRINT = Footprint("wct-vgg", 306, 1130, 2780, "2163 MiB at 1600x1200 tiled; 547 MiB at 512x384 in one pass")
# MicroAST: 365 MiB at 1024x768 in one pass (the tiled stages hold less per Mpx).
MICROAST_FOOTPRINT = Footprint("microast", 332, 464, 464, "365 MiB at 1024x768 in one pass, tiles bounded by that")
# By name, for the classic functions' own checks (`check_working_image("gatys", ...)`).
FOOTPRINTS: dict[str, Footprint] = {
    f.method: f
    for f in (
        GATYS_FOOTPRINT,
        ADAIN_FOOTPRINT,
        GHIASI_FOOTPRINT,
        WCT_FOOTPRINT,
        WCT_VGG_FOOTPRINT,
        MICROAST_FOOTPRINT,
    )
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


@dataclass(frozen=True)
class Bound:
    """The accepted range of one setting, why, and the step its values come in (1: any whole number)."""

    low: float
    high: float
    why: str = ""
    multiple: int = 1

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


_SIDE_WHY = f"no method here works below {MIN_SIDE} px, and none holds a side over {MAX_SIDE} px"
_GENERATE_SIDE_WHY = (
    f"the model's attention grows with the square of the pixels; {MAX_GENERATE_SIDE} is 4x SD 1.5's side"
)

# Setting name (the library's argument or config field) -> its bounds. The one table the CLI, the
# library and the app read; a setting whose range the app narrows for a shared server (steps,
# images) takes the smaller of the two there.
BOUNDS: dict[str, Bound] = {
    # training
    "vectors": Bound(1, MAX_VECTORS, "a CLIP prompt holds 75 tokens"),
    "resolution": Bound(
        64,
        MAX_TRAIN_RESOLUTION,
        "every artwork's latents are cached and the UNet trains at this size; 1024 is SDXL's own",
    ),  # and a multiple of the loaded model's VAE factor (8 on SD and SDXL, 4 on micro): `check_multiple`
    # once the model is loaded, by the trainer, for the CLI and the app alike
    "preview_steps": Bound(
        1, MAX_SAMPLING_STEPS, "sampling steps of each preview; --preview-every 0 turns previews off"
    ),
    "seed": Bound(0, MAX_SEED, "64 bits"),
    # generation
    "steps": Bound(1, MAX_SAMPLING_STEPS),  # sampling steps of an image
    "count": Bound(
        1, MAX_COUNT, "images per class; all are held in memory until written, and each is a full sampling run"
    ),
    "guidance": Bound(0.0, 50.0),
    "strength": Bound(0.0, 1.0),
    "style_scale": Bound(0.0, 10.0),
    "width": Bound(32, MAX_GENERATE_SIDE, _GENERATE_SIDE_WHY, multiple=8),
    "height": Bound(32, MAX_GENERATE_SIDE, _GENERATE_SIDE_WHY, multiple=8),
    # style transfer and compare
    "size": Bound(MIN_SIDE, MAX_SIDE, _SIDE_WHY),
    "style_size": Bound(MIN_SIDE, MAX_SIDE, _SIDE_WHY),
    "tile_size": Bound(MIN_TILE, MAX_SIDE, "0 never tiles; smaller tiles are mostly halo"),
    "cell_size": Bound(64, MAX_CELL_SIZE, "the grid holds (methods + 1) x contents cells in one image"),
    "alpha": Bound(0.0, 1.0),
}


def span(setting: str, high: float | None = None) -> tuple[float, float]:
    """(low, high) of a setting, for a slider or number field; `high` narrows it (a server's cap)."""
    bound = BOUNDS[setting]
    return bound.low, bound.high if high is None else min(bound.high, high)


def check_bound(setting: str, value, *, high: float | None = None) -> None:
    """`value` within BOUNDS[setting] (the upper end lowered to `high` where given), else one line."""
    low, top = span(setting, high)
    check_range(setting, value, low, top, BOUNDS[setting].why)


def check_between(setting: str, value: float) -> None:
    """The same bound for a plain fraction or scale, said as "must be between 0 and 1 (got 2)"."""
    bound = BOUNDS[setting]
    if not bound.contains(value):
        raise SettingError(setting, f"{{setting}} must be between {bound.low:g} and {bound.high:g} (got {value})")


def check_multiple(setting: str, value: int, multiple: int | None = None) -> None:
    """A whole number in the steps of `multiple` (a loaded model's own), else of BOUNDS[setting]."""
    step = multiple or BOUNDS[setting].multiple
    if value % step:
        raise SettingError(setting, f"{{setting}} must be a multiple of {step} (got {value})")


def _mpx(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} Mpx"


def check_seed(value: int, setting: str = "seed") -> int:
    """A seed torch can take (0 .. 2**64-1)."""
    bound = BOUNDS["seed"]
    if not isinstance(value, int) or isinstance(value, bool) or not bound.contains(value):
        raise SettingError(
            setting, f"{{setting}} {value} is out of range: use a whole number from 0 to {MAX_SEED} (64 bits)"
        )
    return value


def check_range(setting: str, value, low, high, why: str = "") -> None:
    """`low <= value <= high` (and finite), else one line with the accepted range and the reason.

    `setting` is the library's name for it (`vectors`); a caller that has only a flag may pass the
    flag (`--size`), which every front end then shows as it is.
    """
    bad = value is None or isinstance(value, bool)
    if not bad and isinstance(value, float):
        bad = not math.isfinite(value)
    if bad or not low <= value <= high:
        reason = f" ({why})" if why else ""
        raise SettingError(setting, f"{{setting}} {value} is out of range: use {low} to {high}{reason}")


def check_side_flag(setting: str, value: int | None, *, allow_none: bool = True) -> None:
    """A side length in pixels given on the command line or in a field, before anything is read."""
    if value is None and allow_none:
        return
    bound = BOUNDS["size"]
    check_range(setting, value, bound.low, bound.high, bound.why)


def check_tile_flag(value: int | None, setting: str = "tile_size") -> None:
    """0 (never tile), None (automatic) or a tile of MIN_TILE..MAX_SIDE pixels."""
    if value is None or value == 0:
        return
    bound = BOUNDS["tile_size"]
    check_range(setting, value, bound.low, bound.high, bound.why)


def _largest(limit: int, width: int, height: int, side: str) -> int:
    """The largest long (or short) side an image of these proportions may have within `limit` pixels."""
    long_, short = max(width, height), min(width, height)
    if side == "long":
        return int(math.sqrt(limit * long_ / short))
    return int(math.sqrt(limit * short / long_))


def check_working_image(
    method: str | Footprint,
    what: str,
    original: tuple[int, int],
    scaled: tuple[int, int],
    how: str,
    *,
    side: str = "long",
    tiled: bool = True,
    fix: str = "",
    setting: str | None = None,
) -> None:
    """Refuse a working image that is too thin for the networks or too large for `method`'s memory
    (its Footprint, or the name of a classic one).

    original/scaled: (width, height) as read and after the method's scaling; `how` says what
    scaled it ("{setting} 512"), `side` which side that setting sets (for the largest accepted value);
    `{setting}` in `how` and `fix` is the setting's name, as each front end calls it.
    """

    def refuse(message: str) -> UserError:
        return SettingError(setting, message) if setting else UserError(message)

    ow, oh = original
    sw, sh = scaled
    if min(sw, sh) < MIN_SIDE:
        raise refuse(
            f"{what} is {ow}x{oh}: {how} makes it {sw}x{sh}, thinner than the {MIN_SIDE} px the networks need; "
            "crop it nearer to square or give a larger size"
        )
    footprint = FOOTPRINTS[method] if isinstance(method, str) else method
    limit = footprint.max_pixels(tiled)
    if sw * sh > limit:
        largest = _largest(limit, ow, oh, side)
        advice = fix or f"the largest this image takes is {largest} px"
        untiled = "" if tiled else " untiled"
        raise refuse(
            f"{what} is {ow}x{oh}: {how} makes it {sw}x{sh} ({_mpx(sw * sh)}), more than the {_mpx(limit)} "
            f"{footprint.method}{untiled} holds in {MEMORY_BUDGET_MIB // 1024} GiB ({footprint.measured}); {advice}"
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
    for setting, value in (("width", width), ("height", height)):
        if value is None:
            continue
        check_bound(setting, value)
        if value % multiple:
            raise SettingError(
                setting,
                f"{{setting}} {value} is not a multiple of {multiple}: use {value // multiple * multiple or multiple}",
            )
