"""From a folder of artworks to training latents: validated images, captions, random crops and flips.

Why latents are cached: the VAE is frozen, so encoding the same picture every step (as the
diffusers example does) is wasted work. Each artwork is encoded once per orientation at a size a
little larger than the training resolution; each step takes a random crop of the cached latent
distribution (mean, std) and samples from it, which is the example's `latent_dist.sample()` on a
random crop, at a fraction of the cost.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, ImageOps

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import list_images, load_image

log = logging.getLogger(__name__)

# Crops cover 1/CROP_MARGIN of the short side: enough variety for textures, little lost content.
CROP_MARGIN = 1.15
# Very wide or tall artworks are centre-cropped to this aspect first so latents stay small.
MAX_ASPECT = 2.0


@dataclass
class Artwork:
    path: Path
    image: Image.Image
    caption: str | None


def read_caption(image_path: Path) -> str | None:
    """The text of `name.txt` beside `name.jpg`, used for [filewords]; None when absent or empty."""
    caption_path = image_path.with_suffix(".txt")
    if not caption_path.is_file():
        return None
    try:
        text = caption_path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return " ".join(text.split()) or None


def load_artworks(folder: str | os.PathLike) -> list[Artwork]:
    """Every readable image in `folder`; unreadable ones are skipped with a warning.

    Raises UserError when the folder is missing, empty, or holds no readable image.
    """
    paths = list_images(folder)
    if not paths:
        raise UserError(f"no images (jpg, png, webp) in {folder}; put 3-20 artworks of one style there")
    artworks, skipped, first_problem = [], [], ""
    for path in paths:
        try:
            artworks.append(Artwork(path, load_image(path), read_caption(path)))
        except UserError as exc:
            skipped.append(path.name)
            first_problem = first_problem or str(exc)
            log.warning("skipping %s", exc)
    if not artworks:
        raise UserError(f"none of the {len(paths)} image files in {folder} could be read (first: {first_problem})")
    if skipped:
        log.warning("training on %d images; skipped %d unreadable: %s", len(artworks), len(skipped), ", ".join(skipped))
    return artworks


def training_view(image: Image.Image, resolution: int, multiple: int) -> Image.Image:
    """Resize so the short side is a bit above `resolution` (room for random crops).

    Both sides are multiples of `multiple` (the VAE's scale factor), so crops in latent space
    map to whole pixels.
    """
    w, h = image.size
    if max(w, h) / min(w, h) > MAX_ASPECT:
        if w > h:
            image = ImageOps.fit(image, (int(h * MAX_ASPECT), h))
        else:
            image = ImageOps.fit(image, (w, int(w * MAX_ASPECT)))
        w, h = image.size
    short = math.ceil(resolution * CROP_MARGIN / multiple) * multiple
    scale = short / min(w, h)
    nw = max(resolution, round(w * scale / multiple) * multiple)
    nh = max(resolution, round(h * scale / multiple) * multiple)
    return image.resize((nw, nh), Image.Resampling.LANCZOS)


def image_to_model_input(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> [1, 3, H, W] in [-1, 1], the VAE's input range."""
    from styleprompt.plumbing.images import pil_to_tensor

    return pil_to_tensor(image) * 2.0 - 1.0


class CropWindow(NamedTuple):
    """Where one training crop came from: cache entry (2 per artwork: plain, mirrored), top, left in latent pixels."""

    entry: int
    top: int
    left: int


class LatentCache:
    """Cached VAE latent distributions of every artwork, both orientations; random crops from them."""

    def __init__(self, means: list[torch.Tensor], stds: list[torch.Tensor], captions: list[str | None], crop: int):
        self.means, self.stds, self.captions, self.crop = means, stds, captions, crop

    @classmethod
    @torch.no_grad()
    def build(cls, artworks: list[Artwork], vae, resolution: int, scale_factor: int, device, dtype) -> "LatentCache":
        means, stds, captions = [], [], []
        for art in artworks:
            view = training_view(art.image, resolution, scale_factor)
            for flipped in (False, True):
                pixels = image_to_model_input(ImageOps.mirror(view) if flipped else view)
                dist = vae.encode(pixels.to(device, dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
                captions.append(art.caption)
        return cls(means, stds, captions, resolution // scale_factor)

    def __len__(self) -> int:
        return len(self.means)

    def sample(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, list[str | None], list[CropWindow]]:
        """A batch of latents: random artwork, orientation and crop, then a draw from N(mean, std);
        with each item's caption and crop window (SDXL conditions on where the crop was)."""
        latents, captions, windows = [], [], []
        for _ in range(batch_size):
            i = int(torch.randint(len(self.means), (1,), generator=generator))
            mean, std = self.means[i], self.stds[i]
            h, w = mean.shape[-2:]
            top = int(torch.randint(h - self.crop + 1, (1,), generator=generator))
            left = int(torch.randint(w - self.crop + 1, (1,), generator=generator))
            window = (..., slice(top, top + self.crop), slice(left, left + self.crop))
            eps = torch.randn(mean[window].shape, generator=generator).to(mean.device)
            latents.append(mean[window] + std[window] * eps)
            windows.append(CropWindow(i, top, left))
            captions.append(self.captions[i])
        return torch.cat(latents), captions, windows
