"""Training checkpoints as safetensors + JSON, written atomically, resumable.

Why not `accelerator.save_state`: its loader unpickles with `weights_only=False`, and a
checkpoint folder is a file users share. Our trainable state is tiny (the placeholder vectors,
AdamW's moments, the LR schedule, the RNG) and fits safetensors and JSON exactly, so nothing is
ever unpickled. A checkpoint is written to a hidden temporary folder and renamed into place, so a
kill leaves either the previous checkpoint or the complete new one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classic.files import atomic_path
from styleprompt.errors import UserError

_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingState:
    step: int
    vectors: torch.Tensor
    optimizer: dict
    lr_scheduler: dict
    scaler: dict | None
    fingerprint: dict


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (state.json present) sorted by step."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _NAME.match(child.name)
        if match and (child / "state.json").is_file() and (child / "state.safetensors").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _split_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, slots in opt_state["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
                meta["state"][str(pid)][key] = "tensor"
            else:
                meta["state"][str(pid)][key] = value
    return tensors, meta


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, slots in meta["state"].items():
        state[int(pid)] = {
            key: tensors[f"optimizer.{pid}.{key}"] if kind == "tensor" else kind for key, kind in slots.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if torch.is_tensor(obj):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if callable(obj):
        return None
    return obj


def save_checkpoint(folder: Path, state: TrainingState, keep: int) -> Path:
    """Write checkpoint-<step> atomically, then drop all but the newest `keep`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".tmp-checkpoint-*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    final = folder / f"checkpoint-{state.step}"
    tmp = folder / f".tmp-checkpoint-{state.step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    opt_tensors, opt_meta = _split_optimizer(state.optimizer)
    tensors = {"vectors": state.vectors.detach().float().cpu().contiguous()}
    tensors.update(opt_tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    meta = {
        "step": state.step,
        "optimizer": opt_meta,
        "lr_scheduler": _jsonable(state.lr_scheduler),
        "scaler": _jsonable(state.scaler),
        "fingerprint": state.fingerprint,
    }
    with atomic_path(tmp / "state.json") as path:
        path.write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_resume(folder: Path, resume: str) -> Path | None:
    """`latest` -> newest checkpoint (None when there is none yet); else a checkpoint folder path."""
    if resume == "latest":
        found = list_checkpoints(folder)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise UserError(f"--resume {resume}: not a checkpoint folder (expected state.json inside); use --resume latest")
    return path


def load_checkpoint(path: Path) -> TrainingState:
    from safetensors.torch import load_file

    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"checkpoint {path} is damaged ({exc}); delete it to resume from the previous one") from None
    return TrainingState(
        step=int(meta["step"]),
        vectors=tensors["vectors"],
        optimizer=_join_optimizer(tensors, meta["optimizer"]),
        lr_scheduler=meta["lr_scheduler"],
        scaler=meta.get("scaler"),
        fingerprint=meta.get("fingerprint", {}),
    )
