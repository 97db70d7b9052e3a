"""The build's judge stages: the style judge's gallery and the class judge, written under `--output`.

Why under the build folder: they used to be written straight into the package
(`styleprompt/micro/judge`), so a build without `--install` replaced the shipped class judge with
its own, and a "build from nothing" reused the shipped gallery. Now the package changes only when
`export.install` copies them there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from styleprompt.micro import HELD_OUT, STYLE_WORDS, world
from styleprompt.micro.build_files import done, intact_tensors, progress, read_json, save_tensors
from styleprompt.micro.world_data import load_data, load_painting, to_model_input
from styleprompt.plumbing.files import write_text_atomic

GALLERY = "style_gallery.safetensors"
CLASSIFIER = "classifier.safetensors"


def judge_folder(out: Path) -> Path:
    return out / "judge"


def stage_gallery(out: Path, styles: Path, per_class: int = 2, seed: int = 777) -> None:
    """Each of the 19 paintings' style as the world paints it at the model's resolution.

    Why not only the painting's own vector: a 64-px picture cannot carry a painting's fine
    detail, so the judge scores world renderings against the paintings' own vectors at 0.69
    retrieval@1, against these world prototypes at 0.99 (docs/micro.md). Both galleries ship;
    the figures use the prototypes and report the paintings' own vectors beside them.
    """
    path = judge_folder(out) / GALLERY
    if done(path, intact_tensors):
        return
    from classic.ghiasi import style_vectors

    names = sorted([*STYLE_WORDS.values(), *HELD_OUT])
    own, proto = [], []
    for k, name in enumerate(progress(iterable=names, desc="judge gallery")):
        painting = load_painting(styles, name)
        pictures = world.make_pictures(
            world.style_vector_of(painting), world.CLASSES, per_class * len(world.CLASSES), seed=seed * 1000 + k
        )
        with torch.no_grad():
            vectors = style_vectors([p.image for p in pictures] + [painting])
        proto.append(F.normalize(vectors[:-1], dim=-1).mean(0))
        own.append(vectors[-1])
    save_tensors(
        {"prototypes": torch.stack(proto), "paintings": torch.stack(own)}, path, metadata={"names": json.dumps(names)}
    )


def stage_classifier(out: Path, styles: Path, steps: int, seed: int, test_per_class: int = 6) -> dict:
    """A small CNN trained on world renderings only; tested on fresh renderings in all 19 styles + photo."""
    from styleprompt.micro.judges import ClassJudge

    path = judge_folder(out) / CLASSIFIER
    report_path = out / "classifier.json"
    report = read_json(report_path)
    if report is not None and done(path, intact_tensors):
        return report
    images, classes, _ = load_data(out)
    torch.manual_seed(seed)
    model = ClassJudge().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for step in progress(iterable=range(1, steps + 1), desc="class judge"):
        idx = torch.randint(len(images), (64,), generator=generator)
        x = to_model_input(images[idx])
        flip = torch.rand(64, generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        loss = F.cross_entropy(model(x), classes[idx])
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    names = sorted([*STYLE_WORDS.values(), *HELD_OUT])
    correct = total = 0
    per_style = {}
    for k, name in enumerate([None, *names]):
        vector = None if name is None else world.style_vector_of(load_painting(styles, name))
        pictures = world.make_pictures(vector, world.CLASSES, test_per_class * len(world.CLASSES), seed=900_000 + k)
        with torch.no_grad():
            x = to_model_input(torch.from_numpy(np.stack([np.asarray(p.image) for p in pictures])))
            predicted = model(x).argmax(1)
        truth = torch.tensor([world.CLASSES.index(p.cls) for p in pictures])
        hits = int((predicted == truth).sum())
        per_style[name or world.PLAIN_STYLE] = hits / len(pictures)
        correct, total = correct + hits, total + len(pictures)
    save_tensors(dict(model.state_dict()), path)
    report = {"accuracy": correct / total, "pictures": total, "per_style": per_style, "steps": steps}
    write_text_atomic(report_path, json.dumps(report, indent=1))
    return report
