"""MicroAST (Wang et al., AAAI 2023): arbitrary style transfer in 0.47M parameters, without VGG.

The paper's idea: AdaIN-style transfer needs no VGG-19 at test time if two tiny encoders learn
the features it needs. A *content encoder* and a *style encoder* of the same shape (a 9x9
convolution, two depthwise-separable stride-2 stages and residual blocks; 1/4 of the image's
size, 64 channels) give two feature levels each. *Dual modulation* puts the style into the
decoder twice: feature modulation (AdaIN of the content features to the style features'
channel means and standard deviations) and filter modulation (a small modulator turns each
style level into one weight and one bias per channel that rescale the decoder's residual
convolutions: y = w * conv(x) + b * x). The decoder (two modulated residual blocks, then two
bilinear 2x upsamplings with depthwise-separable convolutions and a 9x9 convolution to RGB)
works on RGB in [0, 1] directly: no ImageNet normalisation.

Written from the paper's description and the published tensors' shapes (KEYS.txt); the module
and parameter names are the published ones, so MicroAST's four `*_iter_160000.pth.tar` files
load unchanged.

Controls as AdaIN has them. `alpha` interpolates the style code (statistics and modulation
signals) between the content photo's own code and the style's, as Ghiasi et al. interpolate
style vectors: the published code blends the features instead, but its filter modulation stays
at full strength, and at alpha 0.3-0.9 that gives values up to 11 on a [0, 1] image (measured on
chicago x la_muse); the content's own code reconstructs the photo (mean error 0.06). Several styles mix their statistics and modulation
signals by weight (which equals mixing AdaIN outputs); a two-region mask gives each region its
own statistics and its style's modulation; `--preserve-color` recolours the styles first.
Large images run in tiles with the whole image's statistics, so tiled equals one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from classic import limits, weights
from classic.color import check_mode, preserve_color_inputs, preserve_color_output
from classic.inputs import (
    check_mask_fits,
    check_styles,
    fit_content,
    mask_tensor,
    resize_short_side,
    style_blend_weights,
    style_label,
)
from classic.tiling import TileSize, pad_to_multiple, resolve_tile_size, run_tiled, tile_count
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.images import pil_to_tensor, tensor_to_pil

EPS = 1e-5  # added to the variance, as in AdaIN
STRIDE = 4  # image pixels per feature pixel (two stride-2 stages)
CHANNELS = 64
AUTO_TILE_PIXELS = 4_200_000
AUTO_TILE_SIZE = 1024
FLAG = "--microast-weights"
FILES = {
    "content_encoder": "content_encoder_iter_160000.pth.tar",
    "style_encoder": "style_encoder_iter_160000.pth.tar",
    "modulator": "modulator_iter_160000.pth.tar",
    "decoder": "decoder_iter_160000.pth.tar",
}
# Halos in the pixels of each stage's input: the content encoder reaches 4 (9x9) + 1 + 2 (the two
# stride-2 3x3s) + 16 (four 3x3s at 1/4) = 23 image pixels; a modulated residual block 2 feature
# pixels; the last stage 2 (residual) + ~1 (two bilinear upsamplings and 3x3s) + 1 (9x9 at 4x).
ENCODER_HALO = 24
BLOCK_HALO = 2
DECODER_HALO = 6


class Conv(nn.Module):
    """Reflection padding by half the kernel, then a convolution (optionally strided/grouped)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.pad = kernel // 2
        self.conv_layer = nn.Conv2d(cin, cout, kernel, stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return self.conv_layer(x)


class Residual(nn.Module):
    """x + conv2(relu(conv1(x))); with a style's (weight, bias) each convolution's output
    becomes w * conv(h) + b * h (the paper's filter modulation)."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.conv1 = Conv(channels, channels, 3)
        self.conv2 = Conv(channels, channels, 3)

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if weight is None or bias is None:
            return x + self.conv2(F.relu(self.conv1(x)))
        h = F.relu(weight * self.conv1(x) + bias * x)
        return x + weight * self.conv2(h) + bias * h


class Encoder(nn.Module):
    """Content or style encoder: [N,3,H,W] in [0,1] -> (features after enc1, after enc2), 1/4 size."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(
            Conv(3, 16, 9),
            nn.ReLU(),
            Conv(16, 32, 3, stride=2, groups=16),
            nn.ReLU(),
            Conv(32, 32, 1),
            nn.ReLU(),
            Conv(32, 64, 3, stride=2, groups=32),
            nn.ReLU(),
            Conv(64, 64, 1),
            nn.ReLU(),
            Residual(),
        )
        self.enc2 = nn.Sequential(Residual())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.enc1(x)
        return first, self.enc2(first)


class Modulator(nn.Module):
    """Per-channel filter weights and biases from the two style feature levels (depthwise 3x3, mean)."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("weight1", "bias1", "weight2", "bias2"):
            setattr(self, name, nn.Sequential(Conv(CHANNELS, CHANNELS, 3, groups=CHANNELS)))

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(w1, b1) from level 1 and (w2, b2) from level 2, each [N, 64, 1, 1]."""

        def pooled(head: nn.Module, f: torch.Tensor) -> torch.Tensor:
            return head(f).mean(dim=(2, 3), keepdim=True)

        return (
            pooled(self.weight1, feats[0]),
            pooled(self.bias1, feats[0]),
            pooled(self.weight2, feats[1]),
            pooled(self.bias2, feats[1]),
        )


class Decoder(nn.Module):
    """Two filter-modulated residual blocks, then 1/4 size -> full size RGB."""

    def __init__(self) -> None:
        super().__init__()
        self.dec1 = Residual()
        self.dec2 = Residual()
        self.dec3 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"),
            Conv(64, 32, 3, groups=32),
            nn.ReLU(),
            Conv(32, 32, 1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            Conv(32, 16, 3, groups=16),
            nn.ReLU(),
            Conv(16, 16, 1),
            nn.ReLU(),
            Conv(16, 3, 9),
        )


@dataclass
class MicroASTNetworks:
    content_encoder: Encoder
    style_encoder: Encoder
    modulator: Modulator
    decoder: Decoder
    source: str
    random_weights: bool = False

    def modules(self) -> list[nn.Module]:
        return [self.content_encoder, self.style_encoder, self.modulator, self.decoder]


def load_microast(
    folder: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> MicroASTNetworks:
    """The four published networks from `folder` (or the weights lookup), or seeded random ones."""
    nets = MicroASTNetworks(Encoder(), Encoder(), Modulator(), Decoder(), "")
    if random_weights:
        generator = torch.Generator().manual_seed(seed + 11)
        for module in nets.modules():
            for conv in (m for m in module.modules() if isinstance(m, nn.Conv2d)):
                fan_in = conv.weight[0].numel()
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                    conv.bias.zero_()
        nets.source, nets.random_weights = f"random (seed {seed})", True
    else:
        found = weights.find_set("microast", folder, flag=FLAG)
        if found is None:
            raise weights.missing_set("microast", FLAG)
        for (role, filename), module in zip(FILES.items(), nets.modules()):
            path = found / filename
            expected = f"MicroAST's {role.replace('_', ' ')} ({filename})"
            weights.load_into(module, weights.read_weights(path, expected), path, expected)
        nets.source = str(found)
    for module in nets.modules():
        module.requires_grad_(False).eval().to(device)
    return nets


# -- the transfer ---------------------------------------------------------------------------------


@dataclass
class StyleCode:
    """What the decoder needs from a style: the two levels' channel statistics and the modulation."""

    mean1: torch.Tensor
    std1: torch.Tensor
    mean2: torch.Tensor
    std2: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    @staticmethod
    def mix(codes: Sequence[StyleCode], weights_: Sequence[float]) -> StyleCode:
        fields = StyleCode.__dataclass_fields__
        return StyleCode(**{f: sum(w * getattr(c, f) for c, w in zip(codes, weights_)) for f in fields})


def mean_std(
    feat: torch.Tensor, mask: torch.Tensor | None = None, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel mean and std [N, C, 1, 1] (unbiased variance + eps), over `mask` (0/1) when given."""
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


def style_code(nets: MicroASTNetworks, style: torch.Tensor) -> StyleCode:
    feats = nets.style_encoder(style)
    w1, b1, w2, b2 = nets.modulator(feats)
    (m1, s1), (m2, s2) = mean_std(feats[0]), mean_std(feats[1])
    return StyleCode(m1, s1, m2, s2, w1, b1, w2, b2)


def _modulate(feat: torch.Tensor, codes: Sequence[StyleCode], level: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Feature modulation: AdaIN to the style's level-`level` statistics (per region under a mask)."""
    if mask is None:
        mean, std = mean_std(feat)
        code = codes[0]
        target = (feat - mean) / std * getattr(code, f"std{level}") + getattr(code, f"mean{level}")
    else:
        target = torch.zeros_like(feat)
        for region, code in zip((mask, 1.0 - mask), codes):
            if region.sum() < 1:
                continue
            mean, std = mean_std(feat, region)
            target += ((feat - mean) / std * getattr(code, f"std{level}") + getattr(code, f"mean{level}")) * region
    return target


def _filters(codes: Sequence[StyleCode], level: int, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The filter modulation for level `level`: per channel, or per pixel under a mask."""
    if mask is None:
        return getattr(codes[0], f"w{level}"), getattr(codes[0], f"b{level}")
    a, b = codes
    return (
        mask * getattr(a, f"w{level}") + (1 - mask) * getattr(b, f"w{level}"),
        mask * getattr(a, f"b{level}") + (1 - mask) * getattr(b, f"b{level}"),
    )


def _tiled(fn, x: torch.Tensor, tile: int | None, halo: int, scale: float, out_channels: int, align: int, tick):
    if tile is None:
        return fn(x)
    return run_tiled(fn, x, tile=tile, halo=halo, scale=scale, out_channels=out_channels, align=align, on_tile=tick)


@torch.no_grad()
def transfer(
    nets: MicroASTNetworks,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    weights_: Sequence[float],
    *,
    alpha: float = 1.0,
    mask: torch.Tensor | None = None,
    tile_size: TileSize = "auto",
    show_progress: bool = False,
) -> torch.Tensor:
    """[1,3,H,W] in [0,1] -> [1,3,H,W]: content encoder, dual modulation, decoder.

    Tiled in three stages so every statistic is the whole image's: the content encoder; the
    first modulated block; the second block and the upsampling decoder.
    """
    if not 0.0 <= alpha <= 1.0:
        raise SettingError("alpha", f"{{setting}} must be between 0 and 1, got {alpha}")
    height, width = content.shape[-2:]
    x, _ = pad_to_multiple(content, STRIDE)
    ph, pw = x.shape[-2:]
    tile = resolve_tile_size(tile_size, lambda: AUTO_TILE_SIZE if ph * pw > AUTO_TILE_PIXELS else None)
    feat_tile = None if tile is None else max(8, tile // STRIDE)
    codes = [style_code(nets, s) for s in styles]
    if alpha != 1.0:
        own = style_code(nets, content)
        codes = [StyleCode.mix([code, own], [alpha, 1.0 - alpha]) for code in codes]
    if mask is None:
        codes = [StyleCode.mix(codes, weights_)]
        feat_mask = None
    else:
        feat_mask = (F.avg_pool2d(pad_to_multiple(mask, STRIDE)[0], STRIDE) >= 0.5).to(x)
    bar = None
    if show_progress and tile is not None:
        from tqdm.auto import tqdm

        fh, fw = ph // STRIDE, pw // STRIDE
        total = (
            tile_count(ph, pw, tile, ENCODER_HALO, STRIDE)
            + tile_count(fh, fw, feat_tile, BLOCK_HALO)
            + tile_count(fh, fw, feat_tile, DECODER_HALO)
        )
        bar = tqdm(total=total, desc="MicroAST tiles", unit="tile")
    tick = bar.update if bar is not None else None

    feat = _tiled(lambda w: nets.content_encoder(w)[1], x, tile, ENCODER_HALO, 1 / STRIDE, CHANNELS, STRIDE, tick)
    h = _modulate(feat, codes, 2, feat_mask)
    del feat
    w2, b2 = _filters(codes, 2, feat_mask)
    w1, b1 = _filters(codes, 1, feat_mask)
    if feat_mask is not None:  # per-pixel modulation: carry it through the tiles as extra channels
        h = torch.cat([h, w2, b2], dim=1)

        def block1(window: torch.Tensor) -> torch.Tensor:
            f, w, b = window.split(CHANNELS, dim=1)
            return nets.decoder.dec1(f, w, b)
    else:

        def block1(window: torch.Tensor) -> torch.Tensor:
            return nets.decoder.dec1(window, w2, b2)

    h = _tiled(block1, h, feat_tile, BLOCK_HALO, 1, CHANNELS, 1, tick)
    h = _modulate(h, codes, 1, feat_mask)
    if feat_mask is not None:
        h = torch.cat([h, w1, b1], dim=1)

        def rest(window: torch.Tensor) -> torch.Tensor:
            f, w, b = window.split(CHANNELS, dim=1)
            return nets.decoder.dec3(nets.decoder.dec2(f, w, b))
    else:

        def rest(window: torch.Tensor) -> torch.Tensor:
            return nets.decoder.dec3(nets.decoder.dec2(window, w1, b1))

    out = _tiled(rest, h, feat_tile, DECODER_HALO, STRIDE, 3, 1, tick)
    if bar is not None:
        bar.close()
    return out[:, :, :height, :width]


def check_style_sizes(styles: list[Image.Image], style_size: int) -> None:
    """Each style is encoded whole at `style_size` px on its short side: refuse what cannot be."""
    limits.check_side_flag("style_size", style_size, allow_none=False)
    for i, style in enumerate(styles):
        limits.check_working_image(
            "microast",
            style_label(i, len(styles)),
            style.size,
            limits.scaled_short_side(style.size, style_size),
            f"{{setting}} {style_size} (its short side)",
            side="short",
            tiled=False,
            fix="crop it nearer to square or lower {setting}",
            setting="style_size",
        )


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
    microast_weights: str | Path | None = None,
    random_weights: bool = False,
    tile_size: TileSize = "auto",
    style_size: int = 512,
    color_mode: str = "histogram",
    seed: int = 0,
    nets: MicroASTNetworks | None = None,
    **unused: Any,
) -> Image.Image:
    """MicroAST with the project's common `stylize` signature; returns an RGB PIL image."""
    if unused:
        raise UserError(f"MicroAST has no option {sorted(unused)[0]!r}")
    check_styles(len(styles), style_weights, mask)
    blend = style_blend_weights(len(styles), style_weights)
    if preserve_color:
        check_mode(color_mode)
    content = fit_content(content, size, "microast", tile_size)
    check_style_sizes(styles, style_size)
    if mask is not None:
        check_mask_fits(mask, content)
    if nets is None:
        nets = load_microast(microast_weights, random_weights=random_weights, seed=seed, device=device)
    content_t = pil_to_tensor(content).to(device)
    style_ts = [pil_to_tensor(resize_short_side(s, style_size)).to(device) for s in styles]
    if preserve_color:
        content_in, style_ts = preserve_color_inputs(content_t, style_ts, color_mode)
    else:
        content_in = content_t
    mask_t = mask_tensor(mask, *content_t.shape[-2:]).to(device) if mask is not None else None
    out = transfer(
        nets, content_in, style_ts, blend, alpha=alpha, mask=mask_t, tile_size=tile_size, show_progress=show_progress
    ).clamp(0, 1)
    if preserve_color:
        out = preserve_color_output(out, content_t, color_mode)
    image = tensor_to_pil(out)
    image.info["microast_weights"] = nets.source
    image.info["random_weights"] = str(nets.random_weights)
    return image
