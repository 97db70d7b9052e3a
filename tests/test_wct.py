"""WCT with the published autoencoders (../shared/weights; skipped when absent): reconstruction at
every level against random weights, real stylisation, the cascade's controls, tiling, bad files."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from classic import wct
from classic.weights import ENV_VAR
from styleprompt.cli import main
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import load_image, pil_to_tensor, resize_long_side
from tests.real_weights import SHARED_WEIGHTS, ghiasi_gain, psnr, require_weights
from tests.test_train_cli import assert_one_line_error

SIZE = 256


@pytest.fixture(scope="module")
def photos(shared_data):
    def load(folder: str, name: str, size: int = SIZE) -> torch.Tensor:
        return pil_to_tensor(resize_long_side(load_image(shared_data / folder / name), size))

    return {
        "golden_gate": load("content", "golden_gate.jpg"),
        "chicago": load("content", "chicago.jpg"),
        "la_muse": load("style", "la_muse.jpg"),
        "starry": load("style", "starry_night.jpg"),
    }


@pytest.fixture(scope="module")
def cd():
    require_weights("cd-wct")
    return wct.load_wct("cd-wct")


@pytest.fixture(scope="module")
def classic_wct():
    require_weights("wct")
    return wct.load_wct("wct")


# Measured at 256 px (docs/classic.md has the 512-px figures): cd-wct on golden_gate
# 39.7/29.6/26.3/23.1/20.5 dB, wct on chicago 28.7/32.2/26.4 dB, random weights 4-7 dB; each
# floor keeps about 2.5 dB of margin below the measurement.
CD_FLOORS = {1: 37.0, 2: 27.0, 3: 23.5, 4: 20.5, 5: 18.0}
WCT_FLOORS = {1: 26.0, 2: 29.5, 3: 24.0}


@pytest.mark.slow
def test_compressed_wct_reconstructs_every_level_far_above_random_weights(cd, photos):
    random_nets = wct.load_wct("cd-wct", random_weights=True)
    x = photos["golden_gate"]
    for level, floor in CD_FLOORS.items():
        real = psnr(wct.reconstruct(cd, x, level), x)
        rand = psnr(wct.reconstruct(random_nets, x, level), x)
        assert real > floor and real > rand + 12, (level, real, rand)


def test_wct_reconstructs_levels_1_to_3_far_above_random_weights(classic_wct, photos):
    random_nets = wct.load_wct("wct", random_weights=True)
    x = photos["chicago"]
    assert [level.number for level in classic_wct.levels] == [1, 2, 3]
    for level, floor in WCT_FLOORS.items():
        real = psnr(wct.reconstruct(classic_wct, x, level), x)
        rand = psnr(wct.reconstruct(random_nets, x, level), x)
        assert real > floor and real > rand + 15, (level, real, rand)


@pytest.mark.slow
def test_the_cascade_paints_the_style_and_random_weights_do_not(cd, photos):
    content, style = photos["chicago"], photos["la_muse"]
    real = wct.transfer(cd, content, [style], [1.0]).clamp(0, 1)
    rand = wct.transfer(wct.load_wct(random_weights=True), content, [style], [1.0]).clamp(0, 1)
    gain_real, gain_rand = ghiasi_gain(real, content, style), ghiasi_gain(rand, content, style)
    # Measured at 256 px: +0.136 with the real weights, -0.149 with random ones.
    assert gain_real > 0.08 and gain_real > gain_rand + 0.15, (gain_real, gain_rand)
    # The colours move to the painting's (channel means), the structure stays the content's.
    assert (real.mean((2, 3)) - style.mean((2, 3))).abs().max() < 0.06


def test_alpha_zero_keeps_the_content_and_weights_select_a_style(cd, photos):
    content, a, b = photos["chicago"], photos["la_muse"], photos["starry"]
    kept = wct.transfer(cd, content, [a], [1.0], alpha=0.0, levels=[1])
    assert psnr(kept, content) > 38  # level 1 alone reconstructs at ~45 dB
    only_a = wct.transfer(cd, content, [a, b], [1.0, 0.0], levels=[3, 2, 1])
    torch.testing.assert_close(only_a, wct.transfer(cd, content, [a], [1.0], levels=[3, 2, 1]))
    half = wct.transfer(cd, content, [a, b], [0.5, 0.5], levels=[3, 2, 1])
    assert (half - only_a).abs().mean() > 0.02


def test_a_mask_puts_each_style_in_its_region(cd, photos):
    content, a, b = photos["chicago"], photos["la_muse"], photos["starry"]
    mask = torch.zeros(1, 1, *content.shape[-2:])
    mask[..., : content.shape[-1] // 2] = 1.0
    out = wct.transfer(cd, content, [a, b], [0.5, 0.5], mask=mask).clamp(0, 1)
    half = content.shape[-1] // 2
    left, right = out[..., : half - 16].mean((2, 3)), out[..., half + 16 :].mean((2, 3))
    da = lambda m: float((m - a.mean((2, 3))).abs().sum())  # noqa: E731
    db = lambda m: float((m - b.mean((2, 3))).abs().sum())  # noqa: E731
    assert da(left) < db(left) and db(right) < da(right)


def test_tiles_give_the_one_pass_result(cd, photos):
    content, style = photos["chicago"][..., :160, :240], photos["la_muse"]
    whole = wct.transfer(cd, content, [style], [1.0], tile_size=None)
    tiled = wct.transfer(cd, content, [style], [1.0], tile_size=96)
    assert wct.tile_count(160, 240, 96, 0, 16) > 1
    torch.testing.assert_close(tiled, whole, atol=2e-4, rtol=0)


def test_preserve_color_keeps_the_content_colours(cd, shared_data):
    content = resize_long_side(load_image(shared_data / "content" / "chicago.jpg"), 192)
    style = load_image(shared_data / "style" / "la_muse.jpg")
    plain = pil_to_tensor(wct.stylize(content, [style], nets=cd, show_progress=False))
    kept = pil_to_tensor(wct.stylize(content, [style], nets=cd, preserve_color=True, show_progress=False))
    target = pil_to_tensor(content).mean((2, 3))
    assert (kept.mean((2, 3)) - target).abs().sum() < (plain.mean((2, 3)) - target).abs().sum()


# -- weight files ---------------------------------------------------------------------------------------


def _copy_set(name: str, tmp_path):
    folder = tmp_path / name
    shutil.copytree(require_weights(name), folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def test_bad_weight_files_are_one_line_errors_naming_the_file(tmp_path):
    folder = _copy_set("cd-wct", tmp_path)
    shutil.copy(folder / "decoder2.pth", folder / "decoder3.pth")  # a decoder for another level
    with pytest.raises(UserError, match=r"decoder3\.pth: not Collaborative Distillation's 16x decoder for relu3_1"):
        wct.load_wct(str(folder))
    (folder / "decoder3.pth").write_bytes((SHARED_WEIGHTS / "cd-wct" / "decoder3.pth").read_bytes()[:5000])
    with pytest.raises(UserError, match=r"decoder3\.pth: cannot be read as weights"):
        wct.load_wct(str(folder))
    torch.save([1, 2, 3], folder / "decoder3.pth")  # a pickle that is not a state dict
    with pytest.raises(UserError, match=r"decoder3\.pth: not a state dict of tensors"):
        wct.load_wct(str(folder))
    (folder / "decoder3.pth").unlink()
    with pytest.raises(UserError, match=r"decoder3\.pth: file not found"):
        wct.load_wct(str(folder))
    with pytest.raises(UserError, match="neither WCT weight set"):
        wct.load_wct(str(tmp_path))


def test_weights_are_found_through_the_environment_variable(tmp_path, monkeypatch):
    require_weights("wct")
    root = tmp_path / "weights"
    root.mkdir()
    monkeypatch.setenv(ENV_VAR, str(root))
    with pytest.raises(UserError, match=f"cd-wct weights were not found.*{ENV_VAR}.*Collaborative-Distillation"):
        wct.load_wct()
    (root / "wct").symlink_to(SHARED_WEIGHTS / "wct")
    assert wct.load_wct("wct").source == str(root / "wct")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="is not a folder"):
        wct.load_wct()


def test_cli_transfer_paints_with_real_weights(capsys, shared_data, tmp_path):
    require_weights("cd-wct")
    out = tmp_path / "o.png"
    argv = ["transfer", "--method", "wct", "--content", str(shared_data / "content" / "chicago.jpg")]
    argv += ["--style", str(shared_data / "style" / "la_muse.jpg"), "--output", str(out), "--size", "256"]
    assert main([*argv, "--no-progress"]) == 0
    image = Image.open(out)
    assert image.text["method"] == "wct" and image.text["random_weights"] == "False"
    assert image.text["wct_levels"] == "5,4,3,2,1" and "cd-wct" in image.text["wct_weights"]
    capsys.readouterr()
    code, _, err = _run(capsys, *argv, "--wct-weights", str(tmp_path), "--no-progress")
    assert_one_line_error(code, err, "neither WCT weight set")
    code, _, err = _run(capsys, *argv, "--wct-weights", "wct", "--wct-levels", "5", "--no-progress")
    assert_one_line_error(code, err, "levels 1, 2, 3, not 5")


def _run(capsys, *argv: str):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_4k_fits_the_memory_budget_with_cd_wct_and_the_wct_set_says_its_largest_size():
    """classic.limits: the compressed set tiles a 3840x2160 frame within the budget; the full-width
    `wct` set (about 1.1 GiB per Mpx even in tiles, measured) is refused in one line first."""
    from classic import limits

    frame = (3840, 2160)
    limits.check_working_image(wct.footprint_key("cd-wct"), "the content image", frame, frame, "its own size")
    with pytest.raises(UserError) as info:
        limits.check_working_image(wct.footprint_key("wct"), "the content image", frame, frame, "its own size")
    assert "\n" not in str(info.value) and "the largest this image takes is" in str(info.value)
