"""A small procedural world where the truth is known: pictures of ordinary things, painted in a style.

Why it exists: no Stable Diffusion weights can reach this project's machines, so the claim "a
style token learns a style" is checked on a world we make ourselves. Every picture is drawn with
Pillow from a seeded generator (random layout, size, colours, pose and background, so no two are
alike), then painted by the real Ghiasi et al. network (`classic.ghiasi`, real weights) with any
style image. A plain rendering is a style too ("photo"). The micro text-to-image model
(`styleprompt.micro`) is trained on this world, and its judges are the Ghiasi style predictor and a
class classifier trained on renderings only, never on a diffusion model's output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from styleprompt.plumbing.errors import UserError

# Pictures are drawn at DRAW_SIZE (smooth edges), painted at PAINT_SIZE (the Ghiasi network's
# strokes have a fixed pixel scale; this size keeps them readable after the downscale), and kept
# at the model's resolution.
DRAW_SIZE = 256
PAINT_SIZE = 128
WORLD_SIZE = 64

PLAIN_STYLE = "photo"  # the style word of an unpainted rendering


@dataclass(frozen=True)
class Picture:
    image: Image.Image
    cls: str
    seed: int


Rgb = tuple[int, int, int]


class _Canvas:
    """A seeded drawing context: colours, jitter and a layer per object (for rotation)."""

    def __init__(self, rng: np.random.Generator, size: int = DRAW_SIZE):
        self.rng, self.size = rng, size

    def uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def colour(self, lo: int = 0, hi: int = 256) -> Rgb:
        c = self.rng.integers(lo, hi, size=3)
        return (int(c[0]), int(c[1]), int(c[2]))

    def hue(self, h: float, s: float = 0.7, v: float = 0.8) -> Rgb:
        """A colour from hue/saturation/value, with a little jitter."""
        h = (h + self.uniform(-0.04, 0.04)) % 1.0
        s = min(1.0, max(0.0, s + self.uniform(-0.15, 0.15)))
        v = min(1.0, max(0.0, v + self.uniform(-0.15, 0.15)))
        i = int(h * 6) % 6
        f = h * 6 - int(h * 6)
        p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
        return (int(r * 255), int(g * 255), int(b * 255))


def _background(c: _Canvas, outdoor: bool) -> Image.Image:
    """A sky-and-ground or a plain gradient backdrop in random colours."""
    s = c.size
    img = Image.new("RGB", (s, s))
    draw = ImageDraw.Draw(img)
    top = c.hue(c.uniform(0.5, 0.7), 0.5, 0.9) if outdoor else c.colour(60, 240)
    bottom = c.hue(c.uniform(0.5, 0.7), 0.3, 1.0) if outdoor else c.colour(40, 220)
    for y in range(s):
        t = y / (s - 1)
        draw.line([(0, y), (s, y)], fill=tuple(int(a * (1 - t) + b * t) for a, b in zip(top, bottom)))
    return img


def _horizon(c: _Canvas, img: Image.Image, kind: str) -> int:
    """Ground or water along the bottom; returns the horizon's y."""
    s = c.size
    y = int(s * c.uniform(0.62, 0.8))
    colour = c.hue(c.uniform(0.55, 0.65), 0.7, 0.6) if kind == "water" else c.hue(c.uniform(0.2, 0.38), 0.6, 0.55)
    ImageDraw.Draw(img).rectangle([0, y, s, s], fill=colour)
    return y


def _paste_rotated(img: Image.Image, layer: Image.Image, angle: float) -> None:
    """Paste an RGBA layer turned by `angle` degrees; its own alpha is the mask (rotated once)."""
    turned = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(img.width / 2, img.height / 2))
    img.paste(turned, (0, 0), turned)


def _layer(c: _Canvas) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    layer = Image.new("RGBA", (c.size, c.size), (0, 0, 0, 0))
    return layer, ImageDraw.Draw(layer)


def draw_lighthouse(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    ground = _horizon(c, img, "water")
    s = c.size
    x = s * c.uniform(0.3, 0.7)
    h = s * c.uniform(0.45, 0.62)
    w_base, w_top = s * c.uniform(0.12, 0.17), s * c.uniform(0.07, 0.1)
    top = ground - h
    draw = ImageDraw.Draw(img)
    draw.polygon(
        [(x - w_base, ground + 4), (x + w_base, ground + 4), (x + w_top, top), (x - w_top, top)], fill=(245, 245, 240)
    )
    stripe = c.hue(c.uniform(-0.03, 0.03), 0.85, 0.8)
    for k in range(1, 4, 2):
        y0, y1 = ground - h * k / 4, ground - h * (k + 1) / 4
        f0, f1 = (ground - y0) / h, (ground - y1) / h
        wa, wb = w_base + (w_top - w_base) * f0, w_base + (w_top - w_base) * f1
        draw.polygon([(x - wa, y0), (x + wa, y0), (x + wb, y1), (x - wb, y1)], fill=stripe)
    draw.rectangle([x - w_top * 0.9, top - s * 0.07, x + w_top * 0.9, top], fill=(255, 230, 90))
    draw.polygon(
        [(x - w_top * 1.3, top - s * 0.07), (x + w_top * 1.3, top - s * 0.07), (x, top - s * 0.14)], fill=stripe
    )
    side = 1 if c.uniform(0, 1) < 0.5 else -1
    draw.polygon(
        [(x, top - s * 0.035), (x + side * s * 0.45, top - s * 0.1), (x + side * s * 0.45, top + s * 0.03)],
        fill=(255, 250, 180),
    )
    return img


def draw_house(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    ground = _horizon(c, img, "grass")
    s = c.size
    w, h = s * c.uniform(0.35, 0.55), s * c.uniform(0.22, 0.32)
    x = s * c.uniform(0.15, 0.85 - w / s)
    draw = ImageDraw.Draw(img)
    wall, roof = c.colour(120, 250), c.hue(c.uniform(0.0, 0.08), 0.7, 0.55)
    draw.rectangle([x, ground - h, x + w, ground + 2], fill=wall)
    draw.polygon(
        [(x - w * 0.08, ground - h), (x + w * 1.08, ground - h), (x + w / 2, ground - h - w * c.uniform(0.35, 0.55))],
        fill=roof,
    )
    door = c.hue(c.uniform(0.05, 0.12), 0.6, 0.35)
    dx = x + w * c.uniform(0.4, 0.55)
    draw.rectangle([dx, ground - h * 0.55, dx + w * 0.14, ground + 2], fill=door)
    glass = c.hue(0.58, 0.4, 0.95)
    for fx in (0.12, 0.72):
        draw.rectangle(
            [x + w * fx, ground - h * 0.8, x + w * (fx + 0.16), ground - h * 0.5], fill=glass, outline=(40, 40, 40)
        )
    return img


def draw_city(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    s = c.size
    ground = int(s * c.uniform(0.82, 0.92))
    draw = ImageDraw.Draw(img)
    x = -c.uniform(0, s * 0.05)
    night = c.uniform(0, 1) < 0.4
    if night:
        draw.rectangle([0, 0, s, ground], fill=c.hue(0.65, 0.6, 0.2))
    while x < s:
        w = s * c.uniform(0.09, 0.18)
        h = s * c.uniform(0.25, 0.7)
        body = c.colour(20, 90) if night else c.colour(70, 200)
        draw.rectangle([x, ground - h, x + w, ground], fill=body)
        lit = (255, 230, 120) if night else c.hue(0.58, 0.3, 0.9)
        for wy in np.arange(ground - h + 6, ground - 6, 12):
            for wx in np.arange(x + 4, x + w - 6, 9):
                if c.uniform(0, 1) < 0.7:
                    draw.rectangle([wx, wy, wx + 4, wy + 5], fill=lit)
        x += w + s * c.uniform(0.0, 0.03)
    draw.rectangle([0, ground, s, s], fill=c.colour(30, 90))
    return img


def draw_tree(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    ground = _horizon(c, img, "grass")
    s = c.size
    x = s * c.uniform(0.3, 0.7)
    trunk_h, trunk_w = s * c.uniform(0.2, 0.3), s * c.uniform(0.05, 0.08)
    draw = ImageDraw.Draw(img)
    draw.rectangle([x - trunk_w / 2, ground - trunk_h, x + trunk_w / 2, ground + 3], fill=c.hue(0.07, 0.6, 0.35))
    leaves = c.hue(c.uniform(0.22, 0.4), 0.7, 0.5)
    r = s * c.uniform(0.14, 0.22)
    cy = ground - trunk_h - r * 0.6
    for _ in range(7):
        ox, oy = c.uniform(-r, r) * 0.8, c.uniform(-r, r) * 0.6
        rr = r * c.uniform(0.6, 0.9)
        draw.ellipse([x + ox - rr, cy + oy - rr, x + ox + rr, cy + oy + rr], fill=leaves)
    return img


def draw_boat(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    sea = _horizon(c, img, "water")
    s = c.size
    layer, draw = _layer(c)
    x, w = s * c.uniform(0.3, 0.7), s * c.uniform(0.35, 0.5)
    y = sea + s * c.uniform(0.02, 0.08)
    hull = c.colour(30, 200)
    draw.polygon(
        [(x - w / 2, y - s * 0.08), (x + w / 2, y - s * 0.08), (x + w * 0.35, y), (x - w * 0.35, y)], fill=hull + (255,)
    )
    mast_h = s * c.uniform(0.3, 0.45)
    draw.rectangle([x - 2, y - s * 0.08 - mast_h, x + 2, y - s * 0.08], fill=(80, 60, 40, 255))
    sail = c.colour(180, 256)
    draw.polygon(
        [(x + 4, y - s * 0.08 - mast_h), (x + 4, y - s * 0.1), (x + w * 0.42, y - s * 0.1)], fill=sail + (255,)
    )
    draw.polygon(
        [(x - 4, y - s * 0.08 - mast_h * 0.8), (x - 4, y - s * 0.1), (x - w * 0.3, y - s * 0.1)], fill=sail + (255,)
    )
    _paste_rotated(img, layer, c.uniform(-8, 8))
    return img


def draw_mountain(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    s = c.size
    draw = ImageDraw.Draw(img)
    base = s * c.uniform(0.8, 0.95)
    for k in range(int(c.uniform(1, 3.99))):
        peak_x, peak_y = s * c.uniform(0.2, 0.8), s * c.uniform(0.15, 0.4) + k * s * 0.08
        half = s * c.uniform(0.35, 0.6)
        rock = c.hue(c.uniform(0.55, 0.75), 0.25, 0.45 + 0.1 * k)
        draw.polygon([(peak_x - half, base), (peak_x, peak_y), (peak_x + half, base)], fill=rock)
        snow = peak_y + (base - peak_y) * 0.25
        t = (snow - peak_y) / (base - peak_y)
        draw.polygon([(peak_x - half * t, snow), (peak_x, peak_y), (peak_x + half * t, snow)], fill=(250, 250, 255))
    draw.rectangle([0, base, s, s], fill=c.hue(0.3, 0.5, 0.45))
    return img


def draw_fish(c: _Canvas) -> Image.Image:
    s = c.size
    img = Image.new("RGB", (s, s), c.hue(c.uniform(0.5, 0.62), 0.7, 0.6))
    draw = ImageDraw.Draw(img)
    for _ in range(6):  # bubbles
        bx, by, br = c.uniform(0, s), c.uniform(0, s), c.uniform(2, 6)
        draw.ellipse([bx - br, by - br, bx + br, by + br], outline=(230, 240, 255), width=2)
    layer, d = _layer(c)
    x, y = s * c.uniform(0.35, 0.6), s * c.uniform(0.35, 0.65)
    L, H = s * c.uniform(0.3, 0.45), s * c.uniform(0.14, 0.22)
    body = c.colour(60, 256)
    flip = -1 if c.uniform(0, 1) < 0.5 else 1
    d.ellipse([x - L / 2, y - H / 2, x + L / 2, y + H / 2], fill=body + (255,))
    tail_x = x - flip * L / 2
    d.polygon(
        [(tail_x, y), (tail_x - flip * L * 0.35, y - H * 0.6), (tail_x - flip * L * 0.35, y + H * 0.6)],
        fill=body + (255,),
    )
    ex = x + flip * L * 0.28
    d.ellipse([ex - 4, y - H * 0.15 - 4, ex + 4, y - H * 0.15 + 4], fill=(20, 20, 20, 255))
    _paste_rotated(img, layer, c.uniform(-20, 20))
    return img


def draw_flower(c: _Canvas) -> Image.Image:
    img = _background(c, False)
    s = c.size
    draw = ImageDraw.Draw(img)
    x, y = s * c.uniform(0.35, 0.65), s * c.uniform(0.3, 0.5)
    draw.line([(x, y), (x + c.uniform(-10, 10), s)], fill=c.hue(0.3, 0.7, 0.45), width=int(s * 0.03))
    petal = c.colour(100, 256)
    n, r, pr = int(c.uniform(5, 9)), s * c.uniform(0.1, 0.16), s * c.uniform(0.06, 0.09)
    phase = c.uniform(0, 2 * math.pi)
    for k in range(n):
        a = phase + 2 * math.pi * k / n
        px, py = x + r * math.cos(a), y + r * math.sin(a)
        draw.ellipse([px - pr, py - pr, px + pr, py + pr], fill=petal)
    cr = s * c.uniform(0.05, 0.08)
    draw.ellipse([x - cr, y - cr, x + cr, y + cr], fill=c.hue(0.13, 0.9, 0.9))
    return img


def draw_car(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    road = _horizon(c, img, "grass")
    s = c.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, road, s, s], fill=c.colour(50, 110))
    x, w = s * c.uniform(0.15, 0.35), s * c.uniform(0.45, 0.6)
    y = road + s * 0.06
    body = c.colour(20, 256)
    h = s * c.uniform(0.1, 0.14)
    draw.rounded_rectangle([x, y - h, x + w, y], radius=int(s * 0.03), fill=body)
    draw.polygon(
        [(x + w * 0.2, y - h), (x + w * 0.3, y - h * 1.9), (x + w * 0.7, y - h * 1.9), (x + w * 0.82, y - h)], fill=body
    )
    draw.polygon(
        [
            (x + w * 0.27, y - h * 1.05),
            (x + w * 0.33, y - h * 1.75),
            (x + w * 0.48, y - h * 1.75),
            (x + w * 0.48, y - h * 1.05),
        ],
        fill=(200, 230, 255),
    )
    for wx in (0.22, 0.78):
        r = s * 0.055
        cx = x + w * wx
        draw.ellipse([cx - r, y - r, cx + r, y + r], fill=(25, 25, 25))
        draw.ellipse([cx - r / 2, y - r / 2, cx + r / 2, y + r / 2], fill=(170, 170, 170))
    return img


def draw_cup(c: _Canvas) -> Image.Image:
    img = _background(c, False)
    s = c.size
    draw = ImageDraw.Draw(img)
    table = s * c.uniform(0.7, 0.85)
    draw.rectangle([0, table, s, s], fill=c.colour(60, 200))
    x, w, h = s * c.uniform(0.3, 0.55), s * c.uniform(0.22, 0.32), s * c.uniform(0.22, 0.32)
    cup = c.colour(40, 256)
    draw.polygon([(x, table - h), (x + w, table - h), (x + w * 0.88, table), (x + w * 0.12, table)], fill=cup)
    draw.ellipse([x, table - h - s * 0.03, x + w, table - h + s * 0.03], fill=c.hue(0.07, 0.8, 0.3))
    draw.arc(
        [x + w * 0.75, table - h * 0.85, x + w * 1.3, table - h * 0.25],
        start=-90,
        end=90,
        fill=cup,
        width=int(s * 0.03),
    )
    draw.ellipse([x - w * 0.25, table - s * 0.025, x + w * 1.25, table + s * 0.025], fill=(235, 235, 235))
    return img


def draw_bird(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    s = c.size
    layer, d = _layer(c)
    x, y = s * c.uniform(0.35, 0.65), s * c.uniform(0.3, 0.6)
    r = s * c.uniform(0.1, 0.15)
    body = c.colour(40, 256)
    d.ellipse([x - r * 1.3, y - r * 0.8, x + r * 1.3, y + r * 0.8], fill=body + (255,))
    d.ellipse([x + r * 0.8, y - r * 1.3, x + r * 1.6, y - r * 0.4], fill=body + (255,))
    d.polygon(
        [(x + r * 1.55, y - r * 0.95), (x + r * 2.1, y - r * 0.8), (x + r * 1.55, y - r * 0.65)],
        fill=(250, 180, 30, 255),
    )
    wing = c.colour(20, 200)
    up = c.uniform(0.6, 1.6)
    d.polygon(
        [(x - r * 0.5, y - r * 0.2), (x + r * 0.5, y - r * 0.2), (x - r * 0.3, y - r * 1.0 - r * up)],
        fill=wing + (255,),
    )
    d.polygon([(x - r * 1.2, y), (x - r * 2.0, y - r * 0.5), (x - r * 2.0, y + r * 0.4)], fill=body + (255,))
    d.ellipse([x + r * 1.15, y - r * 1.0, x + r * 1.35, y - r * 0.8], fill=(0, 0, 0, 255))
    _paste_rotated(img, layer, c.uniform(-15, 15))
    return img


def draw_sun(c: _Canvas) -> Image.Image:
    s = c.size
    img = _background(c, True)
    if c.uniform(0, 1) < 0.5:
        _horizon(c, img, "water" if c.uniform(0, 1) < 0.5 else "grass")
    draw = ImageDraw.Draw(img)
    x, y = s * c.uniform(0.3, 0.7), s * c.uniform(0.25, 0.45)
    r = s * c.uniform(0.1, 0.16)
    colour = c.hue(c.uniform(0.08, 0.15), 0.9, 1.0)
    n = int(c.uniform(8, 14))
    phase = c.uniform(0, 2 * math.pi)
    for k in range(n):
        a = phase + 2 * math.pi * k / n
        draw.line(
            [
                (x + r * 1.2 * math.cos(a), y + r * 1.2 * math.sin(a)),
                (x + r * 1.9 * math.cos(a), y + r * 1.9 * math.sin(a)),
            ],
            fill=colour,
            width=int(s * 0.02),
        )
    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return img


def draw_castle(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    ground = _horizon(c, img, "grass")
    s = c.size
    draw = ImageDraw.Draw(img)
    stone = c.hue(c.uniform(0.05, 0.15), 0.2, c.uniform(0.5, 0.8))
    x0, x1 = s * c.uniform(0.1, 0.25), s * c.uniform(0.75, 0.9)
    wall_h = s * c.uniform(0.18, 0.26)
    draw.rectangle([x0, ground - wall_h, x1, ground + 2], fill=stone)
    tower_w, tower_h = s * 0.12, wall_h * c.uniform(1.6, 2.1)
    for tx in (x0 - tower_w / 2, x1 - tower_w / 2):
        draw.rectangle([tx, ground - tower_h, tx + tower_w, ground + 2], fill=stone)
        for k in range(3):
            bx = tx + k * tower_w / 2.5
            draw.rectangle([bx, ground - tower_h - s * 0.04, bx + tower_w / 5, ground - tower_h], fill=stone)
        draw.polygon(
            [
                (tx - 3, ground - tower_h - s * 0.04),
                (tx + tower_w + 3, ground - tower_h - s * 0.04),
                (tx + tower_w / 2, ground - tower_h - s * 0.16),
            ],
            fill=c.hue(0.0, 0.7, 0.5),
        )
    gx = (x0 + x1) / 2
    draw.chord(
        [gx - s * 0.06, ground - wall_h * 0.75, gx + s * 0.06, ground + wall_h * 0.5], 180, 360, fill=(40, 30, 25)
    )
    draw.rectangle([gx - s * 0.06, ground - wall_h * 0.5, gx + s * 0.06, ground + 2], fill=(40, 30, 25))
    return img


def draw_bridge(c: _Canvas) -> Image.Image:
    img = _background(c, True)
    water = _horizon(c, img, "water")
    s = c.size
    draw = ImageDraw.Draw(img)
    deck = water - s * c.uniform(0.15, 0.3)
    colour = c.colour(60, 230)
    draw.rectangle([0, deck - s * 0.04, s, deck], fill=colour)
    n = int(c.uniform(2, 4.99))
    span = s / n
    for k in range(n + 1):
        px = k * span
        draw.rectangle([px - s * 0.025, deck, px + s * 0.025, water + 4], fill=colour)
    for k in range(n):
        px = k * span
        draw.arc(
            [px, deck - s * 0.02, px + span, deck + (water - deck) * 1.6], 180, 360, fill=colour, width=int(s * 0.025)
        )
    return img


DRAWERS: dict[str, Callable[[_Canvas], Image.Image]] = {
    "lighthouse": draw_lighthouse,
    "house": draw_house,
    "city": draw_city,
    "tree": draw_tree,
    "boat": draw_boat,
    "mountain": draw_mountain,
    "fish": draw_fish,
    "flower": draw_flower,
    "car": draw_car,
    "cup": draw_cup,
    "bird": draw_bird,
    "sun": draw_sun,
    "castle": draw_castle,
    "bridge": draw_bridge,
}
CLASSES: list[str] = list(DRAWERS)


def _picture_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index * 7_919 + 12345) % (2**63)


def render(cls: str, seed: int, size: int = WORLD_SIZE) -> Image.Image:
    """The plain (unpainted) picture of `cls` for `seed`, at `size` pixels."""
    if cls not in DRAWERS:
        raise UserError(f"unknown world class {cls!r}; choose from {', '.join(CLASSES)}")
    rng = np.random.default_rng(seed)
    img = DRAWERS[cls](_Canvas(rng))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    return img.resize((size, size), Image.Resampling.LANCZOS)


@torch.no_grad()
def paint(
    images: Sequence[Image.Image],
    style: Image.Image | torch.Tensor,
    size: int = WORLD_SIZE,
    paint_size: int = PAINT_SIZE,
    device: str = "cpu",
) -> list[Image.Image]:
    """Paint plain renderings with the real Ghiasi network in one batch; returns `size`-px pictures.

    `style` is a style image or a precomputed [1, 100] Ghiasi style vector (held once per style).
    """
    from classic.ghiasi import load_ghiasi, predictor_input
    from styleprompt.plumbing.images import pil_to_tensor, tensor_to_pil

    predictor, transformer = load_ghiasi(None, device)
    vector = style if isinstance(style, torch.Tensor) else predictor(predictor_input(style, device))
    params = transformer.style_params(vector.to(device))
    batch = torch.cat(
        [pil_to_tensor(img.resize((paint_size, paint_size), Image.Resampling.BICUBIC)) for img in images]
    ).to(device)
    # The style params broadcast over the batch: [1, C] norm scales and shifts.
    out = transformer(batch, params, None, None).clamp(0, 1)
    pictures = []
    for row in out:
        pictures.append(tensor_to_pil(row.unsqueeze(0)).resize((size, size), Image.Resampling.LANCZOS))
    return pictures


def style_vector_of(style: Image.Image, device: str = "cpu") -> torch.Tensor:
    """The [1, 100] Ghiasi style vector the world paints with (computed once per style)."""
    from classic.ghiasi import load_ghiasi, predictor_input

    predictor, _ = load_ghiasi(None, device)
    with torch.no_grad():
        return predictor(predictor_input(style, device))


def memory_mib(count: int, size: int, painted: bool = True, batch: int = 32) -> float:
    """What `make_pictures(count, size)` holds at its peak, from the sizes it works at.

    Every plain rendering (at max(128, size) px) and every result (at `size`) is held until the
    end, RGB bytes; a painted batch runs the Ghiasi network once over `batch` pictures at
    max(PAINT_SIZE, size), whose footprint per megapixel `classic.limits` measured. Why up front:
    `world --count 5000 --size 512` ran 104 s into a MemoryError.
    """
    from classic.limits import FOOTPRINTS

    plain = max(DRAW_SIZE // 2, size)
    held = count * (plain * plain + size * size) * 3 / 2**20
    if not painted:
        return 200 + held
    ghiasi = FOOTPRINTS["ghiasi"]
    side = max(PAINT_SIZE, size)
    return ghiasi.baseline_mib + held + ghiasi.whole_mib_per_mpx * min(count, batch) * side * side / 1e6


def make_pictures(
    style: Image.Image | torch.Tensor | None,
    classes: Sequence[str],
    count: int,
    seed: int = 0,
    size: int = WORLD_SIZE,
    batch: int = 32,
) -> list[Picture]:
    """`count` pictures cycling over `classes`, painted in `style` (None: the plain "photo" style).

    Deterministic per (classes, count, seed, style): picture i has its own seed.
    """
    for cls in classes:
        if cls not in DRAWERS:
            raise UserError(f"unknown world class {cls!r}; choose from {', '.join(CLASSES)}")
    if not classes:
        raise UserError("no world classes given")
    seeds = [_picture_seed(seed, i) for i in range(count)]
    chosen = [classes[i % len(classes)] for i in range(count)]
    plain = [render(cls, s, max(DRAW_SIZE // 2, size)) for cls, s in zip(chosen, seeds)]
    if style is None:
        images = [img.resize((size, size), Image.Resampling.LANCZOS) for img in plain]
    else:
        vector = style if isinstance(style, torch.Tensor) else style_vector_of(style)
        images = []
        for start in range(0, count, batch):
            images += paint(plain[start : start + batch], vector, size, paint_size=max(PAINT_SIZE, size))
    return [Picture(img, cls, s) for img, cls, s in zip(images, chosen, seeds)]


def write_pictures(pictures: Sequence[Picture], folder: Path, prefix: str = "world") -> list[Path]:
    """PNG + caption file per picture (the caption names its class, for [filewords] and {class})."""
    from styleprompt.plumbing.files import write_text_atomic
    from styleprompt.plumbing.images import save_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, pic in enumerate(pictures):
        path = folder / f"{prefix}-{k:04d}-{pic.cls}.png"
        save_image(pic.image, path)
        write_text_atomic(path.with_suffix(".txt"), pic.cls + "\n")
        paths.append(path)
    return paths
