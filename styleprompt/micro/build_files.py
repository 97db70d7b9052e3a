"""How the micro build's stages write and trust their results: atomically, and only when intact.

Why: every stage is skipped when its result is already there, so a result torn by a kill or a
full disk (a truncated latents file) used to be taken as done and failed the next stage with a
traceback. Results are written through `styleprompt.plumbing.files.atomic_path` (a reader sees
the old file or the whole new one), and a stage asks `intact_*` before it skips: a damaged result
is moved aside (`*.damaged-N`, not deleted: it may be evidence) and the stage runs again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from styleprompt.plumbing.files import atomic_path

log = logging.getLogger("styleprompt.micro.build")


def progress(**kwargs):
    """A tqdm bar (ETA shown), imported late so the stages' modules import cheaply."""
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


def intact_tensors(path: Path) -> bool:
    """Whether `path` is a complete safetensors file (its header parses and covers the file)."""
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception:  # noqa: BLE001 - safetensors raises its own SafetensorError for a torn file
        return False
    return True


def intact_model_folder(folder: Path) -> bool:
    """Whether `folder` is a complete diffusers model folder (config.json and every weights file readable)."""
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    weights = list(folder.glob("*.safetensors"))
    return bool(weights) and all(intact_tensors(p) for p in weights)


def done(path: Path, check) -> bool:
    """True when the stage result at `path` is there and intact; a damaged one is moved aside (so it is rebuilt)."""
    if not path.exists():
        return False
    if check(path):
        return True
    aside = set_aside(path)
    log.warning("%s is damaged (torn by a kill or a full disk?); moved to %s and rebuilt", path, aside.name)
    return False


def set_aside(path: Path) -> Path:
    """Move a damaged `path` to `<name>.damaged-<time>[-N]` (kept as evidence) and return where it went.

    Why the counter: two results damaged within the same second (a stage that falls back twice)
    would otherwise aim at one name, and renaming a folder onto a non-empty one fails."""
    stamp = int(time.time())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    path.replace(aside)
    return aside


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def save_model_folder(model, folder: Path, fix=None) -> Path:
    """`model.save_pretrained` into a hidden folder beside `folder`, then one rename (`fix` edits it first)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if fix is not None:
        fix(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


def read_json(path: Path) -> dict | None:
    """A small JSON object a stage wrote (a done marker), or None when it is missing or damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
