"""AdaIN: exact statistics, alpha, interpolation, masks, both decoder layouts, and decoder training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from classic.adain import adain, blend_features, build_decoder, calc_mean_std, load_decoder, save_decoder, stylize
from classic.train_adain import main as train_main
from classic.vgg import VGG19Features, adain_layout_state_dict, load_vgg19
from styleprompt.plumbing.errors import UserError

# pytorch-AdaIN's decoder (net.py): where its convolutions sit in the Sequential, and their shapes.
PUBLISHED_DECODER_CONVS = {
    1: (256, 512),
    5: (256, 256),
    8: (256, 256),
    11: (256, 256),
    14: (128, 256),
    18: (128, 128),
    21: (64, 128),
    25: (64, 64),
    28: (3, 64),
}


def picture(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return (
        Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
        .resize((size[0] * 2, size[1] * 2))
        .resize(size)
    )


def test_output_features_have_exactly_the_style_mean_and_std():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(1, 8, 9, 11, generator=g) * 3 + 1
    style = torch.randn(1, 8, 7, 5, generator=g) * 0.5 - 2
    s_mean, s_std = calc_mean_std(style)
    out = adain(content, s_mean, s_std)
    o_mean, o_std = calc_mean_std(out)
    torch.testing.assert_close(o_mean, s_mean, rtol=1e-5, atol=1e-5)
    # eps = 1e-5 enters both std estimates: relative error below eps / var(content) ~ 1e-6.
    torch.testing.assert_close(o_std, s_std, rtol=1e-4, atol=1e-5)
    # The std is the unbiased one with eps, as in pytorch-AdaIN's calc_mean_std.
    torch.testing.assert_close(s_std[0, :, 0, 0], (style.reshape(8, -1).var(dim=1) + 1e-5).sqrt())


def test_alpha_zero_returns_the_content_features_and_weights_interpolate():
    g = torch.Generator().manual_seed(1)
    content = torch.randn(1, 4, 6, 6, generator=g)
    stats = [calc_mean_std(torch.randn(1, 4, 5, 5, generator=g)) for _ in range(2)]
    assert torch.equal(blend_features(content, stats, [0.5, 0.5], alpha=0.0), content)
    only_first = blend_features(content, stats, [1.0, 0.0])
    torch.testing.assert_close(only_first, adain(content, *stats[0]))
    half = blend_features(content, stats, [0.5, 0.5], alpha=0.5)
    mixed = 0.5 * (0.5 * adain(content, *stats[0]) + 0.5 * adain(content, *stats[1])) + 0.5 * content
    torch.testing.assert_close(half, mixed)
    with pytest.raises(UserError, match="between 0 and 1"):
        blend_features(content, stats, [0.5, 0.5], alpha=1.2)


def test_mask_gives_each_region_its_own_style_statistics():
    g = torch.Generator().manual_seed(2)
    content = torch.randn(1, 4, 6, 8, generator=g)
    stats = [calc_mean_std(torch.randn(1, 4, 5, 5, generator=g) * (i + 1) + 3 * i) for i in range(2)]
    mask = torch.zeros(1, 1, 6, 8)
    mask[..., :3] = 1
    out = blend_features(content, stats, [0.5, 0.5], mask=mask)
    for region, (s_mean, s_std) in zip([mask, 1 - mask], stats):
        mean, std = calc_mean_std(out, mask=region)
        torch.testing.assert_close(mean, s_mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(std, s_std, rtol=1e-3, atol=1e-4)


def test_published_decoder_layout_and_ours_both_load(tmp_path):
    decoder = build_decoder()
    convs = {i: tuple(m.weight.shape[:2]) for i, m in enumerate(decoder) if isinstance(m, torch.nn.Conv2d)}
    assert convs == PUBLISHED_DECODER_CONVS
    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=g) for k, v in decoder.state_dict().items()}
    torch.save(state, tmp_path / "decoder.pth")  # pytorch-AdaIN's file: a bare Sequential state dict
    loaded = load_decoder(tmp_path / "decoder.pth")
    torch.testing.assert_close(loaded[28].weight, state["28.weight"])
    assert loaded.encoder_layout == "adain" and not loaded.random_weights
    torch.save({f"decoder.{k}": v for k, v in state.items()}, tmp_path / "net.pth")  # a whole Net's state dict
    torch.testing.assert_close(load_decoder(tmp_path / "net.pth")[1].bias, state["1.bias"])
    save_decoder(loaded, tmp_path / "ours.safetensors", "torchvision")
    ours = load_decoder(tmp_path / "ours.safetensors")
    torch.testing.assert_close(ours[5].weight, state["5.weight"])
    assert ours.encoder_layout == "torchvision"
    torch.save({"1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not an AdaIN decoder"):
        load_decoder(tmp_path / "bad.pth")


def test_missing_decoder_is_a_one_line_error():
    with pytest.raises(UserError) as info:
        stylize(picture(1), [picture(2)], show_progress=False)
    assert (
        "\n" not in str(info.value) and "--decoder-weights" in str(info.value) and "--random-weights" in str(info.value)
    )


def test_stylize_with_both_weight_files_of_the_published_layout(tmp_path):
    vgg = VGG19Features("adain")
    g = torch.Generator().manual_seed(4)
    for p in vgg.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
    torch.save(adain_layout_state_dict(vgg), tmp_path / "vgg_normalised.pth")
    torch.save(load_decoder(random_weights=True).state_dict(), tmp_path / "decoder.pth")
    content = picture(5, (50, 34))
    kwargs = dict(
        vgg_weights=tmp_path / "vgg_normalised.pth",
        decoder_weights=tmp_path / "decoder.pth",
        show_progress=False,
        style_size=64,
    )
    out = stylize(content, [picture(6), picture(7)], style_weights=[0.7, 0.3], **kwargs)
    assert out.size == content.size and out.info["random_weights"] == "False"
    again = stylize(content, [picture(6), picture(7)], style_weights=[0.7, 0.3], **kwargs)
    assert np.array_equal(np.asarray(out), np.asarray(again))
    mask = Image.new("L", content.size, 255)
    masked = stylize(content, [picture(6), picture(7)], mask=mask, preserve_color=True, **kwargs)
    assert masked.size == content.size


def test_bad_style_weights_and_masks_are_refused():
    kwargs = dict(random_weights=True, show_progress=False)
    with pytest.raises(UserError, match="sum to a positive"):
        stylize(picture(1), [picture(2), picture(3)], style_weights=[0, 0], **kwargs)
    with pytest.raises(UserError, match="not negative"):
        stylize(picture(1), [picture(2), picture(3)], style_weights=[2, -1], **kwargs)
    with pytest.raises(UserError, match="proportions"):
        stylize(picture(1), [picture(2), picture(3)], mask=Image.new("L", (100, 20)), **kwargs)


@pytest.mark.slow
def test_decoder_training_checkpoints_resumes_and_loads(tmp_path):
    for folder, offset in (("content", 0), ("style", 10)):
        (tmp_path / folder).mkdir()
        for i in range(3):
            picture(offset + i, (40, 40)).save(tmp_path / folder / f"{i}.png")
    run = tmp_path / "run"
    common = [
        "--content-dir",
        str(tmp_path / "content"),
        "--style-dir",
        str(tmp_path / "style"),
        "--output",
        str(run),
        "--random-weights",
        "--batch-size",
        "2",
        "--resize",
        "40",
        "--crop",
        "32",
        "--save-every",
        "2",
        "--no-progress",
    ]
    assert train_main([*common, "--iterations", "2"]) == 0
    first = json.loads((run / "checkpoints" / "step_0000002" / "state.json").read_text())
    assert first["step"] == 2
    assert train_main([*common, "--iterations", "3", "--resume", "latest"]) == 0
    assert json.loads((run / "checkpoints" / "step_0000003" / "state.json").read_text())["step"] == 3
    before = load_decoder(run / "checkpoints" / "step_0000002" / "decoder.safetensors")
    after = load_decoder(run / "decoder.safetensors")
    assert after.encoder_layout == "torchvision"
    assert not torch.equal(before[1].weight, after[1].weight)  # the resumed step trained
    out = stylize(
        picture(20),
        [picture(21)],
        decoder_weights=run / "decoder.safetensors",
        vgg=load_vgg19(random_weights=True),
        show_progress=False,
        style_size=48,
    )
    assert out.size == (48, 40)
    assert train_main([*common, "--iterations", "4", "--resume", str(tmp_path / "nowhere")]) == 2
