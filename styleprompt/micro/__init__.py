"""The micro text-to-image model: a complete Stable Diffusion pipeline trained by this project.

Why it exists: no Stable Diffusion weights can reach this project's machines, and a random model
(`tiny`) paints noise, so nothing would show that a style token learns. `micro` is a small but
*trained* StableDiffusionPipeline (AsymmetricAutoencoderKL: an AutoencoderKL encoder with a wider
decoder; UNet2DConditionModel, CLIPTextModel, a CLIP BPE
tokenizer, SD 1.x's noise schedule) that knows the procedural world of `styleprompt.micro.world`:
14 classes painted in 15 style words (one per training painting) and "photo". Four paintings
are held out of its training entirely, for the textual inversion test of a style it never saw.

The weights ship in `styleprompt/micro/model` (a diffusers folder, safetensors, fp16 on disk)
and load offline; `python -m styleprompt.micro build` rebuilds them from nothing (see build.py).
"""

from __future__ import annotations

from pathlib import Path

from styleprompt.diffusion.families import MICRO_MODEL, MICRO_MODEL_DIR

# The model's folder is named by the diffusion wing (which loads `--model micro` without importing
# this package, which stands above it); the judges are the micro world's own.
MODEL_DIR = MICRO_MODEL_DIR
JUDGE_DIR = Path(__file__).resolve().parent / "judge"
MICRO_MODELS = (MICRO_MODEL,)

# Style word -> painting file in ../shared/data/style. Readable words, one per trained painting.
STYLE_WORDS: dict[str, str] = {
    "antimono": "antimonocromatismo.jpg",
    "asheville": "asheville.jpg",
    "contrast": "contrast_of_forms.jpg",
    "gris": "en_campo_gris.jpg",
    "mandala": "flower_of_life.jpg",
    "goeritz": "goeritz.jpg",
    "muse": "la_muse.jpg",
    "mondrian": "mondrian.jpg",
    "picasso": "picasso_self_portrait.jpg",
    "shipwreck": "shipwreck.jpg",
    "sketch": "sketch.png",
    "starry": "starry_night.jpg",
    "poitiers": "the_resevoir_at_poitiers.jpg",
    "trial": "trial.jpg",
    "matisse": "woman_with_hat_matisse.jpg",
}
# Held out of base training entirely (no word, no picture): every fifth painting in alphabetical
# order from the third, a rule fixed before any figure was measured.
HELD_OUT: list[str] = ["brushstrokes.jpg", "impronte_d_artista.jpg", "scene_de_rue.jpg", "the_scream.jpg"]


def style_words() -> list[str]:
    """Every style word the micro model knows: the paintings' words, then the plain "photo"."""
    from styleprompt.micro.world import PLAIN_STYLE

    return [*STYLE_WORDS, PLAIN_STYLE]


def is_available() -> bool:
    return (MODEL_DIR / "model_index.json").is_file()


def load_micro_pipeline():
    """The shipped micro StableDiffusionPipeline in float32, read offline from package data."""
    from styleprompt.diffusion.models import load_micro_folder

    return load_micro_folder(MODEL_DIR)
