"""Reading user images safely, converting between PIL and tensors, saving atomically.

Why one module: every method (style token, Gatys, AdaIN, Ghiasi) and every entry point reads
whatever is on the user's disk. Doing it in one place means CMYK, 16-bit, palette, RGBA,
EXIF-rotated, animated, truncated and decompression-bomb files get the same treatment
everywhere: converted correctly, or refused with one line.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from classic.errors import UserError
from classic.files import atomic_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Pillow's own default (about 89 Mpx). A 4K frame is 8.3 Mpx, an 8K one 33 Mpx. Anything
# larger is far more likely a decompression bomb than an artwork.
MAX_PIXELS = 89_478_485


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
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


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as 8-bit RGB with its EXIF orientation applied.

    Raises UserError (one line: which file, what is wrong) for missing, unreadable, corrupt,
    truncated, non-image or oversized files. Animated images give their first frame.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"image not found: {p}")
    if p.is_dir():
        raise UserError(f"expected an image file but {p} is a folder")
    if not os.access(p, os.R_OK):
        raise UserError(f"cannot read {p}: permission denied")
    if p.stat().st_size == 0:
        raise UserError(f"cannot read {p}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as probe:
                probe.verify()  # checksums (a PNG with a bad CRC decodes silently otherwise)
            with Image.open(p) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise UserError(
                        f"refusing {p}: {width}x{height} is larger than the {max_pixels:,}-pixel limit "
                        "(possibly a decompression bomb); resize it first"
                    )
                if width < 1 or height < 1:
                    raise UserError(f"cannot read {p}: it has no pixels")
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"refusing {p}: too many pixels (possibly a decompression bomb); resize it first") from None
    except UnidentifiedImageError:
        raise UserError(f"cannot read {p}: not an image file Pillow recognises") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read {p}: the file is corrupt or truncated ({reason})") from None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by suffix) directly in `folder`, sorted by name; hidden files skipped."""
    root = Path(folder)
    if not root.exists():
        raise UserError(f"folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"expected a folder of images but {root} is a file")
    return sorted(
        p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


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
        raise UserError(f"cannot save {target}: use a .png, .jpg or .webp file name")
    with atomic_path(target) as tmp:
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            for key, value in (text or {}).items():
                info.add_text(key, str(value))
            img.save(tmp, format="PNG", pnginfo=info)
        else:
            img.save(tmp, format=fmt, quality=95)
    return target
