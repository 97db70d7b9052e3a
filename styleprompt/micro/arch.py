"""The micro model's parts, as plain configs (nanoGPT-style: the numbers are the documentation).

Why these sizes: the whole model must train from nothing on a 2-core CPU in well under three
hours and ship in under 25 MB. 64-px pictures, a VAE with a scale factor of 4 and 16 latent
channels (16x16x16 latents, a 3x compression: with 8 channels the reconstructions lost the
painted textures, and the style judge's retrieval fell from 1.0 to 0.47 on them), a three-level UNet with attention on the two coarser levels (8x8 and 4x4: attention
at 16x16 measured 1.6x the step time for little gain in a world of single objects), and a two-layer CLIP
text encoder whose word table holds the world's words whole.
"""

from __future__ import annotations

import torch

from styleprompt.diffusion.templates import FILEWORDS_TEMPLATES, STYLE_TEMPLATES

RESOLUTION = 64
LATENT_CHANNELS = 16
TEXT_WIDTH = 128
MAX_TOKENS = 32  # the longest prompt (a 16-vector token in a template) fits; CLIP's 77 would triple the cost
VOCAB_MERGES = 1200

_EXTRA_WORDS = (
    "painting art artwork style drawing illustration picture rendering rendition photo photograph "
    "watercolor oil canvas brush strokes colorful dark bright night sky sea water grass"
)


def vocabulary_words() -> list[str]:
    """Every word the micro model is trained on: templates, classes, style words, art words."""
    from styleprompt.micro import style_words
    from styleprompt.micro.world import CLASSES

    words: list[str] = []
    for template in STYLE_TEMPLATES + FILEWORDS_TEMPLATES:
        text = template.replace("{token}", " ").replace("{class}", " ").replace("[filewords]", " ")
        words += [w.strip(".,") for w in text.split()] * 20
    words += CLASSES * 40 + style_words() * 40 + _EXTRA_WORDS.split() * 5
    return [w for w in words if w]


def build_tokenizer():
    """A CLIPTokenizer (CLIP's layout and specials) whose merges keep every world word whole."""
    from transformers import CLIPTokenizer

    from styleprompt.diffusion.tiny import _learned_merges, vocab_from_merges

    vocab, merges = vocab_from_merges(_learned_merges(VOCAB_MERGES, vocabulary_words()))
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], model_max_length=MAX_TOKENS)


def build_text_encoder(vocab_size: int):
    """The tiny model's two-layer CLIP text encoder at the micro model's width and prompt length;
    its weights come from the caller's random state (the build seeds once, before it)."""
    from styleprompt.diffusion.tiny import build_tiny_text_encoder

    return build_tiny_text_encoder(vocab_size, TEXT_WIDTH, max_positions=MAX_TOKENS, seed=None)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=[16, 32, 64],
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        mid_block_add_attention=False,
        sample_size=RESOLUTION,
    )


DECODER_CHANNELS = (32, 64, 128)


def build_wide_decoder_vae(trained):
    """The trained VAE's encoder with a wider decoder (diffusers' AsymmetricAutoencoderKL).

    Why: the decoder, not the latents, limited what the model could paint. Through the
    16/32/64-channel decoder the style judge found the right painting for 0.80 of renderer pictures
    (0.07-0.18 for la_muse, scene_de_rue, the_scream), while the 16x16x16 latents carry
    three times fewer numbers than the picture: room enough. A wider decoder is what Zhu et al.
    (2023, "Designing a Better Asymmetric VQGAN") did for Stable Diffusion, and diffusers ships it.
    The encoder's weights are copied, so every latent (and the UNet trained on them) is unchanged;
    its mid-block attention, which AsymmetricAutoencoderKL always builds, gets a zero output
    projection and so adds exactly nothing.
    """
    from diffusers import AsymmetricAutoencoderKL

    config = trained.config
    vae = AsymmetricAutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=tuple(config.down_block_types),
        down_block_out_channels=tuple(config.block_out_channels),
        layers_per_down_block=config.layers_per_block,
        up_block_types=("UpDecoderBlock2D",) * len(DECODER_CHANNELS),
        up_block_out_channels=DECODER_CHANNELS,
        layers_per_up_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
        scaling_factor=config.scaling_factor,
    )
    encoder = {k: v for k, v in trained.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    missing, unexpected = vae.load_state_dict(encoder, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("encoder.") and ".attentions." not in k]
    attention = vae.encoder.mid_block.attentions[0]
    torch.nn.init.zeros_(attention.to_out[0].weight)
    torch.nn.init.zeros_(attention.to_out[0].bias)
    return vae


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION // 4,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(48, 96, 128),
        layers_per_block=1,
        norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
    )


def build_scheduler():
    """SD 1.x's noise schedule (scaled linear, 1000 steps, epsilon), sampled with DDIM."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def assemble(vae, text_encoder, tokenizer, unet):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def parameter_counts(pipe) -> dict[str, int]:
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("vae", "text_encoder", "unet")}
