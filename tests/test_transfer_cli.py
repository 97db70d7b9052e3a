"""`styleprompt transfer`: real files out, parameters inside them, one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_train_cli import assert_one_line_error, run_cli  # the same CLI helpers as the train command

from tests.real_weights import hide_shared_weights

FAST = ["--random-weights", "--size", "48", "--style-size", "48", "--no-progress"]


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name, size in (("city", (64, 48)), ("park", (60, 45)), ("waves", (50, 50)), ("dots", (40, 56))):
        arr = rng.integers(0, 256, size=(size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
        Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR).save(tmp_path / f"{name}.png")
        paths[name] = str(tmp_path / f"{name}.png")
    return paths


def test_adain_writes_a_png_with_its_parameters(capsys, images, tmp_path):
    out = tmp_path / "out.png"
    code, stdout, _ = run_cli(
        capsys,
        "transfer",
        "--method",
        "adain",
        "--content",
        images["city"],
        "--style",
        images["waves"],
        "--alpha",
        "0.8",
        "--output",
        str(out),
        *FAST,
    )
    assert code == 0
    with Image.open(out) as img:
        assert img.size == (48, 36)
        assert img.text["method"] == "adain" and img.text["alpha"] == "0.8" and img.text["random_weights"] == "True"
    assert "random weights" in stdout and "peak memory" in stdout and "time" in stdout


def test_gatys_loss_falls_and_is_reported(capsys, images, tmp_path):
    out = tmp_path / "g.png"
    code, stdout, _ = run_cli(
        capsys,
        "transfer",
        "--method",
        "gatys",
        "--content",
        images["city"],
        "--style",
        images["waves"],
        "--iterations",
        "6",
        "--style-layers",
        "relu1_1,relu2_1",
        "--content-layer",
        "relu2_2",
        "--output",
        str(out),
        *FAST,
    )
    assert code == 0
    with Image.open(out) as img:
        first, last = float(img.text["loss_first"]), float(img.text["loss_last"])
    assert last < first
    assert "loss" in stdout


def test_several_contents_and_styles_write_every_pair(capsys, images, tmp_path):
    folder = tmp_path / "pairs"
    code, _, _ = run_cli(
        capsys,
        "transfer",
        "--method",
        "adain",
        "--content",
        images["city"],
        "--content",
        images["park"],
        "--style",
        images["waves"],
        "--style",
        images["dots"],
        "--output",
        str(folder),
        *FAST,
    )
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "city__dots.png",
        "city__waves.png",
        "park__dots.png",
        "park__waves.png",
    ]


def test_style_weights_blend_into_one_image(capsys, images, tmp_path):
    out = tmp_path / "blend.png"
    code, _, _ = run_cli(
        capsys,
        "transfer",
        "--method",
        "adain",
        "--content",
        images["city"],
        "--style",
        images["waves"],
        "--style",
        images["dots"],
        "--style-weights",
        "0.7,0.3",
        "--preserve-color",
        "--output",
        str(out),
        *FAST,
    )
    assert code == 0 and out.is_file() and len(list(tmp_path.glob("*.png"))) == 5


def test_bad_input_is_one_line(capsys, images, tmp_path, monkeypatch):
    base = ["transfer", "--content", images["city"], "--style", images["waves"], "--output", str(tmp_path / "x.png")]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    hide_shared_weights(monkeypatch, tmp_path)
    monkeypatch.setenv("STYLEPROMPT_OFFLINE", "1")
    code, _, err = run_cli(capsys, *base, "--method", "gatys", "--size", "48", "--no-progress")
    assert_one_line_error(code, err, "VGG-19 weights not found", "--vgg-weights")
    code, _, err = run_cli(capsys, *base, "--method", "adain", "--size", "48", "--no-progress")
    assert_one_line_error(code, err, "--decoder-weights")
    code, _, err = run_cli(
        capsys, *base, "--method", "adain", "--style", images["dots"], "--style-weights", "0,0", *FAST
    )
    assert_one_line_error(code, err, "sum to a positive")
    code, _, err = run_cli(capsys, *base, "--method", "adain", "--style-weights", "a,b", *FAST)
    assert_one_line_error(code, err, "cannot read style weights")
    mask = tmp_path / "mask.png"
    Image.new("L", (100, 20), 255).save(mask)
    code, _, err = run_cli(capsys, *base, "--method", "adain", "--style", images["dots"], "--mask", str(mask), *FAST)
    assert_one_line_error(code, err, "mask", "proportions")
    missing = [
        "transfer",
        "--content",
        images["city"],
        "--style",
        str(tmp_path / "missing.jpg"),
        "--output",
        str(tmp_path / "x.png"),
    ]
    code, _, err = run_cli(capsys, *missing, "--method", "adain", *FAST)
    assert_one_line_error(code, err, "not found")
    code, _, err = run_cli(
        capsys,
        "transfer",
        "--method",
        "adain",
        "--content",
        images["city"],
        "--style",
        images["waves"],
        "--style",
        images["dots"],
        "--output",
        str(tmp_path / "one.png"),
        *FAST,
    )
    assert_one_line_error(code, err, "folder")


def test_real_images_with_the_shared_mask(capsys, shared_data, tmp_path):
    content = Image.open(shared_data / "content" / "golden_gate.jpg").convert("RGB")
    portrait = tmp_path / "golden_gate_3x4.png"  # mask.png is 600x800: crop the content to 3:4
    content.crop((64, 0, 448, 512)).save(portrait)
    out = tmp_path / "masked.png"
    code, _, err = run_cli(
        capsys,
        "transfer",
        "--method",
        "adain",
        "--content",
        str(portrait),
        "--style",
        str(shared_data / "style" / "woman_with_hat_matisse.jpg"),
        "--style",
        str(shared_data / "style" / "sketch.png"),
        "--mask",
        str(shared_data / "mask.png"),
        "--output",
        str(out),
        "--random-weights",
        "--size",
        "128",
        "--style-size",
        "128",
        "--no-progress",
    )
    assert code == 0, err
    with Image.open(out) as img:
        assert img.size == (96, 128) and img.text["mask"].endswith("mask.png")
