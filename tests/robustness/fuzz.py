"""Seeded mutations of small valid image files, for the reader's fuzz test.

Why generated here: the seeds are small valid files of every format this Pillow can both write
and read (so the set follows the installed Pillow), and each mutation is one a damaged download
or a hostile upload produces: flipped bytes, a truncation, a header field set to an extreme.
Everything is derived from a seed, so a failure names a file that can be rebuilt exactly.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Modes tried in order when a format cannot write RGB (SPIDER wants F, some want L or 1).
_MODES = ("RGB", "L", "F", "1")
# Values a header field is set to: zero, all ones, the sign bit, small and large.
_EXTREMES = (b"\x00\x00", b"\xff\xff", b"\x80\x00", b"\x00\x01", b"\x7f\xff", b"\xff\x00\x00\x00", b"\x00\x00\x00\x80")


@dataclass(frozen=True)
class Mutant:
    name: str  # e.g. "PNG-flip-3": format, kind of mutation, index
    data: bytes


def _picture(mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode == "I;16":
        return Image.fromarray((arr[..., 0].astype(np.uint16) * 257), mode="I;16")
    if mode == "F":
        return Image.fromarray(arr[..., 0].astype(np.float32) / 255.0, mode="F")
    return img.convert(mode)


# The accepted formats' decoders are the ones that run on real pixels, so their variants are
# seeded too: (name, mode, format, save options).
_VARIANTS = (
    ("PNG-palette", "P", "PNG", {}),
    ("PNG-16bit", "I;16", "PNG", {}),
    ("PNG-rgba", "RGBA", "PNG", {}),
    ("JPEG-progressive", "RGB", "JPEG", {"progressive": True}),
    ("JPEG-cmyk", "CMYK", "JPEG", {}),
    ("TIFF-lzw", "RGB", "TIFF", {"compression": "tiff_lzw"}),
    ("TIFF-deflate", "RGB", "TIFF", {"compression": "tiff_adobe_deflate"}),
    ("TIFF-jpeg", "RGB", "TIFF", {"compression": "jpeg"}),
    ("TIFF-packbits", "RGB", "TIFF", {"compression": "packbits"}),
    ("TIFF-float", "F", "TIFF", {}),
    ("TIFF-16bit", "I;16", "TIFF", {}),
    ("WEBP-lossless", "RGBA", "WEBP", {"lossless": True}),
    ("GIF-animated", "P", "GIF", {"save_all": True}),
)


def seed_files() -> dict[str, bytes]:
    """One small valid file per format Pillow can write and then read back, plus variants of the
    accepted formats (palette, 16-bit, float, compressed, animated...)."""
    Image.init()
    seeds = {}
    for name, mode, fmt, options in _VARIANTS:
        buf = io.BytesIO()
        picture = _picture(mode)
        if options.get("save_all"):
            options = {
                **options,
                "append_images": [picture.rotate(90), picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)],
            }
        picture.save(buf, format=fmt, **options)
        seeds[name] = buf.getvalue()
    for fmt in sorted(set(Image.SAVE) & set(Image.OPEN)):
        for mode in _MODES:
            buf = io.BytesIO()
            try:
                _picture(mode).save(buf, format=fmt)
                Image.open(io.BytesIO(buf.getvalue())).load()
            except Exception:  # noqa: BLE001 - this format cannot round-trip this mode; try the next
                continue
            seeds[fmt] = buf.getvalue()
            break
    return seeds


def mutants(fmt: str, data: bytes, count: int) -> list[Mutant]:
    """`count` mutations of one valid file, seeded by the format's name."""
    rng = np.random.default_rng(zlib.crc32(fmt.encode()))
    out = []
    for i in range(count):
        kind = ("flip", "truncate", "header")[i % 3]
        buf = bytearray(data)
        if kind == "flip":
            for at in rng.integers(0, len(buf), size=int(rng.integers(1, 9))):
                buf[at] ^= int(rng.integers(1, 256))
        elif kind == "truncate":
            buf = buf[: int(rng.integers(1, len(buf)))]
        else:  # a field near the start (where the headers are) set to an extreme value
            value = _EXTREMES[int(rng.integers(len(_EXTREMES)))]
            at = int(rng.integers(0, max(1, min(len(buf), 96) - len(value))))
            buf[at : at + len(value)] = value
        out.append(Mutant(f"{fmt}-{kind}-{i}", bytes(buf)))
    return out
