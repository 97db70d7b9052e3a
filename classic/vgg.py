"""VGG-19 features for Gatys, AdaIN and evaluate: one module, three weight layouts, taps by layer name.

Why one module for both: the two baselines are only comparable if they read the same network.
Users hold VGG-19 weights in two shapes: torchvision's `vgg19-dcbb9e9d.pth` (keys
`features.N.weight`, ImageNet mean/std normalisation) and the `vgg_normalised.pth` that
pytorch-AdaIN and AdaIN-style share (an `nn.Sequential` whose first layer is a 1x1 convolution
that turns [0, 1] RGB into Caffe's mean-subtracted BGR, with reflection padding and ceil-mode
pooling). Both load into the same torchvision-shaped module; the AdaIN layout switches the
padding and pooling to what those weights were trained with, so its decoders work unchanged.
The third, `caffe`, is the original ImageNet network's conv1_1..conv3_4 as Keras .npy files
(the `vgg19-conv1-3` set, classic.weights): real features for every layer up to relu3_4, and a
one-line error that names the full VGG-19 for anything deeper.

We never depend on torchvision (its wheel breaks beside this CPU torch); the network is a few
lines of `torch.nn` with torchvision's indices, so its state dicts load as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from styleprompt.plumbing.errors import UserError

# torchvision's VGG-19 `features`: output channels of each conv, "M" for a 2x2 max-pool.
_CONFIG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)

TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# The Caffe network sees 0-255 inputs, so its features are ~255 x 0.226 larger than torchvision's
# (inputs divided by ImageNet's std): Gram losses then outweigh content losses by that factor
# squared and L-BFGS diverges with Gatys' weights (tuned for torchvision). Its taps are divided by
# this one constant, a change of units that keeps every ratio between channels and layers.
CAFFE_FEATURE_SCALE = 255.0 * 0.226
LAYOUTS = ("torchvision", "adain", "caffe")
CONV13_SET = "vgg19-conv1-3"  # the shallow ImageNet VGG-19 (classic.weights), conv1_1..conv3_4
# Keras' names for conv1_1..conv3_4, one .npy per kernel ([3, 3, in, out]) and bias.
KERAS_NAMES = [f"block{b}_conv{i}" for b, n in ((1, 2), (2, 2), (3, 4)) for i in range(1, n + 1)]
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> list[str]:
    """Names in torchvision's order: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..."""
    names: list[str] = []
    block, index = 1, 1
    for item in _CONFIG:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


LAYER_NAMES: list[str] = _layer_names()
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}
CONV_INDICES: list[int] = [i for i, name in enumerate(LAYER_NAMES) if name.startswith("conv")]


def layer_stride(name: str) -> int:
    """Pixels of the input per feature pixel at `name` (1 for block 1, 2 for block 2, ...).

    A pool layer's output belongs to the next block's grid: pool1 has stride 2.
    """
    check_layer_names([name])
    block = int(name[4])
    return 2**block if name.startswith("pool") else 2 ** (block - 1)


def receptive_radius(name: str) -> int:
    """How many input pixels on each side can influence one feature pixel at `name`.

    Tiling uses it: a tile whose halo is at least this wide computes the features of its core
    exactly as the whole image would, so tiled results equal untiled ones.
    """
    check_layer_names([name])
    radius, stride = 0, 1
    for layer in LAYER_NAMES[: LAYER_INDEX[name] + 1]:
        if layer.startswith("conv"):
            radius += stride  # a 3x3 convolution reaches one feature pixel further each side
        elif layer.startswith("pool"):
            radius += stride  # a 2x2 window reaches one more input pixel (ceil mode: at most one)
            stride *= 2
    return radius


def check_layer_names(names: Iterable[str]) -> list[str]:
    """Raise a one-line UserError naming the first unknown layer and the valid pattern."""
    names = list(names)
    for name in names:
        if name not in LAYER_INDEX:
            raise UserError(
                f"unknown VGG-19 layer {name!r}: use names like relu1_1, relu4_2, conv4_2, pool3 (blocks 1-5)"
            )
    return names


class VGG19Features(nn.Module):
    """VGG-19 convolutional part with torchvision's parameter names; returns named taps.

    Input: [N, 3, H, W] RGB in [0, 1]. The input transform is inside: ImageNet mean/std for
    torchvision-layout weights, the 1x1 convolution for AdaIN's `vgg_normalised` weights.
    """

    def __init__(self, layout: str = "torchvision") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        self.layout = layout
        self.random_weights = False
        self.source = "uninitialised"
        adain = layout == "adain"
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=adain))
            else:
                layers.append(
                    nn.Conv2d(in_channels, int(item), 3, padding=1, padding_mode="reflect" if adain else "zeros")
                )
                layers.append(nn.ReLU(inplace=True))
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        # AdaIN's first layer: RGB [0,1] -> Caffe BGR*255 - mean. Identity-free for torchvision.
        self.input_conv = nn.Conv2d(3, 3, 1) if adain else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("caffe_mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        # Highest layer index with weights (vgg_normalised files are often cut after relu4_1).
        self.max_index = len(LAYER_NAMES) - 1
        self.requires_grad_(False)
        self.eval()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_conv is not None:
            return self.input_conv(x)
        if self.layout == "caffe":  # the original Caffe model's input: BGR, 0-255, mean subtracted
            return x.flip(1) * 255.0 - self.caffe_mean
        return (x - self.mean) / self.std

    @property
    def truncated(self) -> bool:
        """True when the weights stop before relu5_1 (the shallow conv1-3 set)."""
        return self.max_index < LAYER_INDEX["relu5_1"]

    def forward(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        wanted = check_layer_names(layers)
        if not wanted:
            return {}
        last = max(LAYER_INDEX[name] for name in wanted)
        if last > self.max_index:
            raise UserError(
                f"layer {LAYER_NAMES[last]} needs the full VGG-19, but these weights ({self.source}) stop at "
                f"{LAYER_NAMES[self.max_index]}: pass --vgg-weights with torchvision's {TORCHVISION_FILE}, or choose "
                f"layers up to {LAYER_NAMES[self.max_index]} (e.g. --style-layers relu1_1,relu2_1,relu3_1 "
                "--content-layer relu3_2)"
            )
        want_index = {LAYER_INDEX[name] for name in wanted}
        out: dict[str, torch.Tensor] = {}
        h = self.normalise(x)
        for index in range(last + 1):
            module = self.features[index]
            if isinstance(module, nn.ReLU):
                # In place unless the conv output just before was asked for (it would be overwritten).
                h = F.relu(h) if (index - 1) in want_index else F.relu_(h)
            else:
                h = module(h)
            if index in want_index:
                out[LAYER_NAMES[index]] = h / CAFFE_FEATURE_SCALE if self.layout == "caffe" else h
        return {name: out[name] for name in wanted}


def _init_random(model: VGG19Features, seed: int) -> None:
    """torchvision's VGG init (Kaiming normal, fan-out) from a fixed seed: same net every run."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.features:
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_out) ** 0.5)
                module.bias.zero_()


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Read a .safetensors or torch pickle file as a flat {name: tensor} dict, safely.

    Pickles are opened with weights_only=True: a weights file from the internet is data, and
    must not be able to run code. `what` names the file's role in the error message.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user problem
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot read {what} {p}: not a weights file torch or safetensors can open ({reason})"
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"cannot read {what} {p}: expected a state dict of tensors")
    return dict(state)


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """'torchvision' (features.N / N with a 3x3 first conv) or 'adain' (a 1x1 first conv)."""
    if "features.0.weight" in state:
        return "torchvision"
    first = state.get("0.weight")
    if first is not None and tuple(first.shape) == (3, 3, 1, 1):
        return "adain"
    if first is not None and tuple(first.shape) == (64, 3, 3, 3):
        return "torchvision"
    return "unknown"


def _adain_index_map() -> dict[int, int]:
    """torchvision conv index -> index in vgg_normalised's Sequential (a pad precedes each conv)."""
    mapping: dict[int, int] = {}
    position = 1  # 0 is the 1x1 input convolution
    for index, name in enumerate(LAYER_NAMES):
        if name.startswith("conv"):
            position += 1  # ReflectionPad2d
            mapping[index] = position
        position += 1
    return mapping


ADAIN_INDEX = _adain_index_map()


def load_state_into(model: VGG19Features, state: Mapping[str, torch.Tensor], layout: str, origin: str) -> None:
    """Copy weights from either layout; the deepest conv present sets `model.max_index`."""
    if layout == "torchvision":
        prefix = "features." if "features.0.weight" in state else ""
        source_of = {i: f"{prefix}{i}" for i in CONV_INDICES}
    else:
        source_of = {i: str(ADAIN_INDEX[i]) for i in CONV_INDICES}
        model.input_conv.weight.data.copy_(state["0.weight"])
        model.input_conv.bias.data.copy_(state["0.bias"])
    loaded = -1
    for index in CONV_INDICES:
        key = source_of[index]
        if f"{key}.weight" not in state:
            break
        conv = model.features[index]
        weight, bias = state[f"{key}.weight"], state.get(f"{key}.bias")
        if tuple(weight.shape) != tuple(conv.weight.shape) or bias is None:
            raise UserError(
                f"{origin}: layer {key} has shape {tuple(weight.shape)}, expected {tuple(conv.weight.shape)}; is this VGG-19?"
            )
        conv.weight.data.copy_(weight.float())
        conv.bias.data.copy_(bias.float())
        loaded = index
    if loaded < 0:
        raise UserError(
            f"{origin}: no VGG-19 convolution weights in it (expected features.0.weight or vgg_normalised keys)"
        )
    model.max_index = loaded + 1  # the ReLU after the last loaded conv is usable too


def load_keras_folder(folder: Path, device: str | torch.device = "cpu") -> VGG19Features:
    """VGG-19 conv1_1..conv3_4 from a folder of Keras .npy files (block1_conv1_kernel_0.npy, ...).

    The original Caffe network's weights: inputs are BGR, 0-255, ImageNet mean subtracted, with
    zero padding and floor pooling, as Keras and Caffe run it. Deeper layers are absent: asking
    for relu4_1 or relu5_1 is a one-line error that says the full VGG-19 is needed.
    """
    import numpy as np

    model = VGG19Features("caffe")
    for name, index in zip(KERAS_NAMES, CONV_INDICES):
        conv = model.features[index]
        for part, target in (("kernel", conv.weight), ("bias", conv.bias)):
            path = folder / f"{name}_{part}_0.npy"
            expected_shape = (3, 3, conv.in_channels, conv.out_channels) if part == "kernel" else (conv.out_channels,)
            if not path.is_file():
                raise UserError(f"{path}: file not found (expected VGG-19's {name} {part}, shape {expected_shape})")
            try:
                array = np.load(path, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - truncated or foreign files: one line
                raise UserError(
                    f"{path}: cannot be read as a .npy array ({str(exc)[:100]}); expected VGG-19's {name} {part}"
                ) from None
            if tuple(array.shape) != expected_shape:
                raise UserError(
                    f"{path}: shape {tuple(array.shape)}, expected {expected_shape} (VGG-19's {name} {part})"
                )
            tensor = torch.from_numpy(array.astype("float32"))
            target.data.copy_(tensor.permute(3, 2, 0, 1) if part == "kernel" else tensor)
    model.max_index = LAYER_INDEX["relu3_4"]
    model.source = f"{folder} (conv1-3)"
    return model.to(device)


def is_keras_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / f"{KERAS_NAMES[0]}_kernel_0.npy").is_file()


def default_weights_path() -> Path:
    """Where torch's hub cache keeps the torchvision file (TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def _offline() -> bool:
    return any(
        os.environ.get(v, "0").lower() not in ("0", "", "false") for v in ("STYLEPROMPT_OFFLINE", "HF_HUB_OFFLINE")
    )


def _hub_state_dict() -> dict[str, torch.Tensor]:
    """The torchvision file from torch's hub cache, downloading it once when online."""
    cached = default_weights_path()
    missing = (
        f"VGG-19 weights not found: put {TORCHVISION_FILE} in {cached.parent} "
        "or pass --vgg-weights PATH (torchvision or vgg_normalised.pth), or --random-weights for a demo"
    )
    if not cached.is_file() and _offline():
        raise UserError(missing + " (offline mode is set)")
    if not cached.is_file():
        # download_url_to_file, not load_state_dict_from_url: the latter printed "Downloading: URL"
        # before it tried, so an offline run said it was downloading, then that nothing was found.
        # This one connects first (the progress bar shows only once bytes flow) and renames at the end.
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(TORCHVISION_URL, str(cached), progress=True)
        except Exception:  # noqa: BLE001 - network errors come in many types; the user needs one line
            raise UserError(missing) from None
    return torch.load(cached, map_location="cpu", weights_only=True)


def shallow_folder() -> Path | None:
    """The conv1-3 set found by classic.weights ($STYLEPROMPT_WEIGHTS, then ../shared/weights)."""
    from classic.weights import find_set

    return find_set(CONV13_SET)


def load_vgg19(
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> VGG19Features:
    """VGG-19 features from a file (either layout) or a folder of the conv1-3 .npy files; without
    one, torch's hub cache, then the conv1-3 set (classic.weights), then a download; or seeded
    random weights.

    Random weights only when asked: a stylisation with them is a demo of the machinery, not of
    the method, and the model says so in `.random_weights` (every output records it).
    """
    if weights is not None and random_weights:
        raise UserError("give either --vgg-weights or --random-weights, not both")
    if random_weights:
        model = VGG19Features("torchvision")
        _init_random(model, seed)
        model.random_weights = True
        model.source = f"random (seed {seed})"
    elif weights is not None and is_keras_folder(weights):
        return load_keras_folder(Path(weights), device)
    elif weights is None and not default_weights_path().is_file() and shallow_folder() is not None:
        return load_keras_folder(shallow_folder(), device)  # type: ignore[arg-type]
    else:
        if weights is not None:
            state, origin = read_state_dict(weights, "VGG weights"), str(weights)
        else:
            state, origin = _hub_state_dict(), str(default_weights_path())
        layout = detect_layout(state)
        if layout == "unknown":
            raise UserError(
                f"{origin}: not VGG-19 weights in torchvision layout (features.N.weight) or AdaIN's vgg_normalised layout"
            )
        model = VGG19Features(layout)
        load_state_into(model, state, layout, origin)
        model.source = origin
    return model.to(device)


def adain_layout_state_dict(model: VGG19Features) -> dict[str, torch.Tensor]:
    """The model's weights as vgg_normalised.pth keys (for tests and for sharing with AdaIN tools)."""
    if model.input_conv is None:
        raise ValueError("only an AdaIN-layout model has the 1x1 input convolution")
    state = {"0.weight": model.input_conv.weight.detach().clone(), "0.bias": model.input_conv.bias.detach().clone()}
    for index in CONV_INDICES:
        conv = model.features[index]
        state[f"{ADAIN_INDEX[index]}.weight"] = conv.weight.detach().clone()
        state[f"{ADAIN_INDEX[index]}.bias"] = conv.bias.detach().clone()
    return state
