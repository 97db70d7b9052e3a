"""Tiny, deterministic Stable Diffusion pipelines built from configs, entirely offline.

Why: tests, CI and `--model tiny` must exercise exactly the code paths of a real model (the same
diffusers classes, the same CLIP tokenizer class, the same VAE scale factor of 8) without any
download. Weights are random but seeded, so every build is bit-identical.

The tokenizer is a real CLIP byte-level BPE tokenizer (transformers' CLIPTokenizer, `</w>`
word ends, CLIP's special tokens). Its merges come from CLIP's own `bpe_simple_vocab_16e6.txt.gz`
when a package on disk ships it (open_clip does), else from a small BPE learned here, deterministically, from the
prompt vocabulary.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import torch

from styleprompt.diffusion.families import TINY_WIDTHS
from styleprompt.diffusion.templates import CLASS_NAMES, OBJECT_TEMPLATES, STYLE_TEMPLATES

TINY_SEED = 0
TINY_VOCAB_TARGET = 1000
(TINY_TEXT_WIDTH,) = TINY_WIDTHS["tiny"]  # families.py names each named model's widths

# Words beyond the templates that a user of the tiny model types: initializer words, art words.
_EXTRA_WORDS = (
    "painting art artwork style drawing sketch illustration watercolor oil canvas brush strokes "
    "impressionism expressionism cubism abstract portrait landscape photo photograph lighthouse "
    "city street night sky stars sea boat bridge tower mountain forest river flowers woman man "
    "blue red yellow green orange purple black white colorful vivid dark light bright texture "
    "pattern swirl swirly thick paint pencil ink charcoal pastel digital anime cartoon"
)


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _open_clip_merges() -> list[str] | None:
    """CLIP's merges from an installed package's bpe_simple_vocab_16e6.txt.gz (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
            return lines[1 : 49152 - 256 - 2 + 1]
    return None


def _prompt_words() -> list[str]:
    words: list[str] = []
    for template in STYLE_TEMPLATES + OBJECT_TEMPLATES:
        words += template.replace("{token}", " ").replace("{class}", " ").split()
    for name in CLASS_NAMES:
        words += name.split()
    return words + _EXTRA_WORDS.split()


def _learned_merges(num_merges: int = TINY_VOCAB_TARGET - 514, words: list[str] | None = None) -> list[str]:
    """A small BPE learned from the prompt vocabulary, identical in every process.

    Written out rather than taken from the `tokenizers` trainer because that trainer breaks ties
    between equally frequent pairs differently from one process to the next, and the tiny model
    must be the same model everywhere. Ties here go to the lexicographically smallest pair.
    """
    from collections import Counter

    words = _prompt_words() if words is None else words
    freq = Counter(w.strip(".,").lower() for w in words if w.strip(".,"))
    vocab = {tuple(w[:-1]) + (w[-1] + "</w>",): n for w, n in freq.items()}
    merges: list[str] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for symbols, n in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(" ".join(best))
        merged = {}
        for symbols, n in vocab.items():
            out, k = [], 0
            while k < len(symbols):
                if k + 1 < len(symbols) and (symbols[k], symbols[k + 1]) == best:
                    out.append(symbols[k] + symbols[k + 1])
                    k += 2
                else:
                    out.append(symbols[k])
                    k += 1
            merged[tuple(out)] = n
        vocab = merged
    return merges


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Build CLIP's vocabulary layout from merges: bytes, bytes+</w>, merges, specials."""
    return vocab_from_merges(_open_clip_merges() or _learned_merges())


def vocab_from_merges(merges: list[str]) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary layout for `merges`: bytes, bytes+</w>, merged symbols, specials."""
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [b + "</w>" for b in base]
    seen = set(vocab_list)
    kept: list[str] = []
    for merge in merges:
        parts = merge.split()
        if len(parts) != 2:
            continue
        joined = "".join(parts)
        if joined not in seen:
            seen.add(joined)
            vocab_list.append(joined)
        kept.append(merge)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, kept


def build_tiny_tokenizer():
    """A CLIPTokenizer with CLIP's layout and special tokens, built without any file."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    pairs = [tuple(m.split()) for m in merges]
    return CLIPTokenizer(vocab=dict(vocab), merges=pairs, model_max_length=77)


def build_tiny_text_encoder(
    vocab_size: int,
    hidden_size: int = TINY_TEXT_WIDTH,
    projection_dim: int | None = None,
    *,
    max_positions: int = 77,
    seed: int | None = TINY_SEED,
):
    """A two-layer CLIP text encoder (CLIP's layout, 4 heads) with random weights.

    The tiny models and the micro model (`micro/arch.py`, 32 positions) share it. `seed=None`
    draws the weights from torch's current random state instead of reseeding: the micro build
    seeds once for its whole model, so its text encoder and UNet come from one stream.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_attention_heads=4,
        num_hidden_layers=2,
        layer_norm_eps=1e-5,
        max_position_embeddings=max_positions,
        vocab_size=vocab_size,
        projection_dim=projection_dim or hidden_size,
        hidden_act="gelu",
    )
    if seed is not None:
        torch.manual_seed(seed)
    if projection_dim is not None:
        return CLIPTextModelWithProjection(config).eval()
    return CLIPTextModel(config).eval()


def build_tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(TINY_SEED)
    # Four blocks -> the same scale factor of 8 as the real SD VAE.
    return AutoencoderKL(
        block_out_channels=[8, 16, 16, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=128,
    ).eval()


def build_tiny_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    # Stable Diffusion 1.x's noise schedule, so the scheduler code path is the real one.
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def build_tiny_unet(cross_attention_dim: int = TINY_TEXT_WIDTH, block_out_channels=(16, 32), sample_size: int = 16):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(TINY_SEED)
    return UNet2DConditionModel(
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (len(block_out_channels) - 1),
        up_block_types=("UpBlock2D",) * (len(block_out_channels) - 1) + ("CrossAttnUpBlock2D",),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()


def build_tiny_pipeline(prediction_type: str = "epsilon", unet_channels=(16, 32)):
    """A StableDiffusionPipeline (SD 1.x layout) with tiny random seeded weights; 128-px images."""
    from diffusers import StableDiffusionPipeline

    tokenizer = build_tiny_tokenizer()
    return StableDiffusionPipeline(
        vae=build_tiny_vae(),
        text_encoder=build_tiny_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=build_tiny_unet(block_out_channels=unet_channels),
        scheduler=build_tiny_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


TINY_SDXL_WIDTHS: tuple[int, int] = (TINY_WIDTHS["tiny-sdxl"][0], TINY_WIDTHS["tiny-sdxl"][1])  # clip_l-, clip_g-like
TINY_SDXL_TIME_EMBED = 8


def build_tiny_sdxl_unet(text_widths: tuple[int, int] = TINY_SDXL_WIDTHS, pooled_width: int | None = None):
    """An SDXL-layout UNet: cross-attention over both encoders' concatenated states and
    "text_time" micro-conditioning (the pooled text embedding plus six size/crop numbers)."""
    from diffusers import UNet2DConditionModel

    pooled = pooled_width or text_widths[1]
    torch.manual_seed(TINY_SEED)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_SDXL_TIME_EMBED,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * TINY_SDXL_TIME_EMBED + pooled,
        cross_attention_dim=sum(text_widths),
        norm_num_groups=8,
    ).eval()


def build_tiny_sdxl_pipeline(prediction_type: str = "epsilon"):
    """A StableDiffusionXLPipeline with tiny random seeded weights; 128-px images.

    Two text encoders of different widths (32 and 64, like SDXL's 768 and 1280), the second
    with a projection (its pooled output feeds the UNet's micro-conditioning), so every SDXL
    code path that depends on the two widths being different is exercised.
    """
    from diffusers import StableDiffusionXLPipeline

    width_l, width_g = TINY_SDXL_WIDTHS
    tokenizer = build_tiny_tokenizer()
    tokenizer_2 = build_tiny_tokenizer()
    return StableDiffusionXLPipeline(
        vae=build_tiny_vae(),
        text_encoder=build_tiny_text_encoder(len(tokenizer), hidden_size=width_l),
        text_encoder_2=build_tiny_text_encoder(len(tokenizer_2), hidden_size=width_g, projection_dim=width_g),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=build_tiny_sdxl_unet(),
        scheduler=build_tiny_scheduler(prediction_type),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
