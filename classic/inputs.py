"""Checks and conversions every method's `stylize` applies to its inputs, in one place.

Why shared: Gatys, AdaIN and Ghiasi take the same arguments (several styles with blend
weights, a two-region mask, a target size), and a user who gets them wrong should read the
same one-line error whichever method they picked.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from PIL import Image

from classic import limits
from classic.tiling import TileSize
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.images import pil_to_tensor, resize_long_side

# A mask may differ from the content's proportions by this much (rounding of resized files).
MASK_ASPECT_TOLERANCE = 0.02


def style_blend_weights(n_styles: int, weights: Sequence[float] | None) -> list[float]:
    """Weights normalised to sum to 1; equal weights when none are given."""
    if n_styles < 1:
        raise UserError("give at least one style image")
    if weights is None:
        return [1.0 / n_styles] * n_styles
    weights = [float(w) for w in weights]
    if len(weights) != n_styles:
        raise UserError(f"{len(weights)} style weights for {n_styles} style images: give one weight per --style")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise UserError(f"style weights must be finite and not negative, got {weights}")
    total = sum(weights)
    if total <= 0:
        raise UserError(f"style weights {weights} do not sum to a positive number: give at least one weight above 0")
    return [w / total for w in weights]


def parse_weights(text: str) -> list[float]:
    """'0.7,0.3' -> [0.7, 0.3], with a one-line error for anything else."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"cannot read style weights {text!r}: give numbers separated by commas, like 0.7,0.3") from None


def check_styles(n_styles: int, weights: Sequence[float] | None, mask: Image.Image | None) -> None:
    """A mask splits the image between exactly two styles and already says where each goes."""
    if mask is None:
        return
    if n_styles != 2:
        raise UserError(f"a mask needs exactly 2 style images (white region: first, black: second), got {n_styles}")
    if weights is not None:
        raise SettingError(
            "style_weights", "{setting} and --mask cannot be combined: the mask already says where each style goes"
        )


def check_mask_fits(mask: Image.Image, content: Image.Image) -> None:
    """Refuse a mask whose proportions differ from the content's (it would be stretched)."""
    mw, mh = mask.size
    cw, ch = content.size
    if abs((mw / mh) / (cw / ch) - 1) > MASK_ASPECT_TOLERANCE:
        raise UserError(
            f"the mask is {mw}x{mh} but the content image is {cw}x{ch}: give a mask with the content's proportions "
            "(transfer --fit-mask stretches it to the content)"
        )


def mask_tensor(mask: Image.Image, height: int, width: int) -> torch.Tensor:
    """[1, 1, H, W] in [0, 1]: 1 where the first style goes (white, >= 0.5), 0 for the second."""
    grey = mask.convert("L").resize((width, height), Image.Resampling.BILINEAR)
    return (pil_to_tensor(grey.convert("RGB"))[:, :1] >= 0.5).float()


def fit_content(content: Image.Image, size: int | None, method: str, tile_size: TileSize = "auto") -> Image.Image:
    """The content at `size` pixels on its long side (None: as it is), refused first when the
    result is too thin for the networks or too large for `method`'s memory (classic.limits).

    tile_size (`classic.tiling.TileSize`): one pass (None, 0) has the smaller, untiled budget;
    an explicit tile runs untiled inside, so it may not exceed that budget either.
    """
    if (
        tile_size != "auto"
        and tile_size is not None
        and (isinstance(tile_size, bool) or not isinstance(tile_size, int))
    ):
        raise SettingError("tile_size", f"{{setting}} must be 0 (one pass) or a number of pixels, got {tile_size!r}")
    explicit = tile_size if isinstance(tile_size, int) and tile_size > 0 else None
    limits.check_side_flag("size", size)
    limits.check_tile_flag(tile_size if isinstance(tile_size, int) else None)
    scaled = limits.scaled_long_side(content.size, size)
    how = f"{{setting}} {size}" if size is not None else "its own size"
    limits.check_working_image(
        method,
        "the content image",
        content.size,
        scaled,
        how,
        tiled=tile_size == "auto" or explicit is not None,
        setting="size",
    )
    if explicit:
        tile_px = min(explicit, scaled[0]) * min(explicit, scaled[1])
        limit = limits.FOOTPRINTS[method].max_pixels(tiled=False)
        if tile_px > limit:
            largest = int(math.sqrt(limit))
            raise SettingError(
                "tile_size",
                f"{{setting}} {explicit} is too large for {method}: one tile runs untiled, and the most "
                f"it holds in {limits.MEMORY_BUDGET_MIB // 1024} GiB is about {largest}x{largest} px; use "
                f"{{setting}} {largest // 64 * 64} or less",
            )
    return resize_long_side(content, size)


def style_label(index: int, count: int) -> str:
    """How a message names style image `index` (0-based) of `count`."""
    return "the style image" if count == 1 else f"style image {index + 1} (of {count})"


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size` (torchvision's Resize(int) convention)."""
    scale = size / min(img.size)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    return img if (w, h) == img.size else img.resize((w, h), Image.Resampling.LANCZOS)


def check_encoded_style_sizes(footprint: str, styles: list[Image.Image], style_size: int) -> None:
    """Each style is encoded whole at `style_size` px on its short side: refuse what cannot be.

    Shared by the feed-forward methods that encode their styles untiled (AdaIN, WCT, MicroAST);
    `footprint` names the method's memory figure in `classic.limits`."""
    limits.check_side_flag("style_size", style_size, allow_none=False)
    for i, style in enumerate(styles):
        limits.check_working_image(
            footprint,
            style_label(i, len(styles)),
            style.size,
            limits.scaled_short_side(style.size, style_size),
            f"{{setting}} {style_size} (its short side)",
            side="short",
            tiled=False,
            fix="crop it nearer to square or lower {setting}",
            setting="style_size",
        )
