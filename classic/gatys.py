"""Gatys, Ecker & Bethge (2016): style transfer by optimising the pixels of an image.

The image is optimised so that its VGG-19 features at one deep layer match the content photo's
(content loss) and the Gram matrices of its features at several layers match the style
image's (style loss). Options follow jcjohnson/neural-style: content/style layers and weights,
TV weight, init from content/noise/style, L-BFGS or Adam, several styles with blend weights,
original colours, plus coarse-to-fine scales, a two-region mask and tiling for 4K images.

Loss normalisation (what the evaluation layer imports; the same as neural-style and the
PyTorch tutorial, so their weights mean the same here):
  gram_matrix(F) = F F^T / (C H W)  for features F of C channels and H x W positions;
  style_loss    = sum_l w_l * mean_ij (G_l - A_l)_ij^2        (mean over the C x C entries);
  content_loss  = mean (F - P)^2                              (mean over C x H x W).
Gatys et al. write E_l = 1/(4 C^2 M^2) sum (G' - A')^2 with unnormalised Grams G' and M = HW;
with G = G'/(C M) that is E_l = (C^2 / 4) * mean (G - A)^2, and their content loss is
1/2 sum (F - P)^2 = (C M / 2) * mean (F - P)^2: the same losses up to a constant per layer.

Why the tiled path: at 3840x2160 one forward/backward through VGG-19 needs well over 8 GiB.
The Gram matrix is global, so the loss's gradient is computed in two passes over overlapping
tiles: the first accumulates every layer's Gram over the whole image, the second
back-propagates, tile by tile, a surrogate whose gradient is the true one (dL/dG is fixed once
G is known). Halos cover the receptive field, so the gradient is exact, not approximate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from classic import limits
from classic.color import check_mode, preserve_color_inputs, preserve_color_output
from classic.inputs import check_mask_fits, check_styles, fit_content, mask_tensor, style_blend_weights, style_label
from classic.tiling import Tile, TileSize, plan_tiles, resolve_tile_size
from classic.vgg import LAYER_INDEX, VGG19Features, check_layer_names, layer_stride, load_vgg19, receptive_radius
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.images import pil_to_tensor, save_image, tensor_to_pil

DEFAULT_CONTENT_LAYER = "relu4_2"
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# With only VGG-19's conv1-3 weights (classic.weights' vgg19-conv1-3 set): the same choice one block
# shallower, used when the caller names no layers (compare, the app); named deep layers are an error.
SHALLOW_CONTENT_LAYER = "relu3_2"
SHALLOW_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1")
CONTENT_WEIGHT = 1.0
STYLE_WEIGHT = 1e6  # the PyTorch tutorial's value for torchvision's VGG-19 with this normalisation
TV_WEIGHT = 0.0
ITERATIONS = 300
# --style-scale: below 0.1 the style is a thumbnail of a few pixels; above 4 its Gram pass costs
# 16x the output's pixels (checked against the memory budget too).
MIN_STYLE_SCALE, MAX_STYLE_SCALE = 0.1, 4.0
ADAM_LR = 10 / 255  # neural-style's -learning_rate 10 on 0-255 pixels, on our 0-1 pixels
AUTO_TILE_PIXELS = 1024 * 1024  # above this the loss is computed in tiles (about 3 GiB untiled)
AUTO_TILE_SIZE = 512
LBFGS_MEMORY_BYTES = 2 * 1024**3  # L-BFGS history is capped to this much memory at large sizes


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, C] Gram matrices divided by C*H*W (neural-style's normalisation)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def style_loss(
    features: torch.Tensor | Mapping[str, torch.Tensor],
    target_grams: torch.Tensor | Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Sum over layers of w_l * mean((gram_matrix(F_l) - A_l)^2); equal weights of 1 by default.

    `features` and `target_grams` are both tensors (one layer) or both {layer: tensor}.
    """
    if isinstance(features, torch.Tensor):
        return F.mse_loss(gram_matrix(features), target_grams.expand(features.shape[0], -1, -1))
    total = torch.zeros((), device=next(iter(features.values())).device)
    for name, target in target_grams.items():
        weight = 1.0 if layer_weights is None else layer_weights[name]
        total = total + weight * style_loss(features[name], target)
    return total


def content_loss(
    features: torch.Tensor | Mapping[str, torch.Tensor], target: torch.Tensor | Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """mean((F - P)^2) for one layer, or its sum over {layer: tensor} mappings."""
    if isinstance(features, torch.Tensor):
        return F.mse_loss(features, target)
    return sum(F.mse_loss(features[name], t) for name, t in target.items())


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontal and vertical neighbours (smoothness prior)."""
    dx = image[:, :, :-1, 1:] - image[:, :, :-1, :-1]
    dy = image[:, :, 1:, :-1] - image[:, :, :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).mean()


@dataclass
class GatysOptions:
    """Method options; defaults and where they come from are in docs/classic.md."""

    iterations: int | Sequence[int] = ITERATIONS
    optimizer: str = "lbfgs"
    content_layer: str = DEFAULT_CONTENT_LAYER
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS
    style_layer_weights: Sequence[float] | None = None
    content_weight: float = CONTENT_WEIGHT
    style_weight: float = STYLE_WEIGHT
    tv_weight: float = TV_WEIGHT
    init: str = "content"
    scales: Sequence[float] | None = None
    style_scale: float = 1.0
    learning_rate: float = ADAM_LR
    lbfgs_history: int | None = None
    tile_size: TileSize = "auto"
    save_every: int = 0
    callback: Callable[[int, torch.Tensor, float], None] | None = None
    outdir: str | Path | None = None
    color_mode: str = "luminance"
    seed: int = 0

    def check(self) -> None:
        if self.optimizer not in ("lbfgs", "adam"):
            raise UserError(f"unknown optimizer {self.optimizer!r}: use lbfgs or adam")
        if self.init not in ("content", "noise", "style"):
            raise UserError(f"unknown init {self.init!r}: use content, noise or style")
        check_layer_names([self.content_layer, *self.style_layers])
        if not self.style_layers:
            raise UserError("give at least one style layer")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise UserError(
                f"{len(self.style_layer_weights)} style layer weights for {len(self.style_layers)} style layers"
            )
        iterations = [self.iterations] if isinstance(self.iterations, int) else list(self.iterations)
        if any(i < 1 for i in iterations):
            raise SettingError("iterations", f"{{setting}} must be at least 1, got {self.iterations}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise SettingError(name, f"{{setting}} must be a number >= 0, got {value}")
        if (
            not isinstance(self.learning_rate, (int, float))
            or not math.isfinite(self.learning_rate)
            or self.learning_rate <= 0
        ):
            raise SettingError("learning_rate", f"{{setting}} must be a positive number, got {self.learning_rate}")
        limits.check_range(
            "style_scale",
            self.style_scale,
            MIN_STYLE_SCALE,
            MAX_STYLE_SCALE,
            "the style's long side relative to the output's",
        )
        check_mode(self.color_mode)


class GatysObjective:
    """Total loss and its gradient with respect to the image, whole or in tiles.

    Targets (content features, style Grams) are computed once, at construction.
    """

    def __init__(
        self,
        vgg: VGG19Features,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        blend: Sequence[float],
        options: GatysOptions,
        mask: torch.Tensor | None = None,
        style_weight: float | None = None,
    ) -> None:
        self.vgg = vgg
        self.opt = options
        self.content_layer = options.content_layer
        self.style_layers = list(dict.fromkeys(options.style_layers))
        weights = options.style_layer_weights or [1.0] * len(options.style_layers)
        self.layer_weights = dict(zip(options.style_layers, weights))
        self.style_weight = options.style_weight if style_weight is None else style_weight
        self.layers = sorted(set(self.style_layers) | {self.content_layer}, key=LAYER_INDEX.get)
        deepest = self.layers[-1]
        self.align = max(layer_stride(name) for name in self.layers)
        self.halo = receptive_radius(deepest)
        self.height, self.width = content.shape[-2:]
        tile = resolve_tile_size(
            options.tile_size, lambda: AUTO_TILE_SIZE if self.height * self.width > AUTO_TILE_PIXELS else None
        )
        self.plan = plan_tiles(self.height, self.width, tile, self.halo, self.align) if tile else None
        if self.plan is not None and len(self.plan) == 1:
            self.plan = None
        with torch.no_grad():
            self.content_target = self._features_whole(content, [self.content_layer])[self.content_layer]
            self.sizes = self._feature_sizes(content)
            # Regions: one (no mask) with the blended target, or two (mask, 1 - mask) with one style each.
            style_grams = [self._grams_whole(s) for s in styles]
            if mask is None:
                self.regions: list[tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor]]] = [
                    (None, {n: sum(w * g[n] for w, g in zip(blend, style_grams)) for n in self.style_layers})
                ]
            else:
                masks = [mask, 1.0 - mask]
                self.regions = [(self._layer_masks(m), g) for m, g in zip(masks, style_grams)]

    # -- features of a whole image, in tiles when the image is large ---------------------------

    def _feature_sizes(self, image: torch.Tensor) -> dict[str, tuple[int, int]]:
        h, w = image.shape[-2:]
        return {name: self._size_of(name, h, w) for name in self.layers}

    def _core(self, tile: Tile, feats: dict[str, torch.Tensor], height: int, width: int):
        """Each layer's features over the tile's core, and where they sit in the whole map."""
        wy0, _, wx0, _ = tile.window
        cy0, cy1, cx0, cx1 = tile.core
        out = {}
        for name, f in feats.items():
            s = layer_stride(name)
            y0, x0 = (cy0 - wy0) // s, (cx0 - wx0) // s
            y1 = (cy1 - wy0) // s if cy1 < height else f.shape[2]
            x1 = (cx1 - wx0) // s if cx1 < width else f.shape[3]
            out[name] = (f[:, :, y0:y1, x0:x1], cy0 // s, cx0 // s)
        return out

    def _tiles_for(self, image: torch.Tensor) -> list[Tile] | None:
        h, w = image.shape[-2:]
        if self.plan is not None and (h, w) == (self.height, self.width):
            return self.plan
        if h * w > AUTO_TILE_PIXELS:
            plan = plan_tiles(h, w, AUTO_TILE_SIZE, self.halo, self.align)
            return plan if len(plan) > 1 else None
        return None

    def _features_whole(self, image: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        plan = self._tiles_for(image)
        if plan is None:
            return {k: v.detach().clone() for k, v in self.vgg(image, layers).items()}
        h, w = image.shape[-2:]
        out: dict[str, torch.Tensor] = {}
        for tile in plan:
            wy0, wy1, wx0, wx1 = tile.window
            feats = self.vgg(image[:, :, wy0:wy1, wx0:wx1], layers)
            for name, (core, gy, gx) in self._core(tile, feats, h, w).items():
                if name not in out:
                    fh, fw = self._size_of(name, h, w)
                    out[name] = torch.zeros(1, core.shape[1], fh, fw, device=image.device, dtype=core.dtype)
                out[name][:, :, gy : gy + core.shape[2], gx : gx + core.shape[3]] = core
        return out

    def _size_of(self, name: str, h: int, w: int) -> tuple[int, int]:
        fh, fw = h, w
        for _ in range(int(math.log2(layer_stride(name)))):
            fh, fw = (math.ceil(fh / 2), math.ceil(fw / 2)) if self.vgg.layout == "adain" else (fh // 2, fw // 2)
        return fh, fw

    def _grams_whole(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        plan = self._tiles_for(image)
        if plan is None:
            return {k: gram_matrix(v)[0] for k, v in self.vgg(image, self.style_layers).items()}
        h, w = image.shape[-2:]
        sums: dict[str, torch.Tensor] = {}
        for tile in plan:
            wy0, wy1, wx0, wx1 = tile.window
            feats = self.vgg(image[:, :, wy0:wy1, wx0:wx1], self.style_layers)
            for name, (core, _, _) in self._core(tile, feats, h, w).items():
                flat = core.reshape(core.shape[1], -1)
                sums[name] = sums.get(name, 0) + flat @ flat.T
        grams = {}
        for name, total in sums.items():
            fh, fw = self._size_of(name, h, w)
            grams[name] = total / (total.shape[0] * fh * fw)
        return grams

    def _layer_masks(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pixel mask at each style layer's resolution, 0/1 by area majority."""
        out = {}
        for name in self.style_layers:
            fh, fw = self.sizes[name]
            out[name] = (F.interpolate(mask, size=(fh, fw), mode="area") >= 0.5).to(mask)
        return out

    # -- the loss -----------------------------------------------------------------------------

    @staticmethod
    def _masked_outer(f: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """F F^T of features [1, C, h, w] over the region m (None: everywhere), unnormalised."""
        flat = f.reshape(f.shape[1], -1)
        weighted = flat if m is None else flat * m.reshape(1, -1)
        return weighted @ weighted.T

    def _region_gram(self, f: torch.Tensor, m: torch.Tensor | None, count: float) -> torch.Tensor:
        """The region's Gram matrix: F F^T / (C * positions in the region)."""
        return self._masked_outer(f, m) / (f.shape[1] * count)

    def _count(self, region_masks: dict[str, torch.Tensor] | None, name: str) -> float:
        if region_masks is None:
            fh, fw = self.sizes[name]
            return float(fh * fw)
        return max(float(region_masks[name].sum()), 1.0)

    def _loss_from_grams(self, grams: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        total = 0.0
        for (_, targets), g in zip(self.regions, grams):
            for name in self.style_layers:
                total = total + self.layer_weights[name] * F.mse_loss(g[name], targets[name])
        return self.style_weight * total

    def __call__(self, x: torch.Tensor) -> tuple[float, torch.Tensor, dict[str, float]]:
        """(loss, d loss / d x, parts) at image x ([1,3,H,W])."""
        if self.plan is None:
            return self._whole(x)
        return self._tiled(x)

    def _whole(self, x: torch.Tensor) -> tuple[float, torch.Tensor, dict[str, float]]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            feats = self.vgg(x, self.layers)
            c_loss = self.opt.content_weight * F.mse_loss(feats[self.content_layer], self.content_target)
            grams = []
            for region_masks, _ in self.regions:
                grams.append(
                    {
                        n: self._region_gram(
                            feats[n], None if region_masks is None else region_masks[n], self._count(region_masks, n)
                        )
                        for n in self.style_layers
                    }
                )
            s_loss = self._loss_from_grams(grams)
            t_loss = self.opt.tv_weight * tv_loss(x) if self.opt.tv_weight > 0 else torch.zeros(())
            loss = c_loss + s_loss + t_loss
            (grad,) = torch.autograd.grad(loss, x)
        parts = {"content": float(c_loss.detach()), "style": float(s_loss.detach()), "tv": float(t_loss.detach())}
        return float(loss.detach()), grad.contiguous(), parts

    def _crop_mask(self, region_masks, name: str, gy: int, gx: int, core: torch.Tensor):
        if region_masks is None:
            return None
        return region_masks[name][:, :, gy : gy + core.shape[2], gx : gx + core.shape[3]]

    def _tiled(self, x: torch.Tensor) -> tuple[float, torch.Tensor, dict[str, float]]:
        x = x.detach()
        h, w = self.height, self.width
        # Pass 1: the whole image's Grams and content error, without keeping activations.
        sums = [{n: 0.0 for n in self.style_layers} for _ in self.regions]
        content_sq = 0.0
        with torch.no_grad():
            for tile in self.plan:
                wy0, wy1, wx0, wx1 = tile.window
                cores = self._core(tile, self.vgg(x[:, :, wy0:wy1, wx0:wx1], self.layers), h, w)
                core, gy, gx = cores[self.content_layer]
                target = self.content_target[:, :, gy : gy + core.shape[2], gx : gx + core.shape[3]]
                content_sq += float((core - target).pow(2).sum())
                for r, (region_masks, _) in enumerate(self.regions):
                    for n in self.style_layers:
                        f, fy, fx = cores[n]
                        sums[r][n] = sums[r][n] + self._masked_outer(f, self._crop_mask(region_masks, n, fy, fx, f))
        grams = [
            {n: sums[r][n] / (sums[r][n].shape[0] * self._count(rm, n)) for n in self.style_layers}
            for r, (rm, _) in enumerate(self.regions)
        ]
        # dL/dG per region and layer: fixed now that the whole image's G is known.
        dgrams = []
        for (_, targets), g in zip(self.regions, grams):
            dgrams.append(
                {
                    n: self.style_weight * self.layer_weights[n] * 2.0 * (g[n] - targets[n]) / g[n].numel()
                    for n in self.style_layers
                }
            )
        content_numel = self.content_target.numel()
        c_loss = self.opt.content_weight * content_sq / content_numel
        s_loss = float(self._loss_from_grams(grams))
        # Pass 2: back-propagate each tile's share of the surrogate <dL/dG, G_tile> + content.
        grad = torch.zeros_like(x)
        for tile in self.plan:
            wy0, wy1, wx0, wx1 = tile.window
            window = x[:, :, wy0:wy1, wx0:wx1].clone().requires_grad_(True)
            with torch.enable_grad():
                cores = self._core(tile, self.vgg(window, self.layers), h, w)
                core, gy, gx = cores[self.content_layer]
                target = self.content_target[:, :, gy : gy + core.shape[2], gx : gx + core.shape[3]]
                surrogate = self.opt.content_weight * (core - target).pow(2).sum() / content_numel
                for r, (region_masks, _) in enumerate(self.regions):
                    for n in self.style_layers:
                        f, fy, fx = cores[n]
                        m = self._crop_mask(region_masks, n, fy, fx, f)
                        part = self._region_gram(f, m, self._count(region_masks, n))
                        surrogate = surrogate + (dgrams[r][n] * part).sum()
                (tile_grad,) = torch.autograd.grad(surrogate, window)
            grad[:, :, wy0:wy1, wx0:wx1] += tile_grad
        t_loss = 0.0
        if self.opt.tv_weight > 0:
            xt = x.clone().requires_grad_(True)
            with torch.enable_grad():
                tv = self.opt.tv_weight * tv_loss(xt)
                grad += torch.autograd.grad(tv, xt)[0]
            t_loss = float(tv.detach())
        parts = {"content": c_loss, "style": s_loss, "tv": t_loss}
        return c_loss + s_loss + t_loss, grad.contiguous(), parts


@dataclass
class GatysResult:
    image: torch.Tensor  # [1,3,H,W] in [0,1]
    losses: list[float] = field(default_factory=list)  # total loss at every evaluation
    parts: dict[str, float] = field(default_factory=dict)  # last evaluation's content/style/tv
    seconds: float = 0.0
    tiles: int = 1


def _resize(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if t.shape[-2:] == (height, width):
        return t
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _resize_long(t: torch.Tensor, long_side: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    scale = long_side / max(h, w)
    return _resize(t, max(1, round(h * scale)), max(1, round(w * scale)))


def _stage_sizes(height: int, width: int, scales: Sequence[float] | None) -> list[tuple[int, int]]:
    """Coarse-to-fine stages: scales <= 1 are fractions of the final size, larger ones long sides."""
    if not scales:
        return [(height, width)]
    long_side = max(height, width)
    sizes = []
    for s in scales:
        if s <= 0:
            raise SettingError("scales", f"{{setting}} must be positive, got {s}")
        target = s * long_side if s <= 1 else min(s, long_side)
        f = target / long_side
        sizes.append((max(16, round(height * f)), max(16, round(width * f))))
    sizes = sorted(set(sizes))
    if sizes[-1] != (height, width):
        sizes.append((height, width))
    return sizes


def _lbfgs_history(numel: int, requested: int | None) -> int:
    if requested is not None:
        return max(1, requested)
    return int(max(5, min(100, LBFGS_MEMORY_BYTES // (2 * 4 * numel))))


def optimize(
    vgg: VGG19Features,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    blend: Sequence[float],
    options: GatysOptions,
    *,
    mask: torch.Tensor | None = None,
    style_weight: float | None = None,
    show_progress: bool = False,
    init_image: torch.Tensor | None = None,
) -> GatysResult:
    """The method on tensors ([1,3,H,W] in [0,1]); the image is optimised unconstrained, as in
    neural-style, and clamped to [0,1] only on output (clamping inside L-BFGS's closure, as the
    PyTorch tutorial does, corrupts its curvature pairs and makes the loss jump)."""
    options.check()
    height, width = content.shape[-2:]
    stages = _stage_sizes(height, width, options.scales)
    iterations = [options.iterations] * len(stages) if isinstance(options.iterations, int) else list(options.iterations)
    if len(iterations) != len(stages):
        raise UserError(
            f"{len(iterations)} iteration counts for {len(stages)} scales: give one per scale, or one for all"
        )
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(iterations), desc="Gatys", unit="it")
    generator = torch.Generator().manual_seed(options.seed)
    result = GatysResult(image=content)
    start = time.perf_counter()
    x = None
    done = 0
    for (sh, sw), n_iter in zip(stages, iterations):
        stage_content = _resize(content, sh, sw)
        style_long = max(16, round(options.style_scale * max(sh, sw)))
        stage_styles = [_resize_long(s, style_long) for s in styles]
        stage_mask = None if mask is None else (F.interpolate(mask, size=(sh, sw), mode="area") >= 0.5).to(mask)
        objective = GatysObjective(vgg, stage_content, stage_styles, blend, options, stage_mask, style_weight)
        result.tiles = 1 if objective.plan is None else len(objective.plan)
        if x is None:
            if init_image is not None:
                x = _resize(init_image, sh, sw)
            elif options.init == "content":
                x = stage_content.clone()
            elif options.init == "style":
                x = _resize(styles[0], sh, sw)
            else:
                x = torch.rand(stage_content.shape, generator=generator).to(content.device)
        else:
            x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False)
        x = x.detach().clone().contiguous()

        def evaluate(point: torch.Tensor) -> tuple[float, torch.Tensor]:
            nonlocal done
            loss, grad, parts = objective(point)  # noqa: B023 - called only within this stage
            done += 1
            result.losses.append(loss)
            result.parts = parts
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
            if options.save_every and done % options.save_every == 0:
                _save_intermediate(options, done, point, loss)
            return loss, grad

        if options.optimizer == "lbfgs":
            param = torch.nn.Parameter(x)
            history = _lbfgs_history(param.numel(), options.lbfgs_history)
            opt = torch.optim.LBFGS(
                [param],
                lr=1,
                max_iter=n_iter,
                max_eval=n_iter,
                tolerance_grad=-1,
                tolerance_change=-1,
                history_size=history,
            )

            def closure() -> torch.Tensor:
                loss, grad = evaluate(param.detach())  # noqa: B023 - called only within this stage
                param.grad = grad  # noqa: B023
                return torch.tensor(loss)

            opt.step(closure)
            x = param.detach()
        else:
            param = torch.nn.Parameter(x)
            opt = torch.optim.Adam([param], lr=options.learning_rate)
            for _ in range(n_iter):
                _, grad = evaluate(param.detach())
                param.grad = grad
                opt.step()
            x = param.detach()
    if bar is not None:
        bar.close()
    result.image = x.clamp(0, 1)
    result.seconds = time.perf_counter() - start
    return result


def _save_intermediate(options: GatysOptions, step: int, x: torch.Tensor, loss: float) -> None:
    image = x.detach().clamp(0, 1)
    if options.callback is not None:
        options.callback(step, image, loss)
    if options.outdir is not None:
        save_image(
            tensor_to_pil(image),
            Path(options.outdir) / f"iter_{step:05d}.png",
            text={"iteration": str(step), "loss": f"{loss:.6g}"},
        )


def _check_depth(vgg: VGG19Features, options: GatysOptions) -> None:
    """Named layers deeper than the weights go: one line (before any work) saying the full VGG-19 is needed."""
    for name in [*options.style_layers, options.content_layer]:
        if LAYER_INDEX[name] > vgg.max_index:
            vgg(torch.zeros(1, 3, 16, 16), [name])  # raises the one-line UserError


def check_style_sizes(styles: list[Image.Image], output_long_side: int, style_scale: float = 1.0) -> None:
    """Each style is resized to `style_scale` x the output's long side: refuse what cannot be."""
    limits.check_range(
        "style_scale", style_scale, MIN_STYLE_SCALE, MAX_STYLE_SCALE, "the style's long side relative to the output's"
    )
    style_long = max(16, round(style_scale * output_long_side))
    for i, style in enumerate(styles):  # the styles' Gram pass tiles itself when large
        limits.check_working_image(
            "gatys",
            style_label(i, len(styles)),
            style.size,
            limits.scaled_long_side(style.size, style_long),
            f"{{setting}} {style_scale} (long side {style_long} px)",
            fix="crop it nearer to square or lower {setting}",
            setting="style_scale",
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
    vgg_weights: str | Path | None = None,
    random_weights: bool = False,
    vgg: VGG19Features | None = None,
    **method_options: Any,
) -> Image.Image:
    """Gatys et al. with the project's common `stylize` signature; returns an RGB PIL image.

    alpha scales the style weight (0: the content comes back, 1: the full style weight).
    method_options: the fields of GatysOptions (iterations, optimizer, content_layer, ...).
    The image's .info carries the first and last loss for reporting.
    """
    unknown = sorted(set(method_options) - set(GatysOptions.__dataclass_fields__))
    if unknown:
        raise UserError(f"Gatys has no option {unknown[0]!r}")
    options = GatysOptions(**method_options)
    options.check()
    if not limits.BOUNDS["alpha"].contains(alpha):
        raise SettingError("alpha", f"{{setting}} must be between 0 and 1, got {alpha}")
    check_styles(len(styles), style_weights, mask)
    blend = style_blend_weights(len(styles), style_weights)
    content = fit_content(content, size, "gatys", options.tile_size)
    check_style_sizes(styles, max(content.size), options.style_scale)
    if mask is not None:
        check_mask_fits(mask, content)
    if vgg is None:
        vgg = load_vgg19(vgg_weights, random_weights=random_weights, device=device, seed=options.seed)
    if getattr(vgg, "truncated", False):
        if "style_layers" not in method_options and "style_layer_weights" not in method_options:
            options.style_layers = SHALLOW_STYLE_LAYERS
        if "content_layer" not in method_options:
            options.content_layer = SHALLOW_CONTENT_LAYER
        _check_depth(vgg, options)
    content_t = pil_to_tensor(content).to(device)
    style_ts = [pil_to_tensor(s).to(device) for s in styles]
    if preserve_color:
        content_in, style_ts = preserve_color_inputs(content_t, style_ts, options.color_mode)
    else:
        content_in = content_t
    mask_t = mask_tensor(mask, *content_t.shape[-2:]).to(device) if mask is not None else None
    result = optimize(
        vgg,
        content_in,
        style_ts,
        blend,
        options,
        mask=mask_t,
        style_weight=options.style_weight * alpha,
        show_progress=show_progress,
    )
    out = result.image
    if preserve_color:
        out = preserve_color_output(out, content_t, options.color_mode)
    image = tensor_to_pil(out)
    image.info.update(
        {
            "loss_first": f"{result.losses[0]:.6g}",
            "loss_last": f"{result.losses[-1]:.6g}",
            "evaluations": str(len(result.losses)),
            "tiles": str(result.tiles),
            "random_weights": str(bool(vgg.random_weights)),
            "layers": f"content {options.content_layer}, style {','.join(options.style_layers)}",
        }
    )
    return image
