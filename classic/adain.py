"""AdaIN (Huang & Belongie, 2017): arbitrary style transfer in one forward pass.

The method: encode content and style with VGG-19 up to relu4_1, give the content features the
style's channel-wise mean and std (adaptive instance normalisation), decode back to pixels.
Everything here follows pytorch-AdaIN (naoto0804) and AdaIN-style (xunhuang1995) so that their
widely shared `vgg_normalised.pth` and `decoder.pth` load unchanged: the decoder's
`nn.Sequential` has their exact indices, statistics use the unbiased variance plus eps=1e-5,
several styles are interpolated by mixing their AdaIN outputs, and `--preserve-color`
recolours the style to the content first.

Large images: the encoder and decoder run in overlapping tiles (classic.tiling) while the
statistics come from the whole feature map, so a 4K image gives the same result as an
untiled run (within float rounding) in bounded memory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from classic import limits
from classic.color import check_mode, preserve_color_inputs, preserve_color_output
from classic.inputs import (
    check_encoded_style_sizes,
    check_mask_fits,
    check_styles,
    fit_content,
    mask_tensor,
    resize_short_side,
    style_blend_weights,
)
from classic.tiling import TileSize, pad_to_multiple, resolve_tile_size, run_tiled, tile_count
from classic.vgg import VGG19Features, load_vgg19, read_state_dict, receptive_radius
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.images import pil_to_tensor, tensor_to_pil

log = logging.getLogger(__name__)

ENCODER_LAYER = "relu4_1"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")  # the training loss's style statistics
EPS = 1e-5  # added to the variance, as in both reference implementations
STRIDE = 8  # pixels per relu4_1 feature
DECODER_FORMAT = "classic-adain-decoder"
# Above this many pixels the image is processed in tiles (about 1.5 GiB peak on CPU untiled).
AUTO_TILE_PIXELS = 2_200_000
AUTO_TILE_SIZE = 1024  # image pixels per tile core
DECODER_HALO = 6  # relu4_1 pixels of context per decoder tile (its receptive radius is 4)
DECODER_OVERLAP = 4  # relu4_1 pixels cross-faded between decoder tiles


def build_decoder() -> nn.Sequential:
    """The AdaIN decoder, a mirror of VGG up to relu4_1 with nearest upsampling.

    Indices match pytorch-AdaIN's `decoder` exactly (reflection pad, conv, ReLU, ...), so its
    decoder.pth state dict loads as is: convolutions sit at 1, 5, 8, 11, 14, 18, 21, 25, 28.
    """
    layers: list[nn.Module] = []

    def conv(cin: int, cout: int, relu: bool = True) -> None:
        layers.extend([nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)])
        if relu:
            layers.append(nn.ReLU())

    conv(512, 256)
    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
    for _ in range(3):
        conv(256, 256)
    conv(256, 128)
    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
    conv(128, 128)
    conv(128, 64)
    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
    conv(64, 64)
    conv(64, 3, relu=False)
    return nn.Sequential(*layers)


def load_decoder(
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Sequential:
    """The decoder from pytorch-AdaIN's decoder.pth, our .safetensors, or seeded random weights."""
    decoder = build_decoder()
    decoder.random_weights = False
    decoder.encoder_layout = None  # which VGG layout it was trained with, when the file says
    if weights is not None and random_weights:
        raise UserError("give either --decoder-weights or --random-weights, not both")
    if random_weights:
        generator = torch.Generator().manual_seed(seed + 1)
        for module in decoder:
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * 9
                with torch.no_grad():
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                    module.bias.zero_()
        decoder.random_weights = True
        decoder.source = f"random (seed {seed})"
    elif weights is None:
        raise UserError(
            "AdaIN needs decoder weights: pass --decoder-weights decoder.pth (pytorch-AdaIN's, with "
            "--vgg-weights vgg_normalised.pth) or one trained by python -m classic.train_adain, or --random-weights for a demo"
        )
    else:
        state = read_state_dict(weights, "decoder weights")
        state = {k.removeprefix("decoder."): v for k, v in state.items()}
        try:
            decoder.load_state_dict(state, strict=True)
        except RuntimeError:
            raise UserError(
                f"{weights}: not an AdaIN decoder (expected pytorch-AdaIN's decoder keys 1.weight ... 28.bias)"
            ) from None
        decoder.source = str(weights)
        if str(weights).endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(weights), "pt") as handle:
                decoder.encoder_layout = (handle.metadata() or {}).get("encoder_layout")
        else:
            decoder.encoder_layout = "adain"  # pytorch-AdaIN's decoders were trained on vgg_normalised
    decoder.requires_grad_(False)
    decoder.eval()
    return decoder.to(device)


def save_decoder(
    decoder: nn.Module, path: str | Path, encoder_layout: str, extra: dict[str, str] | None = None
) -> Path:
    """Our decoder format: the pytorch-AdaIN keys in a .safetensors file, plus which VGG it needs."""
    from safetensors.torch import save_file

    from styleprompt.plumbing.files import atomic_path

    metadata = {"format": DECODER_FORMAT, "encoder_layout": encoder_layout, **(extra or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def calc_mean_std(
    feat: torch.Tensor, eps: float = EPS, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel mean and std over space, [N, C, 1, 1] each (unbiased variance + eps, as published).

    With `mask` ([N or 1, 1, H, W] of 0/1) only the masked positions count.
    """
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)
    if mask is None:
        var, mean = torch.var_mean(flat, dim=2)
    else:
        m = mask.reshape(mask.shape[0], 1, -1).to(feat)
        count = m.sum(dim=2).clamp_min(2.0)
        mean = (flat * m).sum(dim=2) / count
        var = (((flat - mean[..., None]) ** 2) * m).sum(dim=2) / (count - 1)
    return mean.reshape(n, c, 1, 1), (var + eps).sqrt().reshape(n, c, 1, 1)


def adain(
    content_feat: torch.Tensor,
    style_mean: torch.Tensor,
    style_std: torch.Tensor,
    content_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Content features renormalised to the style's statistics: (c - mu_c) / sigma_c * sigma_s + mu_s.

    `content_stats` lets a caller supply statistics of the whole image when `content_feat` is a
    part of it, or of a masked region.
    """
    mean, std = content_stats if content_stats is not None else calc_mean_std(content_feat)
    return (content_feat - mean) / std * style_std + style_mean


def blend_features(
    content_feat: torch.Tensor,
    style_stats: Sequence[tuple[torch.Tensor, torch.Tensor]],
    weights: Sequence[float],
    alpha: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decoder's input: AdaIN targets mixed by weight (or placed by mask), then alpha-blended.

    Interpolation mixes the AdaIN outputs, as pytorch-AdaIN does. With a mask (relu4_1 size,
    1 = first style) each region is normalised with its own statistics, as AdaIN-style's
    spatial control does. alpha = 0 returns the content features unchanged.
    """
    if not limits.BOUNDS["alpha"].contains(alpha):
        raise SettingError("alpha", f"{{setting}} must be between 0 and 1, got {alpha}")
    if mask is not None:
        regions = [mask, 1.0 - mask]
        target = torch.zeros_like(content_feat)
        for region, (s_mean, s_std) in zip(regions, style_stats):
            if region.sum() < 1:
                continue
            stats = calc_mean_std(content_feat, mask=region)
            target += adain(content_feat, s_mean, s_std, stats) * region
    else:
        stats = calc_mean_std(content_feat)
        target = torch.zeros_like(content_feat)
        for w, (s_mean, s_std) in zip(weights, style_stats):
            target += w * adain(content_feat, s_mean, s_std, stats)
    if alpha == 1.0:
        return target
    return alpha * target + (1.0 - alpha) * content_feat


def auto_tile_size(height: int, width: int) -> int | None:
    return AUTO_TILE_SIZE if height * width > AUTO_TILE_PIXELS else None


def encode(vgg: VGG19Features, image: torch.Tensor, tile_size: int | None = None, on_tile=None) -> torch.Tensor:
    """relu4_1 features of an image whose sides divide by 8, tiled when `tile_size` is set."""
    if tile_size is None:
        return vgg(image, [ENCODER_LAYER])[ENCODER_LAYER]
    return run_tiled(
        lambda window: vgg(window, [ENCODER_LAYER])[ENCODER_LAYER],
        image,
        tile=tile_size,
        halo=receptive_radius(ENCODER_LAYER),
        scale=1 / STRIDE,
        out_channels=512,
        align=STRIDE,
        on_tile=on_tile,
    )


def decode(decoder: nn.Module, feat: torch.Tensor, tile_size: int | None = None, on_tile=None) -> torch.Tensor:
    """Pixels from relu4_1 features; `tile_size` is in image pixels like `encode`'s."""
    if tile_size is None:
        return decoder(feat)
    return run_tiled(
        decoder,
        feat,
        tile=max(1, tile_size // STRIDE),
        halo=DECODER_HALO,
        overlap=DECODER_OVERLAP,
        scale=STRIDE,
        out_channels=3,
        on_tile=on_tile,
    )


@torch.no_grad()
def transfer(
    vgg: VGG19Features,
    decoder: nn.Module,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    alpha: float = 1.0,
    mask: torch.Tensor | None = None,
    tile_size: TileSize = "auto",
    show_progress: bool = False,
) -> torch.Tensor:
    """The whole method on tensors: [1,3,H,W] in [0,1] -> [1,3,H,W] (unclamped decoder output).

    `mask` is [1,1,H,W] at the content's size. Tiling (tile_size: see `classic.tiling.TileSize`)
    changes memory, not the result: statistics are always those of the whole feature map.
    """
    height, width = content.shape[-2:]
    padded, _ = pad_to_multiple(content, STRIDE)
    tile_size = resolve_tile_size(tile_size, lambda: auto_tile_size(*padded.shape[-2:]))
    bar = None
    if show_progress and tile_size is not None:
        from tqdm.auto import tqdm

        ph, pw = padded.shape[-2:]
        total = tile_count(ph, pw, tile_size, receptive_radius(ENCODER_LAYER), STRIDE) + tile_count(
            ph // STRIDE, pw // STRIDE, max(1, tile_size // STRIDE), DECODER_HALO + DECODER_OVERLAP, 1
        )
        bar = tqdm(total=total, desc="AdaIN tiles", unit="tile")
    tick = bar.update if bar is not None else None
    style_stats = [calc_mean_std(encode(vgg, s)) for s in styles]
    content_feat = encode(vgg, padded, tile_size, on_tile=tick)
    feat_mask = None
    if mask is not None:
        mask_padded, _ = pad_to_multiple(mask, STRIDE)
        pooled = torch.nn.functional.avg_pool2d(mask_padded, STRIDE)
        feat_mask = (pooled >= 0.5).to(content_feat)
    target = blend_features(content_feat, style_stats, weights, alpha, feat_mask)
    del content_feat
    out = decode(decoder, target, tile_size, on_tile=tick)
    if bar is not None:
        bar.close()
    return out[:, :, :height, :width]


def check_style_sizes(styles: list[Image.Image], style_size: int) -> None:
    """Each style is encoded whole at `style_size` px on its short side: refuse what cannot be."""
    check_encoded_style_sizes("adain", styles, style_size)


def stylize(
    content: Image.Image,
    styles: list[Image.Image],
    *,
    style_weights: list[float] | None = None,
    alpha: float = 1.0,
    preserve_color: bool = False,
    mask: Image.Image | None = None,
    size: int | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    vgg_weights: str | Path | None = None,
    decoder_weights: str | Path | None = None,
    random_weights: bool = False,
    tile_size: TileSize = "auto",
    style_size: int = 512,
    color_mode: str = "histogram",
    seed: int = 0,
    vgg: VGG19Features | None = None,
    decoder: nn.Module | None = None,
    **unused: Any,
) -> Image.Image:
    """AdaIN with the project's common `stylize` signature; returns an RGB PIL image.

    size: long side of the output (None: the content's size). style_size: shorter side of each
    style image (pytorch-AdaIN's default 512). color_mode: how --preserve-color works
    ('histogram', pytorch-AdaIN's choice, or 'luminance'). `vgg`/`decoder` let a caller reuse
    loaded networks across many images.
    """
    if unused:
        raise UserError(f"AdaIN has no option {sorted(unused)[0]!r}")
    check_styles(len(styles), style_weights, mask)
    weights = style_blend_weights(len(styles), style_weights)
    if preserve_color:
        check_mode(color_mode)
    content = fit_content(content, size, "adain", tile_size)
    check_style_sizes(styles, style_size)
    if mask is not None:
        check_mask_fits(mask, content)
    if decoder is None:  # first: a missing decoder should fail before a VGG download
        decoder = load_decoder(decoder_weights, random_weights=random_weights, seed=seed, device=device)
    if vgg is None:
        vgg = load_vgg19(vgg_weights, random_weights=random_weights, device=device, seed=seed)
    if decoder.encoder_layout is not None and decoder.encoder_layout != vgg.layout:
        log.warning(
            "this decoder was trained with a %s-layout VGG but the encoder is %s-layout: expect poor results "
            "(pytorch-AdaIN's decoder.pth needs --vgg-weights vgg_normalised.pth)",
            decoder.encoder_layout,
            vgg.layout,
        )
    content_t = pil_to_tensor(content).to(device)
    style_ts = [pil_to_tensor(resize_short_side(s, style_size)).to(device) for s in styles]
    if preserve_color:
        content_in, style_ts = preserve_color_inputs(content_t, style_ts, color_mode)
    else:
        content_in = content_t
    mask_t = mask_tensor(mask, *content_t.shape[-2:]).to(device) if mask is not None else None
    out = transfer(
        vgg,
        decoder,
        content_in,
        style_ts,
        weights,
        alpha=alpha,
        mask=mask_t,
        tile_size=tile_size,
        show_progress=show_progress,
    )
    out = out.clamp(0, 1)
    if preserve_color:
        out = preserve_color_output(out, content_t, color_mode)
    image = tensor_to_pil(out)
    image.info["random_weights"] = str(bool(vgg.random_weights or decoder.random_weights))
    return image
