"""The build's first stage: the world's pictures in every style word (and the optional blends).

Why a stage of its own: everything after it trains on these pictures, and rendering them is the
one part that needs the paintings and the Ghiasi network. One safetensors file per style word,
each written atomically and rebuilt when torn.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from styleprompt.micro import HELD_OUT, STYLE_WORDS, style_words, world
from styleprompt.micro.build_files import done, intact_tensors, log, save_tensors
from styleprompt.plumbing.errors import UserError


def check_style_folder(folder: str | Path) -> Path:
    """The folder of the world's 19 paintings, each a readable file, or one line saying what is missing."""
    import os

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserError(f"--styles {path}: not a folder; give the folder of the 19 style paintings")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"--styles {path}: the folder cannot be read (permission denied); make it readable")
    for name in [*STYLE_WORDS.values(), *HELD_OUT]:
        painting = path / name
        if not painting.is_file():
            raise UserError(f"--styles {path}: {name} is missing (the world needs all 19 paintings); pass --styles DIR")
        if not os.access(painting, os.R_OK):
            raise UserError(f"--styles {path}: {name} cannot be read (permission denied); make it readable")
    return path


def load_painting(folder: Path, name: str):
    from styleprompt.plumbing.images import load_image

    return load_image(folder / name)


def stage_data(out: Path, styles: Path, per_class: int, seed: int) -> None:
    """`per_class` pictures of every class in every style word, one safetensors file per word."""
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for k, word in enumerate(style_words()):
        path = folder / f"{word}.safetensors"
        if done(path, intact_tensors):
            continue
        t0 = time.time()
        style = None if word == world.PLAIN_STYLE else world.style_vector_of(load_painting(styles, STYLE_WORDS[word]))
        pictures = world.make_pictures(style, world.CLASSES, per_class * len(world.CLASSES), seed=seed * 1000 + k)
        images = torch.from_numpy(np.stack([np.asarray(p.image) for p in pictures]))
        classes = torch.tensor([world.CLASSES.index(p.cls) for p in pictures])
        save_tensors({"images": images, "classes": classes}, path)
        log.warning("data: %s, %d pictures in %.0f s", word, len(pictures), time.time() - t0)


def load_data(out: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uint8 images [N, 64, 64, 3], class index [N], style-word index [N])."""
    from safetensors.torch import load_file

    images, classes, words = [], [], []
    for k, word in enumerate(style_words()):
        part = load_file(str(out / "data" / f"{word}.safetensors"))
        images.append(part["images"])
        classes.append(part["classes"])
        words.append(torch.full_like(part["classes"], k))
    return torch.cat(images), torch.cat(classes), torch.cat(words)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def stage_blend_data(out: Path, styles: Path, combos: int, seed: int) -> None:
    """`combos` random (painting, painting, mix) blends, each painted over every class once."""
    path = out / "data" / "blends.safetensors"
    if done(path, intact_tensors):
        return
    t0 = time.time()
    words = list(STYLE_WORDS)
    vectors = [world.style_vector_of(load_painting(styles, STYLE_WORDS[w])) for w in words]
    rng = np.random.default_rng(seed + 7)
    images, classes, first, second, mix = [], [], [], [], []
    for k in range(combos):
        a, b = (int(i) for i in rng.choice(len(words), 2, replace=False))
        lam = float(rng.uniform(0.15, 0.85))
        style = lam * vectors[a] + (1 - lam) * vectors[b]
        for picture in world.make_pictures(style, world.CLASSES, len(world.CLASSES), seed=seed * 1000 + 900_000 + k):
            images.append(np.asarray(picture.image))
            classes.append(world.CLASSES.index(picture.cls))
            first.append(a)
            second.append(b)
            mix.append(lam)
    tensors = {
        "images": torch.from_numpy(np.stack(images)),
        "classes": torch.tensor(classes),
        "first": torch.tensor(first),
        "second": torch.tensor(second),
        "mix": torch.tensor(mix, dtype=torch.float32),
    }
    save_tensors(tensors, path)
    log.warning("blends: %d pictures in %.0f s", len(images), time.time() - t0)
