"""MicroAST with its published weights (../shared/weights/microast; skipped when absent): the
published check, style gain against random weights, the controls, tiling, bad files, the CLI."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from classic import microast
from styleprompt.cli import main
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import load_image, pil_to_tensor, resize_long_side
from tests.real_weights import ghiasi_gain, require_weights
from tests.test_train_cli import assert_one_line_error


@pytest.fixture(scope="module")
def nets():
    require_weights("microast")
    return microast.load_microast()


@pytest.fixture(scope="module")
def images(shared_data):
    return {
        "chicago": load_image(shared_data / "content" / "chicago.jpg"),
        "la_muse": load_image(shared_data / "style" / "la_muse.jpg"),
        "starry": load_image(shared_data / "style" / "starry_night.jpg"),
    }


def test_the_published_check_chicago_by_la_muse(nets, images):
    """SOURCES.md: the channel means move from the content's [0.50, 0.59, 0.66] to [0.48, 0.43,
    0.30] (the style's [0.47, 0.42, 0.30]); random weights give a constant picture."""
    content, style = pil_to_tensor(images["chicago"]), pil_to_tensor(images["la_muse"])
    out = microast.transfer(nets, content, [style], [1.0], tile_size=None).clamp(0, 1)
    torch.testing.assert_close(out.mean((2, 3))[0], torch.tensor([0.48, 0.43, 0.30]), atol=0.012, rtol=0)
    assert float(out.std()) > 0.2  # a picture, not a flat colour (measured 0.256)
    rand = microast.transfer(microast.load_microast(random_weights=True), content, [style], [1.0]).clamp(0, 1)
    assert float(rand.std()) < 0.12  # measured 0.096: near-constant


def test_real_weights_gain_style_and_random_weights_do_not(nets, images):
    content = pil_to_tensor(resize_long_side(images["chicago"], 256))
    style = pil_to_tensor(resize_long_side(images["la_muse"], 256))
    real = microast.transfer(nets, content, [style], [1.0]).clamp(0, 1)
    rand = microast.transfer(microast.load_microast(random_weights=True), content, [style], [1.0]).clamp(0, 1)
    gain_real, gain_rand = ghiasi_gain(real, content, style), ghiasi_gain(rand, content, style)
    assert gain_real > 0.08 and gain_real > gain_rand + 0.15, (gain_real, gain_rand)


def test_alpha_weights_and_mask(nets, images):
    content = pil_to_tensor(resize_long_side(images["chicago"], 192))
    a = pil_to_tensor(resize_long_side(images["la_muse"], 192))
    b = pil_to_tensor(resize_long_side(images["starry"], 192))
    full = microast.transfer(nets, content, [a], [1.0])
    weak = microast.transfer(nets, content, [a], [1.0], alpha=0.3)
    assert (weak - content).abs().mean() < (full - content).abs().mean()
    torch.testing.assert_close(microast.transfer(nets, content, [a, b], [1.0, 0.0]), full, atol=1e-5, rtol=0)
    mask = torch.zeros(1, 1, *content.shape[-2:])
    mask[..., : content.shape[-1] // 2] = 1.0
    out = microast.transfer(nets, content, [a, b], [0.5, 0.5], mask=mask).clamp(0, 1)
    half = content.shape[-1] // 2
    left, right = out[..., : half - 12].mean((2, 3)), out[..., half + 12 :].mean((2, 3))

    def dist(m, s):
        return float((m - s.mean((2, 3))).abs().sum())

    assert dist(left, a) < dist(left, b) and dist(right, b) < dist(right, a)


def test_tiles_give_the_one_pass_result(nets, images):
    content = pil_to_tensor(resize_long_side(images["chicago"], 300))
    style = pil_to_tensor(resize_long_side(images["la_muse"], 128))
    whole = microast.transfer(nets, content, [style], [1.0], tile_size=None)
    tiled = microast.transfer(nets, content, [style], [1.0], tile_size=96)
    torch.testing.assert_close(tiled, whole, atol=2e-4, rtol=0)
    mask = torch.zeros(1, 1, *content.shape[-2:])
    mask[..., :100] = 1.0
    torch.testing.assert_close(
        microast.transfer(nets, content, [style, style.flip(-1)], [0.5, 0.5], mask=mask, tile_size=96),
        microast.transfer(nets, content, [style, style.flip(-1)], [0.5, 0.5], mask=mask, tile_size=None),
        atol=2e-4,
        rtol=0,
    )


def test_bad_weight_files_are_one_line_errors(tmp_path):
    folder = tmp_path / "microast"
    shutil.copytree(require_weights("microast"), folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    name = microast.FILES["decoder"]
    shutil.copy(folder / microast.FILES["modulator"], folder / name)  # the wrong network
    with pytest.raises(UserError, match=rf"{name}: not MicroAST's decoder"):
        microast.load_microast(folder)
    torch.save({"not": "tensors"}, folder / name)
    with pytest.raises(UserError, match=rf"{name}: not a state dict of tensors"):
        microast.load_microast(folder)
    (folder / name).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match=rf"{name}: cannot be read as weights"):
        microast.load_microast(folder)


def test_cli_transfer_paints_with_real_weights(capsys, shared_data, tmp_path):
    require_weights("microast")
    out = tmp_path / "o.png"
    argv = ["transfer", "--method", "microast", "--content", str(shared_data / "content" / "chicago.jpg")]
    argv += ["--style", str(shared_data / "style" / "la_muse.jpg"), "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    image = Image.open(out)
    assert image.text["method"] == "microast" and image.text["random_weights"] == "False"
    capsys.readouterr()
    code = main([*argv, "--microast-weights", str(tmp_path)])
    assert_one_line_error(code, capsys.readouterr().err, "content_encoder_iter_160000.pth.tar: file not found")
