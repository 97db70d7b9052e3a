"""Gatys: the losses equal a hand computation, an optimisation lowers them, options do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from classic.color import luminance, rgb_to_yiq
from classic.gatys import GatysOptions, _stage_sizes, content_loss, gram_matrix, optimize, style_loss, stylize, tv_loss
from classic.vgg import load_vgg19
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import pil_to_tensor

SHALLOW = {"style_layers": ["relu1_1", "relu2_1"], "content_layer": "relu2_2"}


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19(random_weights=True)


def picture(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, size=3)
    arr = (
        base + 60 * np.sin(xx / rng.uniform(2, 6))[..., None] * rng.uniform(-1, 1, 3) + 40 * (yy / h)[..., None]
    ) % 256
    return Image.fromarray(arr.astype(np.uint8))


def test_gram_style_and_content_loss_equal_a_hand_computed_example():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C=2 channels, 1x2 positions
    # F F^T = [[5, 11], [11, 25]], divided by C*H*W = 4.
    expected_gram = torch.tensor([[[1.25, 2.75], [2.75, 6.25]]])
    torch.testing.assert_close(gram_matrix(f), expected_gram)
    target = torch.tensor([[1.0, 2.0], [2.0, 6.0]])
    # mean((G - A)^2) = (0.25^2 + 0.75^2 + 0.75^2 + 0.25^2) / 4 = 0.3125
    assert style_loss(f, target).item() == pytest.approx(0.3125)
    two_layers = style_loss({"a": f, "b": f}, {"a": target, "b": torch.zeros(2, 2)}, {"a": 2.0, "b": 1.0})
    # layer b: (1.25^2 + 2 * 2.75^2 + 6.25^2) / 4 = 13.9375
    assert two_layers.item() == pytest.approx(2 * 0.3125 + 13.9375)
    assert content_loss(f, torch.zeros_like(f)).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    img = torch.tensor([[0.0, 1.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    assert tv_loss(img).item() == pytest.approx(1.0)  # one pixel pair, dx = 1, dy = 0


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_run_lowers_its_total_loss(vgg, optimizer):
    content, style = pil_to_tensor(picture(1)), pil_to_tensor(picture(2, (40, 40)))
    options = GatysOptions(iterations=12, optimizer=optimizer, tv_weight=1.0, **SHALLOW)
    result = optimize(vgg, content, [style], [1.0], options)
    assert len(result.losses) == 12
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.image.shape == content.shape and 0 <= result.image.min() and result.image.max() <= 1


def test_noise_init_and_coarse_to_fine_scales(vgg):
    assert _stage_sizes(40, 48, [0.5, 1]) == [(20, 24), (40, 48)]
    assert _stage_sizes(400, 600, [300]) == [(200, 300), (400, 600)]
    content, style = pil_to_tensor(picture(3)), pil_to_tensor(picture(4))
    seen: list[torch.Tensor] = []  # every point the optimiser evaluates, in order
    options = GatysOptions(
        iterations=[4, 6],
        scales=[0.5, 1.0],
        init="noise",
        save_every=1,
        callback=lambda step, image, loss: seen.append(image.clone()),
        **SHALLOW,
    )
    result = optimize(vgg, content, [style], [1.0], options)
    assert len(result.losses) == 10 and result.image.shape == content.shape
    # Coarse to fine: four evaluations at half size, then six at full size.
    assert [tuple(x.shape[-2:]) for x in seen] == [(20, 24)] * 4 + [(40, 48)] * 6
    # The first point is uniform noise, not the content: mean ~0.5, std ~1/sqrt(12), unlike the picture.
    first, small_content = seen[0], torch.nn.functional.interpolate(content, size=(20, 24), mode="area")
    assert abs(first.mean().item() - 0.5) < 0.05 and abs(first.std().item() - 12**-0.5) < 0.03
    assert (first - small_content).abs().mean() > 0.2


def test_alpha_zero_keeps_the_content(vgg):
    content = picture(5)
    out = stylize(content, [picture(6)], alpha=0.0, random_weights=True, show_progress=False, iterations=5, **SHALLOW)
    diff = np.abs(np.asarray(out, dtype=int) - np.asarray(content, dtype=int))
    assert diff.max() <= 1


def test_luminance_only_colour_preservation_keeps_the_content_chroma(vgg):
    content = picture(7)
    out = stylize(content, [picture(8)], preserve_color=True, vgg=vgg, show_progress=False, iterations=5, **SHALLOW)
    iq_out = rgb_to_yiq(pil_to_tensor(out))[:, 1:]
    iq_content = rgb_to_yiq(pil_to_tensor(content))[:, 1:]
    # Rounding to 8 bits and clamping to the RGB cube only: far below the style's colour shift.
    assert (iq_out - iq_content).abs().mean() < 0.02
    assert luminance(pil_to_tensor(out)).shape[1] == 1


def test_several_styles_mask_and_intermediate_images(vgg, tmp_path):
    content, s1, s2 = picture(9), picture(10), picture(11)
    seen = []
    out = stylize(
        content,
        [s1, s2],
        style_weights=[0.7, 0.3],
        vgg=vgg,
        show_progress=False,
        iterations=6,
        save_every=3,
        outdir=tmp_path / "steps",
        callback=lambda i, img, loss: seen.append((i, loss)),
        **SHALLOW,
    )
    assert out.size == content.size
    assert [i for i, _ in seen] == [3, 6] and sorted(p.name for p in (tmp_path / "steps").iterdir()) == [
        "iter_00003.png",
        "iter_00006.png",
    ]
    mask = Image.new("L", content.size, 0)
    mask.paste(255, (0, 0, content.width // 2, content.height))
    out = stylize(content, [s1, s2], mask=mask, vgg=vgg, show_progress=False, iterations=4, **SHALLOW)
    assert float(out.info["loss_last"]) < float(out.info["loss_first"])


def test_bad_input_gives_one_line_errors(vgg):
    content, style = picture(12), picture(13)
    cases = [
        (dict(style_weights=[0.0]), "sum to a positive"),
        (dict(style_weights=[1.0, 2.0]), "2 style weights for 1"),
        (dict(mask=Image.new("L", (10, 40))), "2 style images"),
        (dict(optimizer="sgd"), "unknown optimizer"),
        (dict(content_layer="relu7_1"), "unknown VGG-19 layer"),
        (dict(iterations=0), "at least 1"),
        (dict(alpha=1.5), "between 0 and 1"),
        (dict(colour="blue"), "no option"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(UserError, match=needle) as info:
            stylize(content, [style], vgg=vgg, show_progress=False, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="proportions"):
        stylize(content, [style, style], mask=Image.new("L", (10, 40)), vgg=vgg, show_progress=False)


# -- real features from VGG-19 conv1-3 (../shared/weights; skipped when absent) ---------------------------


def test_gatys_with_the_real_conv1_3_vgg(tmp_path, monkeypatch):
    """No layers named: Gatys takes relu1_1-3_1 for style and relu3_2 for content and lowers the
    loss with real features; named deeper layers are one line that says the full VGG-19 is needed."""
    from classic.gatys import stylize as gatys_stylize
    from classic.vgg import load_vgg19 as load
    from tests.real_weights import require_weights

    vgg = load(str(require_weights("vgg19-conv1-3")))
    content, style = Image.new("RGB", (48, 32), (200, 120, 40)), Image.effect_noise((48, 48), 60).convert("RGB")
    out = gatys_stylize(content, [style], vgg=vgg, iterations=5, show_progress=False)
    assert out.info["layers"] == "content relu3_2, style relu1_1,relu2_1,relu3_1"
    assert float(out.info["loss_last"]) < float(out.info["loss_first"])
    with pytest.raises(UserError, match="relu4_1 needs the full VGG-19"):
        gatys_stylize(content, [style], vgg=vgg, iterations=2, style_layers=["relu1_1", "relu4_1"], show_progress=False)
