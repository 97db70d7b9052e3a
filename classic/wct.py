"""Universal style transfer (WCT, Li et al., NeurIPS 2017) with real autoencoders, levels 5 -> 1.

The method: an encoder up to reluK_1 and a decoder trained to invert it; the content features
are *whitened* (their covariance made the identity) and *coloured* with the style's covariance
(eigendecompositions of both, with a small epsilon on the diagonal), blended with the content
features by `alpha`, and decoded. Done coarse to fine (relu5_1, then 4_1, ..., 1_1 on the
previous level's output), the deep levels move the large structures of the style and the
shallow ones its fine texture and colours.

Two published weight sets, chosen by `--wct-weights`:
- `cd-wct` (default): Collaborative Distillation's 16x-compressed VGG-19 (Wang et al., CVPR 2020),
  one encoder and decoder per level for relu1_1..relu5_1: the complete cascade, fast enough for 4K
  on a CPU.
- `wct`: the "normalised" VGG-19 up to relu3_1 that WCT and AdaIN share, with WCT's own decoders
  for relu1_1, relu2_1 and relu3_1 (levels 3 -> 1; relu4_1 and relu5_1 are not published in a
  form that can reach this machine).
- a folder with either set's files.

Controls as AdaIN has them: several styles mix their WCT outputs by weight, a two-region mask
whitens and colours each region with its own statistics, `--preserve-color` recolours the
styles first (classic.color). Large images run in tiles (classic.tiling) with halos of the
networks' receptive radii, while the covariances come from the whole feature map, so a tiled
result equals the one-pass result within float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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

EPS = 1e-5  # added to both covariances' diagonals (PytorchWCT's choice)
EIGEN_FLOOR = 1e-5  # eigenvalues below this are dropped, as in the reference implementations
MULTIPLE = 16  # images are padded to this (four 2x poolings at relu5_1), so every level lines up
# Above AUTO_TILE_PIXELS the encoders and decoders run in AUTO_TILE_SIZE-px tiles. Per set: one
# untiled pass of the full-width VGG levels (`wct`) measured 2.8 GiB per Mpx above the baseline
# (bench/classic_real.py, 512x384), the 16x-compressed `cd-wct` 0.6 GiB per Mpx.
AUTO_TILE_PIXELS = {"cd-wct": 2_200_000, "wct": 500_000}
AUTO_TILE_SIZE = {"cd-wct": 1024, "wct": 512}
SETS = ("cd-wct", "wct")
DEFAULT_SET = "cd-wct"
FLAG = "--wct-weights"

POOL, UP = "pool", "up"
Layer = tuple[str, int, int]  # (state-dict name of a convolution, in, out), or (POOL|UP, 0, 0)


# -- networks -----------------------------------------------------------------------------------


class Chain(nn.Module):
    """A plain chain of reflection-padded 3x3 convolutions with ReLU, 2x2 max-pooling and nearest
    2x upsampling: both published WCT encoder/decoder families are exactly this.

    `input_conv`: the first layer is a 1x1 convolution without ReLU (RGB [0, 1] -> Caffe BGR).
    `final_relu`: whether the last convolution has a ReLU (Collaborative Distillation's decoders
    do, PytorchWCT's do not).
    """

    def __init__(self, layers: Sequence[Layer], *, input_conv: bool, final_relu: bool) -> None:
        super().__init__()
        self.layers = list(layers)
        self.final_relu = final_relu
        self.convs = nn.ModuleDict()
        for i, (name, cin, cout) in enumerate(self.layers):
            if name in (POOL, UP):
                continue
            self.convs[_module_key(name)] = nn.Conv2d(cin, cout, 1 if (input_conv and i == 0) else 3)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = max(i for i, (name, _, _) in enumerate(self.layers) if name not in (POOL, UP))
        for i, (name, _, _) in enumerate(self.layers):
            if name == POOL:
                x = F.max_pool2d(x, 2, 2)
            elif name == UP:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            else:
                conv = self.convs[_module_key(name)]
                if conv.kernel_size[0] == 1:
                    x = conv(x)
                    continue
                x = conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))
                if i != last or self.final_relu:
                    x = F.relu_(x)
        return x

    def stride(self) -> int:
        """Input pixels per output pixel (encoders); decoders report 1 / their upsampling."""
        pools = sum(name == POOL for name, _, _ in self.layers)
        return 2**pools

    def radius(self) -> float:
        """Input pixels each side that can reach one output pixel (what a tile's halo must cover)."""
        radius, scale = 0.0, 1.0  # scale: input pixels per current pixel
        for name, _, _ in self.layers:
            if name == POOL:
                radius += scale
                scale *= 2
            elif name == UP:
                radius += scale / 2  # nearest upsampling reads one input pixel per two outputs
                scale /= 2
            elif self.convs[_module_key(name)].kernel_size[0] == 3:
                radius += scale
        return radius

    def load_published(self, state: dict[str, torch.Tensor], path: Path, expected: str) -> None:
        """Load a published state dict (its own key names), checking keys and shapes exactly."""
        ours = {f"convs.{_module_key(k.rsplit('.', 1)[0])}.{k.rsplit('.', 1)[1]}": v for k, v in state.items()}
        weights.load_into(self, ours, path, expected)


def _module_key(name: str) -> str:
    return name.replace(".", "__")


def _cd_encoder_layers(level: int) -> list[Layer]:
    """Collaborative Distillation's 16x encoder for relu{level}_1 (its SmallEncoder{level}_16x)."""
    first = 24 if level == 1 else 16  # the level-1 student is wider (its only layer)
    blocks: list[list[Layer]] = [
        [("conv0", 3, 3), ("conv11", 3, first)],
        [("conv12", 16, 16), (POOL, 0, 0), ("conv21", 16, 32)],
        [("conv22", 32, 32), (POOL, 0, 0), ("conv31", 32, 64)],
        [("conv32", 64, 64), ("conv33", 64, 64), ("conv34", 64, 64), (POOL, 0, 0), ("conv41", 64, 128)],
        [("conv42", 128, 128), ("conv43", 128, 128), ("conv44", 128, 128), (POOL, 0, 0), ("conv51", 128, 128)],
    ]
    return [layer for block in blocks[:level] for layer in block]


def _mirror(encoder: list[Layer], rename: Callable[[str], str], out_last: int = 3) -> list[Layer]:
    """The decoder that mirrors `encoder` (without its 1x1 input layer): pools become upsamplings."""
    body = [layer for layer in encoder if layer[0] not in ("conv0", "conv1")]
    layers: list[Layer] = []
    for name, cin, cout in reversed(body):
        if name == POOL:
            layers.append((UP, 0, 0))
        else:
            layers.append((rename(name), cout, cin))
    name, cin, _ = layers[-1]
    layers[-1] = (name, cin, out_last)
    return layers


# The normalised VGG-19 to relu3_1 (LinearStyleTransfer's vgg_r31 keys conv1..conv6) and the names
# PytorchWCT's decoders give the mirrored layers (seq.conv3_1 ... seq.conv1_1).
_VGG_LAYERS: list[Layer] = [
    ("conv1", 3, 3),
    ("conv2", 3, 64),
    ("conv3", 64, 64),
    (POOL, 0, 0),
    ("conv4", 64, 128),
    ("conv5", 128, 128),
    (POOL, 0, 0),
    ("conv6", 128, 256),
]
_VGG_NAMES = {"conv2": "conv1_1", "conv3": "conv1_2", "conv4": "conv2_1", "conv5": "conv2_2", "conv6": "conv3_1"}
_VGG_LEVEL_END = {1: 2, 2: 5, 3: 8}  # layers of _VGG_LAYERS up to relu{level}_1


@dataclass
class Level:
    """One autoencoder of the cascade: features at relu{number}_1 and back."""

    number: int
    encoder: Chain
    decoder: Chain

    @property
    def stride(self) -> int:
        return self.encoder.stride()

    @property
    def channels(self) -> int:
        return [cout for name, _, cout in self.encoder.layers if name not in (POOL, UP)][-1]


@dataclass
class WCTNetworks:
    """A weight set: its levels (shallow to deep) and where they came from."""

    name: str
    levels: list[Level]
    source: str
    random_weights: bool = False

    def level(self, number: int) -> Level:
        for level in self.levels:
            if level.number == number:
                return level
        have = ", ".join(str(level.number) for level in self.levels)
        raise UserError(f"the {self.name} weights have levels {have}, not {number}")

    def to(self, device: str | torch.device) -> WCTNetworks:
        for level in self.levels:
            level.encoder.to(device)
            level.decoder.to(device)
        return self


def _cd_level(level: int) -> Level:
    enc = _cd_encoder_layers(level)
    return Level(
        level, Chain(enc, input_conv=True, final_relu=True), Chain(_mirror(enc, str), input_conv=False, final_relu=True)
    )


def _vgg_level(level: int, shared_encoder: Chain | None = None) -> Level:
    enc_layers = _VGG_LAYERS[: _VGG_LEVEL_END[level]]
    encoder = Chain(enc_layers, input_conv=True, final_relu=True)
    if shared_encoder is not None:  # the same weights, cut at this level
        for key, conv in encoder.convs.items():
            conv.load_state_dict(shared_encoder.convs[key].state_dict())
    decoder = Chain(_mirror(enc_layers, lambda n: f"seq.{_VGG_NAMES[n]}"), input_conv=False, final_relu=False)
    return Level(level, encoder, decoder)


def detect_set(folder: Path) -> str:
    """Which published set a folder holds, by its file names."""
    if (folder / "encoder1.pth").is_file() or (folder / "decoder1.pth").is_file():
        return "cd-wct"
    if (folder / "vgg_normalised_r31.pth").is_file():
        return "wct"
    raise UserError(
        f"{FLAG} {folder}: neither WCT weight set is in it (expected cd-wct's encoder1..5.pth and decoder1..5.pth, "
        "or wct's vgg_normalised_r31.pth and decoder_r11/r21/r31.pth.tar)"
    )


def resolve(choice: str | None) -> tuple[str, Path]:
    """(set name, folder) for `--wct-weights` (cd-wct, wct, a folder, or None for the default)."""
    choice = choice or DEFAULT_SET
    if choice in SETS:
        folder = weights.find_set(choice)
        if folder is None:
            raise weights.missing_set(choice, FLAG)
        return choice, folder
    folder = weights.find_set("wct", choice, flag=FLAG)
    assert folder is not None
    return detect_set(folder), folder


def load_wct(
    choice: str | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> WCTNetworks:
    """The networks of a weight set (see the module doc), or the same shapes with seeded random
    weights (a demo and a baseline for tests, labelled so)."""
    if random_weights:
        name = choice if choice in SETS else DEFAULT_SET
        levels = [_cd_level(k) for k in range(1, 6)] if name == "cd-wct" else [_vgg_level(k) for k in (1, 2, 3)]
        generator = torch.Generator().manual_seed(seed + 7)
        for level in levels:
            for chain in (level.encoder, level.decoder):
                for conv in chain.convs.values():
                    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                    with torch.no_grad():
                        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                        conv.bias.zero_()
        return WCTNetworks(name, levels, f"random (seed {seed})", random_weights=True).to(device)
    name, folder = resolve(choice)
    levels = []
    if name == "cd-wct":
        for k in range(1, 6):
            level = _cd_level(k)
            for chain, kind in ((level.encoder, "encoder"), (level.decoder, "decoder")):
                path = folder / f"{kind}{k}.pth"
                expected = (
                    f"Collaborative Distillation's 16x {kind} for relu{k}_1 ({kind}{k}.pth, state dict under 'model')"
                )
                state = weights.read_weights(path, expected, key="model")
                if kind == "encoder":  # the 1x1 heads only served the distillation loss
                    state = {k2: v for k2, v in state.items() if "_aux" not in k2}
                chain.load_published(state, path, expected)
            levels.append(level)
    else:
        path = folder / "vgg_normalised_r31.pth"
        expected = "the normalised VGG-19 up to relu3_1 (keys conv1..conv6)"
        full = Chain(_VGG_LAYERS, input_conv=True, final_relu=True)
        full.load_published(weights.read_weights(path, expected), path, expected)
        for k in (1, 2, 3):
            level = _vgg_level(k, full)
            dpath = folder / f"decoder_r{k}1.pth.tar"
            dexpected = f"WCT's decoder for relu{k}_1 (PytorchWCT keys seq.conv{k}_1 ... seq.conv1_1)"
            level.decoder.load_published(weights.read_weights(dpath, dexpected), dpath, dexpected)
            levels.append(level)
    return WCTNetworks(name, levels, str(folder)).to(device)


# -- the transform ------------------------------------------------------------------------------


CHUNK = 1 << 20  # feature columns per step: the transform never holds a second full feature map


def _stats(flat: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [C, 1] and covariance [C, C] (float64, + EPS on the diagonal) of the columns of
    `flat` [C, N] where `mask` [N] is 1, accumulated in chunks (a 4K relu1_1 map is 2 GiB)."""
    c, n = flat.shape
    total = torch.zeros(c, 1, dtype=torch.float64, device=flat.device)
    outer = torch.zeros(c, c, dtype=torch.float64, device=flat.device)
    count = 0.0
    for start in range(0, n, CHUNK):
        x = flat[:, start : start + CHUNK].double()
        if mask is not None:
            x = x[:, mask[start : start + CHUNK] > 0.5]
        count += x.shape[1]
        total += x.sum(dim=1, keepdim=True)
        outer += x @ x.T
    if count < 2:
        raise UserError("a mask region is too small for WCT at this level: make each region larger than a few pixels")
    mean = total / count
    cov = (outer - count * (mean @ mean.T)) / (count - 1)
    return mean, cov + EPS * torch.eye(c, dtype=torch.float64, device=flat.device)


def _matrix_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    keep = values > EIGEN_FLOOR
    values, vectors = values[keep], vectors[:, keep]
    return vectors @ torch.diag(values**power) @ vectors.T


def style_statistics(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C, 1], colouring matrix Cs^1/2 [C, C]) of one style's features [1, C, H, W]."""
    mean, cov = _stats(feat[0].reshape(feat.shape[1], -1))
    return mean, _matrix_power(cov, 0.5)


def _affine(
    content_mean: torch.Tensor,
    whiten: torch.Tensor,
    style_stats: Sequence[tuple[torch.Tensor, torch.Tensor]],
    weights_: Sequence[float],
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole transform as one affine map y = A x + b (float64): whitening, colouring, the
    styles' weighted mix and the alpha blend are all linear in the content features."""
    c = whiten.shape[0]
    a = torch.zeros(c, c, dtype=torch.float64, device=whiten.device)
    b = torch.zeros(c, 1, dtype=torch.float64, device=whiten.device)
    for weight, (s_mean, s_colour) in zip(weights_, style_stats):
        colour = s_colour @ whiten
        a += weight * colour
        b += weight * (s_mean - colour @ content_mean)
    eye = torch.eye(c, dtype=torch.float64, device=whiten.device)
    return alpha * a + (1.0 - alpha) * eye, alpha * b


def wct_features(
    content: torch.Tensor,
    style_stats: Sequence[tuple[torch.Tensor, torch.Tensor]],
    weights_: Sequence[float],
    alpha: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Whitened-and-coloured content features [1, C, H, W], mixed over styles, alpha-blended.

    With `mask` ([1, 1, H, W], 1 = first style) each region is whitened with its own statistics
    and coloured with its style's; without it the styles' outputs are mixed by `weights_`.
    Works in place on `content` (chunk by chunk), which it returns.
    """
    content = content.contiguous()
    c = content.shape[1]
    flat = content[0].reshape(c, -1)
    if mask is None:
        mean, cov = _stats(flat)
        maps = [(_affine(mean, _matrix_power(cov, -0.5), style_stats, weights_, alpha), None)]
    else:
        m = mask.reshape(-1).to(flat)
        maps = []
        for region, stats in zip((m, 1.0 - m), style_stats):
            if region.sum() < 2:
                continue
            mean, cov = _stats(flat, region)
            maps.append((_affine(mean, _matrix_power(cov, -0.5), [stats], [1.0], alpha), region))
    for start in range(0, flat.shape[1], CHUNK):
        x = flat[:, start : start + CHUNK]
        y = torch.zeros_like(x)
        for (a, b), region in maps:
            part = a.to(x) @ x + b.to(x)
            y += part if region is None else part * region[start : start + CHUNK]
        x.copy_(y)
    return content


# -- running the networks, whole or tiled ----------------------------------------------------------


def encode(level: Level, image: torch.Tensor, tile_size: int | None = None, on_tile=None) -> torch.Tensor:
    if tile_size is None:
        return level.encoder(image)
    return run_tiled(
        level.encoder,
        image,
        tile=tile_size,
        halo=math.ceil(level.encoder.radius()),
        scale=1 / level.stride,
        out_channels=level.channels,
        align=max(level.stride, 1),
        on_tile=on_tile,
    )


def decode(level: Level, feat: torch.Tensor, tile_size: int | None = None, on_tile=None) -> torch.Tensor:
    if tile_size is None:
        return level.decoder(feat)
    return run_tiled(
        level.decoder,
        feat,
        tile=max(1, tile_size // level.stride),
        halo=math.ceil(level.decoder.radius()) + 1,
        scale=level.stride,
        out_channels=3,
        on_tile=on_tile,
    )


def reconstruct(nets: WCTNetworks, image: torch.Tensor, level: int) -> torch.Tensor:
    """Encode then decode at one level: how well the autoencoder inverts its features (PSNR checks)."""
    padded, (h, w) = pad_to_multiple(image, MULTIPLE)
    with torch.no_grad():
        return decode(nets.level(level), encode(nets.level(level), padded))[:, :, :h, :w]


def auto_tile_size(nets: WCTNetworks, pixels: int) -> int | None:
    """None (one pass) up to the set's AUTO_TILE_PIXELS, else its AUTO_TILE_SIZE."""
    kind = "wct" if nets.name == "wct" else "cd-wct"
    return AUTO_TILE_SIZE[kind] if pixels > AUTO_TILE_PIXELS[kind] else None


def _tile_total(nets: WCTNetworks, levels: Sequence[int], h: int, w: int, tile: int) -> int:
    total = 0
    for number in levels:
        lv = nets.level(number)
        s = lv.stride
        total += tile_count(h, w, tile, math.ceil(lv.encoder.radius()), s)
        total += tile_count(h // s, w // s, max(1, tile // s), math.ceil(lv.decoder.radius()) + 1)
    return total


def parse_levels(text: str | Sequence[int] | None, nets: WCTNetworks) -> list[int]:
    """Levels to run, deepest first: all the set has (None), or e.g. '3,2,1'."""
    have = [level.number for level in nets.levels]
    if text is None:
        return sorted(have, reverse=True)
    if isinstance(text, str):
        try:
            wanted = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise SettingError(
                "wct_levels", f"{{setting}} {text!r}: give level numbers separated by commas, like 5,4,3,2,1"
            ) from None
    else:
        wanted = [int(v) for v in text]
    bad = [k for k in wanted if k not in have]
    if not wanted or bad:
        shown = text if isinstance(text, str) else ",".join(map(str, wanted))
        raise UserError(
            f"--wct-levels {shown}: the {nets.name} weights have levels {', '.join(map(str, have))}"
            + (f", not {bad[0]}" if bad else "")
        )
    return wanted


@torch.no_grad()
def transfer(
    nets: WCTNetworks,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    weights_: Sequence[float],
    *,
    alpha: float = 1.0,
    mask: torch.Tensor | None = None,
    levels: Sequence[int] | None = None,
    tile_size: TileSize = "auto",
    show_progress: bool = False,
) -> torch.Tensor:
    """The cascade on tensors: [1,3,H,W] in [0,1] -> [1,3,H,W]; each level restyles the previous output."""
    if not 0.0 <= alpha <= 1.0:
        raise SettingError("alpha", f"{{setting}} must be between 0 and 1, got {alpha}")
    order = parse_levels(levels, nets)
    height, width = content.shape[-2:]
    x, _ = pad_to_multiple(content, MULTIPLE)
    ph, pw = x.shape[-2:]
    tile = resolve_tile_size(tile_size, lambda: auto_tile_size(nets, ph * pw))
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        total = _tile_total(nets, order, ph, pw, tile) if tile is not None else len(order)
        bar = tqdm(
            total=total, desc="WCT " + ("tiles" if tile is not None else "levels"), unit="tile" if tile else "level"
        )
    tick = bar.update if (bar is not None and tile is not None) else None
    mask_padded = pad_to_multiple(mask, MULTIPLE)[0] if mask is not None else None
    for number in order:
        level = nets.level(number)
        stats = [style_statistics(level.encoder(s)) for s in styles]
        feat = encode(level, x, tile, on_tile=tick)
        feat_mask = None
        if mask_padded is not None:
            pooled = F.avg_pool2d(mask_padded, level.stride) if level.stride > 1 else mask_padded
            feat_mask = (pooled >= 0.5).to(feat)
        target = wct_features(feat, stats, weights_, alpha, feat_mask)
        del feat
        x = decode(level, target, tile, on_tile=tick)
        del target
        if bar is not None and tile is None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x[:, :, :height, :width]


def footprint_key(choice: str | Path | None, nets: WCTNetworks | None = None) -> str:
    """classic.limits' entry for a weight set: "wct" (cd-wct, the default) or "wct-vgg" (the
    full-width `wct` set, about twice the memory per pixel even in tiles)."""
    if nets is not None:
        name = nets.name
    elif choice is None or str(choice) in SETS:
        name = str(choice or DEFAULT_SET)
    else:
        folder = Path(choice)
        name = detect_set(folder) if folder.is_dir() else DEFAULT_SET
    return "wct-vgg" if name == "wct" else "wct"


def check_style_sizes(styles: list[Image.Image], style_size: int, key: str = "wct") -> None:
    """Each style is encoded whole at `style_size` px on its short side: refuse what cannot be."""
    limits.check_side_flag("style_size", style_size, allow_none=False)
    for i, style in enumerate(styles):
        limits.check_working_image(
            key,
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
    wct_weights: str | Path | None = None,
    levels: str | Sequence[int] | None = None,
    random_weights: bool = False,
    tile_size: TileSize = "auto",
    style_size: int = 512,
    color_mode: str = "histogram",
    seed: int = 0,
    nets: WCTNetworks | None = None,
    **unused: Any,
) -> Image.Image:
    """WCT with the project's common `stylize` signature; returns an RGB PIL image.

    levels: which cascade levels, deepest first (default: all the weight set has). style_size:
    the styles' short side (512, as for AdaIN). `nets` lets a caller reuse loaded networks.
    """
    if unused:
        raise UserError(f"WCT has no option {sorted(unused)[0]!r}")
    check_styles(len(styles), style_weights, mask)
    blend = style_blend_weights(len(styles), style_weights)
    if preserve_color:
        check_mode(color_mode)
    key = footprint_key(wct_weights, nets)
    content = fit_content(content, size, key, tile_size)
    check_style_sizes(styles, style_size, key)
    if mask is not None:
        check_mask_fits(mask, content)
    if nets is None:
        nets = load_wct(
            None if random_weights else wct_weights, random_weights=random_weights, seed=seed, device=device
        )
    order = parse_levels(levels, nets)
    content_t = pil_to_tensor(content).to(device)
    style_ts = [pil_to_tensor(resize_short_side(s, style_size)).to(device) for s in styles]
    if preserve_color:
        content_in, style_ts = preserve_color_inputs(content_t, style_ts, color_mode)
    else:
        content_in = content_t
    mask_t = mask_tensor(mask, *content_t.shape[-2:]).to(device) if mask is not None else None
    out = transfer(
        nets,
        content_in,
        style_ts,
        blend,
        alpha=alpha,
        mask=mask_t,
        levels=order,
        tile_size=tile_size,
        show_progress=show_progress,
    ).clamp(0, 1)
    if preserve_color:
        out = preserve_color_output(out, content_t, color_mode)
    image = tensor_to_pil(out)
    image.info["wct_weights"] = f"{nets.name} ({nets.source})"
    image.info["wct_levels"] = ",".join(map(str, order))
    image.info["random_weights"] = str(nets.random_weights)
    return image
