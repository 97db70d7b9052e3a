"""Reading user images safely, converting between PIL and tensors, saving atomically.

Why one module: every method (style token, Gatys, AdaIN, Ghiasi) and every entry point reads
whatever is on the user's disk. Doing it in one place means CMYK, 16-bit, palette, RGBA,
EXIF-rotated, animated, truncated and decompression-bomb files get the same treatment
everywhere: converted correctly, or refused with one line.

A leaf module, like `errors` and `files` (the only parts of `styleprompt` it imports), with
torch imported only where a tensor is made: `classic` and the app's upload checks use it
without pulling in the diffusion side.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import atomic_path, open_regular, shown_path

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# What the README promises, by Pillow's format name (its JPEG reader also opens a camera's
# multi-picture JPEG, which it names MPO). Everything else Pillow could open (DDS, QOI, SPIDER, JPEG 2000, PSD, ...)
# is refused by name: those plugins are partial, and their failures are not worth supporting.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
ACCEPTED_NAMES = "JPEG, PNG, WebP, BMP, GIF or TIFF"

# The first bytes of each accepted format: a file that starts like one but does not open is a
# damaged file of that format, not an unknown one.
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
}

# Pillow's own default (about 89 Mpx). A 4K frame is 8.3 Mpx, an 8K one 33 Mpx. Anything
# larger is far more likely a decompression bomb than an artwork.
MAX_PIXELS = 89_478_485


def _to_rgb(img: Image.Image, shown: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise UserError(
                f"refusing {shown}: its floating-point pixels include NaN or infinite values; "
                "save it as an 8- or 16-bit image first"
            )
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _libtiff_messages() -> Iterator[list[str]]:
    """Keep libtiff's messages off the terminal while a TIFF decodes; yields them (filled on exit).

    Why: libtiff prints its complaints ("ZIPDecode: Decoding error at scanline 0 ...") straight
    to file descriptor 2, below Python, so a damaged TIFF would show lines besides our one. The
    descriptor is pointed at a temporary file for the few milliseconds of the decode, under a
    lock (what another thread of the process prints in that window is lost with them).
    """
    messages: list[str] = []
    fd = 2  # libtiff's, whatever Python's sys.stderr currently is
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        try:
            saved = os.dup(fd)
        except OSError:  # no descriptor 2 at all (a daemon): nothing to keep off it
            yield messages
            return
        os.dup2(sink.fileno(), fd)
        try:
            yield messages
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            messages += [line.strip() for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip()]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:160] if text else "") or type(exc).__name__


def _sniffed_format(handle: IO[bytes]) -> str | None:
    """The accepted format the file's first bytes claim, if any."""
    handle.seek(0)
    head = handle.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES.items() if head.startswith(magic)), None)


def _other_format(handle: IO[bytes]) -> str | None:
    """The name of the non-accepted format Pillow identifies the file as, if any.

    Only the header is parsed (no pixels are decoded); any failure of a plugin means "unknown".
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle.seek(0)
            with Image.open(handle) as img:
                return (
                    f"in {img.format} format ({img.format_description})"
                    if img.format_description
                    else f"in {img.format} format"
                )
    except Exception:  # noqa: BLE001 - Pillow's plugins raise anything on malformed headers
        return None


def _refuse_unopenable(handle: IO[bytes], shown: str, exc: BaseException) -> UserError:
    """The one line for a file that none of the accepted formats' readers could open."""
    sniffed = _sniffed_format(handle)
    if sniffed:
        return UserError(
            f"cannot read {shown}: corrupt or unsupported {sniffed} file ({_first_line(exc)}); "
            "re-save it from an image editor"
        )
    other = _other_format(handle)
    if other:
        return UserError(
            f"refusing {shown}: its content is {other}; styleprompt reads {ACCEPTED_NAMES} "
            "(decided by the content, not the name): convert it first"
        )
    return UserError(f"cannot read {shown}: not an image ({ACCEPTED_NAMES} are read)")


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as 8-bit RGB with its EXIF orientation applied.

    What the file is is decided by its content (a JPEG named .png is a JPEG; a DDS named .png
    is refused as DDS). Raises UserError (one line: which file, what is wrong) for missing,
    unreadable, non-image, other-format, oversized, corrupt or truncated files, and for what is
    no plain file (a FIFO, a device, a file of /proc); any failure while decoding an accepted
    format reads as "corrupt or unsupported", whatever Pillow's plugin raised. Animated images
    give their first frame. The file is opened once (`open_regular`, which never blocks) and
    every reader works on that handle, so what was checked is what is decoded.
    """
    p = Path(path)
    shown = shown_path(p)
    if p.is_dir():
        raise UserError(f"expected an image file but {shown} is a folder")
    with open_regular(p, "image") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise UserError(f"cannot read {shown}: the file is empty (0 bytes)")
        return _decode(handle, shown, max_pixels)


def _decode(handle: IO[bytes], shown: str, max_pixels: int) -> Image.Image:
    fmt: str | None = "image"
    try:
        with warnings.catch_warnings():
            # Pillow's warnings about odd but readable files (EXIF, palettes) are not the user's
            # business; a decompression bomb is.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                probe = Image.open(handle, formats=ACCEPTED_FORMATS)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise
            except Exception as exc:  # noqa: BLE001 - see _refuse_unopenable
                raise _refuse_unopenable(handle, shown, exc) from None
            with probe:
                fmt = "JPEG" if probe.format == "MPO" else probe.format
                probe.verify()  # checksums (a PNG with a bad CRC decodes silently otherwise)
            handle.seek(0)
            with Image.open(handle, formats=ACCEPTED_FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise UserError(
                        f"refusing {shown}: {width}x{height} is larger than the {max_pixels:,}-pixel limit "
                        "(possibly a decompression bomb); resize it first"
                    )
                if width < 1 or height < 1:
                    raise UserError(f"cannot read {shown}: it has no pixels")
                img.seek(0)
                failure = None
                quiet: contextlib.AbstractContextManager[list[str]] = (
                    _libtiff_messages() if fmt == "TIFF" else contextlib.nullcontext([])
                )
                with quiet as messages:
                    try:
                        img.load()
                    except Exception as exc:  # noqa: BLE001 - re-raised below, with libtiff's words
                        failure = exc
                if failure is not None:
                    raise OSError(messages[-1]) if messages else failure
                return _to_rgb(ImageOps.exif_transpose(img), shown)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"refusing {shown}: too many pixels (possibly a decompression bomb); resize it first") from None
    except RecursionError:
        raise UserError(f"cannot read {shown}: corrupt or unsupported image (its structure nests too deeply)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise anything on malformed data
        raise UserError(
            f"cannot read {shown}: corrupt or unsupported {fmt} file ({_first_line(exc)}); re-save it from an image editor"
        ) from None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by suffix) directly in `folder`, sorted by name; hidden files skipped."""
    root = Path(folder)
    if not root.exists():
        raise UserError(f"folder not found: {shown_path(root)}")
    if not root.is_dir():
        raise UserError(f"expected a folder of images but {shown_path(root)} is a file")
    try:  # listing needs the folder's r bit, telling its files' kinds its x bit
        return sorted(
            p
            for p in root.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    except PermissionError:
        raise UserError(
            f"cannot read the folder {shown_path(root)}: permission denied; make it readable (chmod u+rx) "
            "or copy the artworks to a folder of yours"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read the folder {shown_path(root)}: {exc.strerror or exc}") from None


def resize_long_side(img: Image.Image, size: int | None, multiple: int = 1) -> Image.Image:
    """Resize so the longer side is `size` (keep aspect); round both sides to `multiple`."""
    if size is None:
        w, h = img.size
    else:
        scale = size / max(img.size)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    if multiple > 1:
        w, h = max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple)
    if (w, h) == img.size:
        return img
    return img.resize((w, h), Image.Resampling.LANCZOS)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor [1, 3, H, W] in [0, 1]."""
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor [1, 3, H, W] or [3, H, W] in [0, 1] -> RGB PIL image (clamped, rounded)."""
    t = tensor.detach().float().cpu()
    if t.dim() == 4:
        t = t[0]
    arr = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def save_image(img: Image.Image, path: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """Save atomically; PNG files carry `text` as tEXt chunks (parameters for reproduction)."""
    target = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".png": "PNG"}.get(target.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot save {shown_path(target)}: use a .png, .jpg or .webp file name")
    with atomic_path(target) as tmp:
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            for key, value in (text or {}).items():
                info.add_text(key, str(value))
            img.save(tmp, format="PNG", pnginfo=info)
        else:
            img.save(tmp, format=fmt, quality=95)
    return target
