"""VGG-19: both weight layouts load and compute what their own architectures compute; no silent random weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classic.vgg import (
    ADAIN_INDEX,
    CONV_INDICES,
    LAYER_INDEX,
    VGG19Features,
    adain_layout_state_dict,
    layer_stride,
    load_vgg19,
    receptive_radius,
)
from styleprompt.plumbing.errors import UserError
from tests.real_weights import hide_shared_weights

# VGG-19's convolution widths, written out independently of classic.vgg.
WIDTHS = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def torchvision_sequential() -> nn.Sequential:
    """torchvision's vgg19().features, rebuilt: Conv(pad 1), ReLU, MaxPool(2, 2)."""
    layers, cin = [], 3
    for w in WIDTHS:
        if w == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()]
            cin = w
    return nn.Sequential(*layers)


def vgg_normalised_sequential() -> nn.Sequential:
    """pytorch-AdaIN's `vgg` from net.py, rebuilt: 1x1 conv, then ReflectionPad+Conv, ReLU, ceil-mode pools."""
    layers, cin = [nn.Conv2d(3, 3, 1)], 3
    for w in WIDTHS:
        if w == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(cin, w, 3), nn.ReLU()]
            cin = w
    return nn.Sequential(*layers)


def randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_layer_names_strides_and_receptive_field():
    assert LAYER_INDEX["relu1_1"] == 1 and LAYER_INDEX["relu4_1"] == 20 and LAYER_INDEX["relu4_2"] == 22
    assert LAYER_INDEX["conv4_2"] == 21 and LAYER_INDEX["relu5_1"] == 29
    assert [layer_stride(n) for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "pool4")] == [
        1,
        2,
        4,
        8,
        16,
        16,
    ]
    assert receptive_radius("relu1_1") == 1 < receptive_radius("relu4_1") < receptive_radius("relu5_1")
    # pytorch-AdaIN's Sequential indices of the convolutions (net.py: 2, 5, 9, 12, 16, ... 51).
    assert [ADAIN_INDEX[i] for i in CONV_INDICES] == [2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51]


def test_torchvision_layout_loads_and_matches_torchvision_architecture(tmp_path):
    reference = torchvision_sequential()
    randomise(reference, 1)
    state = {f"features.{k}": v for k, v in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # the full torchvision file has the classifier too
    path = tmp_path / "vgg19-full.pth"
    torch.save(state, path)
    model = load_vgg19(path)
    assert model.layout == "torchvision" and not model.random_weights
    x = torch.rand(1, 3, 37, 45)
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected_relu3_1 = reference[: LAYER_INDEX["relu3_1"] + 1](normalised)
        expected_conv4_2 = reference[: LAYER_INDEX["conv4_2"] + 1](normalised)
        got = model(x, ["relu3_1", "conv4_2", "relu4_2"])
    torch.testing.assert_close(got["relu3_1"], expected_relu3_1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["conv4_2"], expected_conv4_2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["relu4_2"], expected_conv4_2.clamp_min(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_adain_vgg_normalised_layout_loads_and_matches_its_architecture(tmp_path, suffix):
    reference = vgg_normalised_sequential()
    randomise(reference, 2)
    path = tmp_path / f"vgg_normalised{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = load_vgg19(path)
    assert model.layout == "adain"
    x = torch.rand(1, 3, 43, 50)  # odd sizes: ceil-mode pooling must match
    with torch.no_grad():
        expected = reference[:31](x)  # pytorch-AdaIN's encoder: children()[:31] ends at relu4_1
        got = model(x, ["relu4_1"])["relu4_1"]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adain_layout_state_dict(model)["29.weight"], reference.state_dict()["29.weight"])


def test_truncated_vgg_normalised_refuses_deeper_layers(tmp_path):
    reference = vgg_normalised_sequential()[:31]  # the file many AdaIN repos ship: cut after relu4_1
    path = tmp_path / "vgg_cut.pth"
    torch.save(reference.state_dict(), path)
    model = load_vgg19(path)
    assert model(torch.rand(1, 3, 32, 32), ["relu4_1"])["relu4_1"].shape == (1, 512, 4, 4)
    with pytest.raises(UserError, match="stop at relu4_1"):
        model(torch.rand(1, 3, 32, 32), ["relu5_1"])


def test_random_weights_are_explicit_deterministic_and_labelled():
    a, b = load_vgg19(random_weights=True), load_vgg19(random_weights=True)
    assert a.random_weights is True
    x = torch.rand(1, 3, 24, 24)
    torch.testing.assert_close(a(x, ["relu2_1"])["relu2_1"], b(x, ["relu2_1"])["relu2_1"], rtol=0, atol=0)


def test_no_weights_offline_is_a_one_line_error_saying_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    hide_shared_weights(monkeypatch, tmp_path)
    monkeypatch.setenv("STYLEPROMPT_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        load_vgg19()
    message = str(info.value)
    assert "\n" not in message
    assert "vgg19-dcbb9e9d.pth" in message and str(tmp_path / "torch-home") in message
    assert "--vgg-weights" in message and "--random-weights" in message


def test_unreachable_hub_says_not_found_without_claiming_a_download(tmp_path, monkeypatch, capfd):
    """Online mode but no network: one line, and no "Downloading: URL" printed before it."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    hide_shared_weights(monkeypatch, tmp_path)  # else the conv1-3 set is found and nothing is fetched
    monkeypatch.delenv("STYLEPROMPT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "urlopen", unreachable)
    with pytest.raises(UserError, match="VGG-19 weights not found"):
        load_vgg19()
    printed = capfd.readouterr()
    assert "Downloading" not in printed.out + printed.err
    assert not any((tmp_path / "torch-home").rglob("*.pth")), "no partial file is left"


def test_hub_cache_file_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hide_shared_weights(monkeypatch, tmp_path)
    monkeypatch.setenv("STYLEPROMPT_OFFLINE", "1")
    reference = torchvision_sequential()
    randomise(reference, 3)
    cached = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()}, cached)
    model = load_vgg19()
    torch.testing.assert_close(model.features[0].weight, reference[0].weight)


def test_bad_weight_files_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_vgg19(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read"):
        load_vgg19(junk)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="not VGG-19"):
        load_vgg19(other)
    with pytest.raises(UserError, match="unknown VGG-19 layer"):
        VGG19Features()(torch.rand(1, 3, 8, 8), ["relu9_9"])


# -- the real shallow VGG-19 (../shared/weights/vgg19-conv1-3; skipped when absent) ----------------------


def test_conv1_3_weights_are_the_real_vgg_up_to_a_scale_per_channel():
    """Two sources, one network: the Keras conv1-3 files and WCT's normalised VGG-19 give the same
    relu1_1..relu3_1 up to one positive scale per channel (with the same padding)."""
    from classic import wct
    from tests.real_weights import require_weights

    folder = require_weights("vgg19-conv1-3")
    require_weights("wct")
    vgg = load_vgg19(str(folder))
    assert vgg.layout == "caffe" and vgg.truncated and vgg.random_weights is False
    for module in vgg.features:
        if isinstance(module, torch.nn.Conv2d):
            module.padding_mode = "reflect"  # the normalised VGG's padding, for an exact comparison
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    ours = vgg(x, ["relu1_1", "relu2_1", "relu3_1"])
    nets = wct.load_wct("wct")
    for level, name in ((1, "relu1_1"), (2, "relu2_1"), (3, "relu3_1")):
        a = ours[name][0].flatten(1)
        b = nets.level(level).encoder(x)[0].flatten(1)
        scale = b.norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)
        assert float((b - scale[:, None] * a).norm() / b.norm()) < 1e-5, name
    random = load_vgg19(random_weights=True)
    a, b = random(x, ["relu1_1"])["relu1_1"][0].flatten(1), ours["relu1_1"][0].flatten(1)
    assert float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) < 0.9  # not any network


def test_conv1_3_is_found_by_the_lookup_and_deeper_layers_name_the_full_vgg(tmp_path, monkeypatch):
    from tests.real_weights import SHARED_WEIGHTS, require_weights

    require_weights("vgg19-conv1-3")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no full VGG-19 cached
    monkeypatch.setenv("STYLEPROMPT_WEIGHTS", str(SHARED_WEIGHTS))
    vgg = load_vgg19()
    assert "vgg19-conv1-3" in vgg.source and vgg.truncated
    assert set(vgg(torch.rand(1, 3, 32, 32), ["relu3_4", "conv3_4"])) == {"relu3_4", "conv3_4"}
    with pytest.raises(UserError) as info:
        vgg(torch.rand(1, 3, 32, 32), ["relu1_1", "relu5_1"])
    message = str(info.value)
    assert "\n" not in message and "relu5_1 needs the full VGG-19" in message and "vgg19-dcbb9e9d.pth" in message


def test_bad_conv1_3_files_are_one_line_errors(tmp_path):
    import shutil

    from tests.real_weights import require_weights

    folder = tmp_path / "vgg"
    shutil.copytree(require_weights("vgg19-conv1-3"), folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    target = folder / "block2_conv2_kernel_0.npy"
    shutil.copy(folder / "block2_conv1_kernel_0.npy", target)  # the wrong layer
    with pytest.raises(UserError, match=r"block2_conv2_kernel_0\.npy: shape \(3, 3, 64, 128\), expected"):
        load_vgg19(str(folder))
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(UserError, match=r"block2_conv2_kernel_0\.npy: cannot be read"):
        load_vgg19(str(folder))
    target.unlink()
    with pytest.raises(UserError, match=r"block2_conv2_kernel_0\.npy: file not found"):
        load_vgg19(str(folder))
