"""Judges that are not the model: a class classifier and a style judge, both for the micro world.

Why separate judges: a figure about whether a style token learned must not come from the model
that painted the picture. The class judge is a small CNN trained on world renderings only (never
on a diffusion model's output); the style judge is the real Ghiasi style predictor, which ranks
a picture against the 19 paintings, each as the world paints it at the model's resolution.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from styleprompt.micro import JUDGE_DIR


class ClassJudge(nn.Module):
    """Four conv stages and a linear head: 64-px world pictures -> one of the world's classes."""

    def __init__(self, classes: int = 14):
        super().__init__()
        layers: list[nn.Module] = []
        width_in = 3
        for width in (32, 64, 96, 128):
            layers += [
                nn.Conv2d(width_in, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _pixels(images: Sequence[Image.Image], size: int = 64) -> torch.Tensor:
    arrays = [np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)) for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def load_class_judge() -> ClassJudge:
    from safetensors.torch import load_file

    model = ClassJudge()
    model.load_state_dict(load_file(str(JUDGE_DIR / "classifier.safetensors")))
    return model.eval()


@torch.no_grad()
def classify(images: Sequence[Image.Image], judge: ClassJudge | None = None) -> list[str]:
    """The world class the class judge sees in each picture."""
    from styleprompt.micro.world import CLASSES

    judge = judge or load_class_judge()
    logits = torch.cat([judge(_pixels(images[i : i + 128])) for i in range(0, len(images), 128)])
    return [CLASSES[int(k)] for k in logits.argmax(1)]


class StyleJudge:
    """Ghiasi style vectors ranked against the 19 paintings' world prototypes (or their own vectors)."""

    def __init__(self, gallery: str = "prototypes"):
        from safetensors import safe_open

        path = JUDGE_DIR / "style_gallery.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            self.names: list[str] = json.loads(handle.metadata()["names"])
            self.vectors = handle.get_tensor(gallery)

    @torch.no_grad()
    def vectors_of(self, images: Sequence[Image.Image]) -> torch.Tensor:
        from classic.ghiasi import style_vectors

        return torch.cat([style_vectors(list(images[i : i + 32])) for i in range(0, len(images), 32)])

    def similarities(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, 19] cosine similarity of each picture to each painting."""
        return F.cosine_similarity(vectors[:, None], self.vectors[None], dim=-1)

    def ranks(self, vectors: torch.Tensor, painting: str) -> torch.Tensor:
        """1 + how many paintings are closer than the intended one, per picture (1 is best)."""
        sims = self.similarities(vectors)
        target = sims[:, self.names.index(painting)]
        return 1 + (sims > target[:, None]).sum(1)
