"""The bad-input corpus, generated on the fly (nothing downloaded, nothing committed).

Each entry is a file a user might feed the tool, with what every entry point must do with it:
"ok" (read correctly: mode converted, EXIF applied) or "refused" (one line, exit code 2).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image


@dataclass(frozen=True)
class Entry:
    name: str
    filename: str
    expect: str  # "ok" or "refused"
    what: str
    make: Callable[[Path], None]
    size: tuple[int, int] | None = None  # the (w, h) an "ok" entry must load as


def _photo(w: int = 96, h: int = 64) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return Image.fromarray(arr.astype(np.uint8))


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    _photo().save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _zero_byte(p: Path) -> None:
    p.write_bytes(b"")


def _truncated_jpeg(p: Path) -> None:
    data = _jpeg_bytes()
    p.write_bytes(data[: len(data) // 2])


def _bad_crc_png(p: Path) -> None:
    buf = io.BytesIO()
    _photo().save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    idat = data.find(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    crc_at = idat + 4 + length
    data[crc_at : crc_at + 4] = bytes(b ^ 0xFF for b in data[crc_at : crc_at + 4])
    p.write_bytes(bytes(data))


def _cmyk_jpeg(p: Path) -> None:
    _photo().convert("CMYK").save(p, format="JPEG")


def _png16(p: Path) -> None:
    arr = (np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16)
    Image.fromarray(arr, mode="I;16").save(p)


def _rgba_png(p: Path) -> None:
    img = _photo().convert("RGBA")
    img.putalpha(128)
    img.save(p)


def _palette_png(p: Path) -> None:
    _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(p)


def _grayscale(p: Path) -> None:
    _photo().convert("L").save(p)


def _exif_rotated(p: Path) -> None:
    img = _photo(96, 64)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 64 x 96
    img.save(p, format="JPEG", exif=exif)


def _one_pixel(p: Path) -> None:
    Image.new("RGB", (1, 1), (200, 30, 30)).save(p)


def _bomb_header(p: Path) -> None:
    """A valid PNG header and IHDR claiming 50000 x 50000, with one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    p.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def _animated_gif(p: Path) -> None:
    frames = [_photo().convert("P") for _ in range(3)]
    frames[1] = Image.new("P", (96, 64), 5)
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _text_as_jpg(p: Path) -> None:
    p.write_text("this is a text file with a .jpg name\n")


def _foreign(fmt: str, mode: str = "RGB") -> Callable[[Path], None]:
    """Content of a format Pillow only partly supports, under whatever name the entry gives."""

    def make(p: Path) -> None:
        buf = io.BytesIO()  # not save(p): saving SPIDER to a path makes Pillow save every *.png as SPIDER after
        _photo().convert(mode).save(buf, format=fmt)
        p.write_bytes(buf.getvalue())

    return make


def _tiff_bad_tags(p: Path) -> None:
    """A TIFF whose StripOffsets tag is typed as text: Pillow's plugin raises TypeError."""
    buf = io.BytesIO()
    _photo().save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * i
        if struct.unpack("<H", data[at : at + 2])[0] == 273:  # StripOffsets
            data[at + 2 : at + 4] = struct.pack("<H", 2)  # type ASCII
    p.write_bytes(bytes(data))


def _float_tiff_nan(p: Path) -> None:
    arr = np.linspace(0, 1, 96 * 64, dtype=np.float32).reshape(64, 96)
    arr[10:20, 10:20] = np.nan
    Image.fromarray(arr, mode="F").save(p, format="TIFF")


def _unreadable(p: Path) -> None:
    _photo().save(p, format="PNG")
    os.chmod(p, 0)


CORPUS: list[Entry] = [
    Entry("zero-byte file", "zero.jpg", "refused", "empty file", _zero_byte),
    Entry("truncated JPEG", "truncated.jpg", "refused", "first half of a JPEG", _truncated_jpeg),
    Entry("PNG with a bad CRC", "badcrc.png", "refused", "IDAT checksum flipped", _bad_crc_png),
    Entry("CMYK JPEG", "cmyk.jpg", "ok", "converted to RGB", _cmyk_jpeg, (96, 64)),
    Entry("16-bit PNG", "gray16.png", "ok", "scaled to 8 bits, RGB", _png16, (96, 64)),
    Entry("RGBA PNG", "rgba.png", "ok", "alpha composited on white", _rgba_png, (96, 64)),
    Entry("palette PNG", "palette.png", "ok", "converted to RGB", _palette_png, (96, 64)),
    Entry("grayscale", "gray.png", "ok", "converted to RGB", _grayscale, (96, 64)),
    Entry("EXIF-rotated photo", "rotated.jpg", "ok", "orientation applied", _exif_rotated, (64, 96)),
    Entry("1x1 image", "tiny.png", "ok", "read; methods upscale it", _one_pixel, (1, 1)),
    Entry("decompression bomb header", "bomb.png", "refused", "claims 50000x50000", _bomb_header),
    Entry("animated GIF", "animated.gif", "ok", "first frame", _animated_gif, (96, 64)),
    Entry("text file named .jpg", "text.jpg", "refused", "not an image", _text_as_jpg),
    Entry("unreadable file (permissions)", "noperm.png", "refused", "mode 000", _unreadable),
    Entry("DDS named .png", "dds.png", "refused", "not an accepted format", _foreign("DDS")),
    Entry("QOI named .png", "qoi.png", "refused", "not an accepted format", _foreign("QOI")),
    Entry("SPIDER named .png", "spider.png", "refused", "not an accepted format", _foreign("SPIDER", "F")),
    Entry("JPEG 2000 named .png", "jpeg2000.png", "refused", "not an accepted format", _foreign("JPEG2000")),
    Entry("TIFF with bad tags", "badtags.tif", "refused", "StripOffsets typed as text", _tiff_bad_tags),
    Entry("float TIFF holding NaN", "nan.tif", "refused", "NaN pixels", _float_tiff_nan),
]


def build(folder: Path) -> dict[str, Path]:
    """Write every entry into `folder`; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for entry in CORPUS:
        path = folder / entry.filename
        entry.make(path)
        paths[entry.name] = path
    return paths


# The entries every entry point meets in the quick loop (`pytest -m "not slow"`): one file that is
# read after a conversion and one that is refused. The whole corpus runs with the slow tests (CI).
QUICK = ("CMYK JPEG", "truncated JPEG")


def as_params(entries: list[Entry]) -> list:
    """`entries` as pytest parameters named by entry: the QUICK ones as they are, the others marked slow."""
    return [pytest.param(e, id=e.name, marks=() if e.name in QUICK else pytest.mark.slow) for e in entries]
