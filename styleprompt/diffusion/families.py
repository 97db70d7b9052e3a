"""Model families and named models: the one place their rules live.

Why a leaf (no torch, no diffusers, nothing else of styleprompt): the loader (`models`), the file
formats (`formats`), the tiny test models (`tiny`), training defaults (`config`) and the micro
world all ask the same questions ("which family has text encoders this wide?", "is this SDXL?",
"which widths does `tiny-sdxl` have?", "where is the micro model?"), and each answer must be the
same everywhere. A family is decided by its text encoders: their number (SDXL has a second one)
and their widths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The standard Stable Diffusion 1.5 checkpoint (its maintained mirror on the hub).
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# What --model accepts, in the words of every help text and label (one place, so none forgets micro).
MODEL_CHOICES_HELP = "hub id, diffusers folder, .safetensors file, micro (trained, offline) or tiny (random)"

# -- families by text-encoder widths --------------------------------------------------------------

# Text-encoder width -> family, for one-encoder models.
FAMILY_BY_WIDTH: dict[int, str] = {768: "sd1", 1024: "sd2"}
# SDXL's two text encoders: CLIP ViT-L (clip_l) and OpenCLIP ViT-bigG (clip_g).
SDXL_WIDTHS: tuple[int, int] = (768, 1280)
FAMILY_NAMES: dict[str, str] = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
_FITS: dict[str, str] = {
    "sd1": "SD 1.x models (SD 1.4, 1.5 and their fine-tunes)",
    "sd2": "SD 2.x models (SD 2.0, 2.1)",
    "sdxl": "SDXL models (SDXL base, refiner's clip_g only, and fine-tunes)",
}

# -- named models (what `--model NAME` means besides a hub id, folder or file) ---------------------

# The tiny random test models and their text encoders' widths (`tiny.py` builds them at these).
# The SDXL one has two different widths on purpose, like SDXL's 768 and 1280.
TINY_WIDTHS: dict[str, tuple[int, ...]] = {"tiny": (32,), "tiny-sdxl": (32, 64)}
TINY_MODELS: tuple[str, ...] = tuple(TINY_WIDTHS)
MICRO_MODEL = "micro"
MICRO_WIDTHS: tuple[int, ...] = (128,)  # the micro model's text encoder (styleprompt/micro/arch.py)
# Where the micro model's weights ship: a diffusers folder of package data. A plain path, not an
# import of `styleprompt.micro`, so loading it (`models.load_pipeline("micro")`) needs nothing of
# the micro wing, which sits above the diffusion wing (`micro/__init__.py` reads it from here).
MICRO_MODEL_DIR = Path(__file__).resolve().parents[1] / "micro" / "model"


def family_of_width(width: int) -> str:
    """A one-encoder family from its text encoder's width: "sd1", "sd2" or "custom-<width>"."""
    return FAMILY_BY_WIDTH.get(width, f"custom-{width}")


def family_of_widths(widths: tuple[int, ...]) -> str:
    """ "sd1" (768), "sd2" (1024), "sdxl" (768 + 1280), else "custom-<w>" / "custom-sdxl-<w1>+<w2>"."""
    if len(widths) == 2:
        return "sdxl" if tuple(widths) == SDXL_WIDTHS else f"custom-sdxl-{widths[0]}+{widths[1]}"
    return family_of_width(widths[0])


def describe_family(widths: tuple[int, ...]) -> str:
    """A family for people: "SD 1.x (width 768)", "SDXL (widths 768+1280)", "a custom model (width 32)"."""
    family = family_of_widths(widths)
    if family in FAMILY_NAMES:
        name = FAMILY_NAMES[family]
    elif len(widths) == 2:
        name = "a custom SDXL-layout model"
    else:
        name = "a custom model"
    label = "widths" if len(widths) == 2 else "width"
    return f"{name} ({label} {'+'.join(str(w) for w in widths)})"


def fits_description(widths: tuple[int, ...]) -> str:
    """Which models a file of these widths loads into, for `inspect`."""
    family = family_of_widths(widths)
    if family in _FITS:
        return _FITS[family]
    tiny = [name for name, tiny_widths in TINY_WIDTHS.items() if tuple(widths) == tiny_widths]
    if tiny:
        return f"the tiny test model `{tiny[0]}`"
    if tuple(widths) == MICRO_WIDTHS:
        return "the micro model `micro` (trained, offline)"
    return f"models whose text encoders are {describe_family(widths)}"


# -- families of a loaded pipeline ----------------------------------------------------------------


def is_sdxl(pipe: Any) -> bool:
    """SDXL is the family with a second text encoder (the one place that rule lives for pipelines;
    `family_of_widths` is the same rule for files, whose second vectors are the second encoder's)."""
    return getattr(pipe, "text_encoder_2", None) is not None


def text_encoders(pipe: Any) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs: one for SD 1.x/2.x, two for SDXL (each learns its own rows)."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if is_sdxl(pipe):
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def model_family(pipe: Any) -> str:
    """ "sd1", "sd2", "sdxl", or "custom-<width>" (the tiny models) from the text encoders."""
    if is_sdxl(pipe):
        return "sdxl"
    return family_of_width(int(pipe.text_encoder.config.hidden_size))
