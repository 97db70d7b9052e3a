"""Tiling changes memory, not results: tiled AdaIN and tiled Gatys gradients equal untiled ones."""

from __future__ import annotations

import pytest
import torch

from classic.adain import load_decoder, transfer
from classic.gatys import GatysObjective, GatysOptions
from classic.tiling import plan_tiles, run_tiled
from classic.vgg import VGG19Features, load_vgg19

# Stated tolerance for tiled vs untiled AdaIN outputs (images in [0, 1]): float rounding only.
ADAIN_TOLERANCE = 1e-4


def test_cores_partition_the_image_and_windows_are_aligned():
    height, width = 203, 331
    tiles = plan_tiles(height, width, tile=64, halo=20, align=8)
    cover = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        y0, y1, x0, x1 = t.core
        wy0, wy1, wx0, wx1 = t.window
        cover[y0:y1, x0:x1] += 1
        assert wy0 <= y0 and y1 <= wy1 and wx0 <= x0 and x1 <= wx1
        assert wy0 % 8 == 0 and wx0 % 8 == 0 and y0 % 8 == 0 and x0 % 8 == 0
        assert (y0 - wy0 in (0, 24) or wy0 == 0) and (wy1 - y1 in (0, 24) or wy1 == height)  # halo 20 -> 24 on the grid
    assert torch.all(cover == 1)


def test_cross_faded_tiles_sum_to_one():
    x = torch.rand(1, 2, 70, 90)
    out = run_tiled(lambda w: w * 1.0, x, tile=24, halo=2, overlap=8, scale=1, out_channels=2)
    torch.testing.assert_close(out, x)


def adain_pair(layout: str):
    torch.manual_seed(0)
    if layout == "adain":
        vgg = VGG19Features("adain")
        for p in vgg.parameters():
            p.data.normal_(0, 0.05)
    else:
        vgg = load_vgg19(random_weights=True)
    return vgg, load_decoder(random_weights=True)


@pytest.mark.slow
def test_tiled_adain_agrees_with_untiled_for_both_layouts():
    content = torch.rand(1, 3, 141, 187)  # not multiples of 8: padding and cropping are exercised
    styles = [torch.rand(1, 3, 48, 40), torch.rand(1, 3, 32, 32)]
    mask = torch.zeros(1, 1, 141, 187)
    mask[..., :90] = 1
    for layout in ("torchvision", "adain"):
        vgg, decoder = adain_pair(layout)
        whole = transfer(vgg, decoder, content, styles, [0.6, 0.4], alpha=0.8, tile_size=None)
        tiled = transfer(vgg, decoder, content, styles, [0.6, 0.4], alpha=0.8, tile_size=64)
        assert tiled.shape == whole.shape == (1, 3, 141, 187)
        assert (tiled - whole).abs().max() < ADAIN_TOLERANCE, layout
        if layout == "torchvision":  # region statistics are layout-independent: one layout suffices
            masked_whole = transfer(vgg, decoder, content, styles, [0.5, 0.5], mask=mask, tile_size=None)
            masked_tiled = transfer(vgg, decoder, content, styles, [0.5, 0.5], mask=mask, tile_size=64)
            assert (masked_tiled - masked_whole).abs().max() < ADAIN_TOLERANCE


@pytest.mark.slow
def test_tiled_gatys_gradient_equals_the_whole_image_gradient():
    # float64: in float32 the two summation orders differ by rounding (1e-3 relative at pixels
    # where large terms cancel); in float64 any real difference would show above 1e-10.
    vgg = load_vgg19(random_weights=True).double()
    g = torch.Generator().manual_seed(1)
    content = torch.rand(1, 3, 72, 104, generator=g, dtype=torch.float64)
    styles = [
        torch.rand(1, 3, 48, 48, generator=g, dtype=torch.float64),
        torch.rand(1, 3, 40, 36, generator=g, dtype=torch.float64),
    ]
    mask = torch.zeros(1, 1, 72, 104, dtype=torch.float64)
    mask[..., :50] = 1
    x = (content + 0.1 * torch.randn(content.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    layers = dict(style_layers=["relu1_1", "relu2_1", "relu3_1"], content_layer="relu2_2", tv_weight=0.5)
    for m, blend in ((None, [0.7, 0.3]), (mask, [0.5, 0.5])):
        whole = GatysObjective(vgg, content, styles, blend, GatysOptions(tile_size=None, **layers), m)
        tiled = GatysObjective(vgg, content, styles, blend, GatysOptions(tile_size=32, **layers), m)
        assert whole.plan is None and len(tiled.plan) >= 6
        loss_w, grad_w, _ = whole(x)
        loss_t, grad_t, _ = tiled(x)
        assert abs(loss_w - loss_t) <= 1e-10 * abs(loss_w)
        assert (grad_w - grad_t).abs().max() <= 1e-10 * grad_w.abs().max()
