"""Colour preservation: keep the content photo's colours while taking the style's texture.

Why two ways (Gatys, Bethge, Hertzmann & Shechtman, "Preserving Color in Neural Artistic Style
Transfer", 2016): *histogram matching* recolours the style image to the content's colour
statistics before the transfer (what pytorch-AdaIN's --preserve_color does), and keeps the
style's intensity texture; *luminance-only* transfer runs the method on luminance alone and puts
the content's chroma back afterwards (what neural-style's -original_colors approximates), which
keeps the content's colours exactly. Every method here (Gatys, AdaIN, Ghiasi) uses the same two
calls around its own transfer:

    content_in, styles_in = preserve_color_inputs(content, styles, mode)
    output = <the method>(content_in, styles_in)
    output = preserve_color_output(output, content, mode)

Tensors are [N, 3, H, W] RGB in [0, 1]; PIL images are accepted too and come back as PIL.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import torch
from PIL import Image

from styleprompt.plumbing.errors import UserError

MODES = ("luminance", "histogram")

# RGB <-> YIQ (NTSC), the colour space Gatys et al. use for luminance-only transfer.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)

ImageLike = TypeVar("ImageLike", torch.Tensor, Image.Image)


def _as_tensor(img: torch.Tensor | Image.Image) -> torch.Tensor:
    if isinstance(img, Image.Image):
        from styleprompt.plumbing.images import pil_to_tensor

        return pil_to_tensor(img)
    return img


def _like(result: torch.Tensor, original: torch.Tensor | Image.Image):
    if isinstance(original, Image.Image):
        from styleprompt.plumbing.images import tensor_to_pil

        return tensor_to_pil(result)
    return result


def _apply_matrix(t: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(t), t)


def rgb_to_yiq(rgb: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(rgb, _RGB_TO_YIQ)


def yiq_to_rgb(yiq: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(yiq, _YIQ_TO_RGB)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Y of YIQ, [N, 1, H, W]."""
    return rgb_to_yiq(rgb)[:, :1]


def match_color(source: ImageLike, target: torch.Tensor | Image.Image, eps: float = 1e-5) -> ImageLike:
    """Recolour `source` so its RGB mean and covariance equal `target`'s (linear colour transfer).

    Uses the symmetric matrix square root (the "Image Analogies" variant Gatys et al. found to
    give the most faithful colours): x' = Ct^1/2 Cs^-1/2 (x - mu_s) + mu_t. Pixel counts may
    differ; only statistics are compared.
    """
    src, tgt = _as_tensor(source).float(), _as_tensor(target).float()
    out = []
    for i in range(src.shape[0]):
        s = src[i].reshape(3, -1).double()
        t = tgt[min(i, tgt.shape[0] - 1)].reshape(3, -1).double()
        mu_s, mu_t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
        cov_s = torch.cov(s) + eps * torch.eye(3, dtype=s.dtype)
        cov_t = torch.cov(t) + eps * torch.eye(3, dtype=s.dtype)
        transform = _sqrtm(cov_t) @ torch.linalg.inv(_sqrtm(cov_s))
        recoloured = transform @ (s - mu_s) + mu_t
        out.append(recoloured.reshape(src.shape[1:]).float().clamp(0, 1))
    return _like(torch.stack(out), source)


def _sqrtm(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def luminance_image(rgb: ImageLike) -> ImageLike:
    """A grey RGB image of the luminance (the networks expect three channels)."""
    t = _as_tensor(rgb)
    return _like(luminance(t).expand(-1, 3, -1, -1).clamp(0, 1).contiguous(), rgb)


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and std (Gatys et al. eq. 3).

    Without it a dark painting would darken the photo even though only texture should move.
    """
    ys, yc = luminance(style), luminance(content)
    matched = (ys - ys.mean()) / (ys.std() + 1e-8) * yc.std() + yc.mean()
    return matched.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def combine_luminance(stylized: ImageLike, content: torch.Tensor | Image.Image) -> ImageLike:
    """The stylised image's luminance with the content's chroma (I and Q)."""
    out, src = _as_tensor(stylized), _as_tensor(content)
    if src.shape[-2:] != out.shape[-2:]:
        src = torch.nn.functional.interpolate(
            src, size=out.shape[-2:], mode="bilinear", align_corners=False, antialias=True
        )
    yiq = torch.cat([luminance(out), rgb_to_yiq(src.to(out))[:, 1:]], dim=1)
    return _like(yiq_to_rgb(yiq).clamp(0, 1), stylized)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"unknown colour preservation mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def preserve_color_inputs(
    content: torch.Tensor, styles: Sequence[torch.Tensor], mode: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Inputs for the transfer: recoloured styles ('histogram') or luminance images ('luminance')."""
    check_mode(mode)
    if mode == "histogram":
        return content, [match_color(s, content) for s in styles]
    return luminance_image(content), [match_luminance(s, content) for s in styles]


def preserve_color_output(output: torch.Tensor, content: torch.Tensor, mode: str) -> torch.Tensor:
    """Undo the luminance trick on the result; histogram matching needs nothing afterwards."""
    check_mode(mode)
    return combine_luminance(output, content) if mode == "luminance" else output
