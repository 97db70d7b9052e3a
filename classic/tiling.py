"""Overlapping tiles so that a 4K image runs in bounded memory.

Why tiles with a halo: a convolutional network's output at a pixel depends only on the input
within its receptive field. If each tile carries a halo at least that wide around the core it
is responsible for, the core's result is exactly what the whole image would give; stitching
cores is then lossless, and memory is set by the tile, not the image. Cores start on a grid of
`align` pixels (the network's largest pooling stride) so that pooling windows line up with the
whole image's. Where a network's receptive field is wider than the halo we can afford (the
AdaIN decoder with reflection padding), neighbouring tiles overlap and are cross-faded with
linear ramps that sum to one, so no seam shows.

Statistics that must describe the whole image (AdaIN's content mean/std, Gatys' Gram
matrices) are never taken per tile: callers accumulate them over all cores first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

import torch

from styleprompt.plumbing.errors import SettingError

TileSize = Union[int, None, Literal["auto"]]
"""One meaning for every method: "auto" picks by image size, None or 0 one pass, N N-pixel tiles."""


def resolve_tile_size(tile_size: TileSize, auto: Callable[[], Optional[int]]) -> Optional[int]:
    """The tile side in pixels, or None for one pass; `auto()` decides when `tile_size` is "auto"."""
    if tile_size == "auto":
        return auto()
    if tile_size is None or tile_size == 0:
        return None
    if not isinstance(tile_size, int) or tile_size < 0:
        raise SettingError("tile_size", f"{{setting}} must be 0 (one pass) or a number of pixels, got {tile_size!r}")
    return tile_size


@dataclass(frozen=True)
class Tile:
    """One tile: `core` is the part of the image it owns (cores partition the image),
    `window` the input it reads (core + halo, clipped to the image). (y0, y1, x0, x1), end-exclusive."""

    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    starts = list(range(0, length, tile))
    spans = [(s, min(s + tile, length)) for s in starts]
    # A sliver at the end (under a quarter tile) joins its neighbour: fewer, squarer tiles.
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < tile // 4:
        spans[-2:] = [(spans[-2][0], length)]
    return spans


def plan_tiles(height: int, width: int, tile: int, halo: int, align: int = 1) -> list[Tile]:
    """Cores of `tile` pixels on an `align` grid, each with `halo` pixels of context around it."""
    if tile <= 0 or halo < 0 or align <= 0:
        raise ValueError("tile must be positive, halo non-negative, align positive")
    tile = max(align, tile // align * align)
    halo = math.ceil(halo / align) * align
    tiles = []
    for y0, y1 in _spans(height, tile):
        for x0, x1 in _spans(width, tile):
            window = (max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo))
            tiles.append(Tile(core=(y0, y1, x0, x1), window=window))
    return tiles


def _ramp(start: int, stop: int, core0: int, core1: int, length: int, overlap: int) -> torch.Tensor:
    """1-D weights over [start, stop): 1 inside the core, linear cross-fades across each
    `overlap`-wide band centred on a core edge that has a neighbour (none at the image edge)."""
    pos = torch.arange(start, stop, dtype=torch.float32) + 0.5
    w = torch.ones(stop - start)
    if overlap > 0:
        half = overlap / 2
        if core0 > 0:
            w = torch.minimum(w, ((pos - (core0 - half)) / overlap).clamp(0, 1))
        if core1 < length:
            w = torch.minimum(w, (((core1 + half) - pos) / overlap).clamp(0, 1))
    return w


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int,
    halo: int,
    scale: float,
    out_channels: int,
    overlap: int = 0,
    align: int = 1,
    on_tile: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Apply `fn` (input window -> output window, `scale` times the size) tile by tile.

    `x` is [1, C, H, W]; H and W times `scale` must be whole numbers (pad first). With
    overlap > 0 neighbouring outputs are cross-faded over `overlap` input pixels; a halo beyond
    that gives each tile context. Returns [1, out_channels, H*scale, W*scale] on x's device.
    """
    _, _, height, width = x.shape
    out_h, out_w = round(height * scale), round(width * scale)
    if abs(out_h - height * scale) > 1e-6 or abs(out_w - width * scale) > 1e-6:
        raise ValueError(f"{height}x{width} times {scale} is not a whole number of pixels; pad the input first")
    half = math.ceil(overlap / 2 / align) * align
    plan = plan_tiles(height, width, tile, halo + half, align)
    out = torch.zeros(1, out_channels, out_h, out_w, device=x.device, dtype=x.dtype)
    weight_sum = torch.zeros(1, 1, out_h, out_w, device=x.device, dtype=x.dtype) if overlap > 0 else None
    for t in plan:
        wy0, wy1, wx0, wx1 = t.window
        cy0, cy1, cx0, cx1 = t.core
        # The region this tile contributes: its core widened by half the overlap, inside its window.
        by0, by1 = max(wy0, cy0 - half if cy0 > 0 else 0), min(wy1, cy1 + half if cy1 < height else height)
        bx0, bx1 = max(wx0, cx0 - half if cx0 > 0 else 0), min(wx1, cx1 + half if cx1 < width else width)
        result = fn(x[:, :, wy0:wy1, wx0:wx1])
        oy0, oy1 = round((by0 - wy0) * scale), round((by1 - wy0) * scale)
        ox0, ox1 = round((bx0 - wx0) * scale), round((bx1 - wx0) * scale)
        piece = result[:, :, oy0:oy1, ox0:ox1]
        gy0, gx0 = round(by0 * scale), round(bx0 * scale)
        gy1, gx1 = gy0 + piece.shape[2], gx0 + piece.shape[3]
        if weight_sum is None:
            out[:, :, gy0:gy1, gx0:gx1] = piece
        else:
            s = scale
            wy = _ramp(gy0, gy1, round(cy0 * s), round(cy1 * s), out_h, round(overlap * s)).to(x)
            wx = _ramp(gx0, gx1, round(cx0 * s), round(cx1 * s), out_w, round(overlap * s)).to(x)
            w = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, gy0:gy1, gx0:gx1] += piece * w
            weight_sum[:, :, gy0:gy1, gx0:gx1] += w
        del result, piece
        if on_tile is not None:
            on_tile()
    if weight_sum is not None:
        out /= weight_sum.clamp_min(1e-8)
    return out


def tile_count(height: int, width: int, tile: int, halo: int, align: int = 1) -> int:
    return len(plan_tiles(height, width, tile, halo, align))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the bottom/right so H and W divide by `multiple`; returns (padded, (H, W))."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)
