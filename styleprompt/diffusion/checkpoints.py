"""Training checkpoints as safetensors + JSON, written atomically, resumable.

Why not `accelerator.save_state`: its loader unpickles with `weights_only=False`, and a
checkpoint folder is a file users share. Our trainable state is small (the placeholder vectors,
a pivotal run's LoRA weights, AdamW's moments, the LR schedule, the RNG) and fits safetensors and JSON exactly, so nothing is
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

from styleprompt.plumbing.errors import SettingError, UserError
from styleprompt.plumbing.files import atomic_path

_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingState:
    step: int
    vectors: torch.Tensor
    optimizer: dict
    lr_scheduler: dict
    scaler: dict | None
    fingerprint: dict
    lora: dict[str, torch.Tensor] | None = None  # --adapter lora: the LoRA weights by name (lora.AttachedLora)


def checkpoint_path(folder: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives in a run's checkpoints folder."""
    return folder / f"checkpoint-{step}"


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
    final = checkpoint_path(folder, state.step)
    tmp = folder / f".tmp-checkpoint-{state.step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    opt_tensors, opt_meta = _split_optimizer(state.optimizer)
    tensors = {"vectors": state.vectors.detach().float().cpu().contiguous()}
    tensors.update(opt_tensors)
    for name, value in (state.lora or {}).items():
        tensors[f"lora.{name}"] = value.detach().float().cpu().contiguous()
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
        raise SettingError(
            "resume",
            f"{{setting}} {resume}: not a checkpoint folder (expected state.json inside); use {{setting}} latest",
        )
    return path


class CheckpointDamaged(UserError):
    """A checkpoint that cannot be resumed from; the message names the file and what to do."""


def _damaged(path: Path, what: str) -> CheckpointDamaged:
    return CheckpointDamaged(
        f"checkpoint {path} is damaged ({what}); resume from an earlier one (--resume latest skips it) or delete it"
    )


def _expect(path: Path, ok: bool, what: str) -> None:
    if not ok:
        raise _damaged(path, what)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_checkpoint(path: Path) -> TrainingState:
    """Read one checkpoint folder, validating every part it holds (its files are data a user may share).

    Why so strict: a truncated file or a hand-edited state.json would otherwise surface as a
    KeyError deep in the optimizer a step later; here it is one line naming the file.
    """
    from safetensors.torch import load_file

    json_path, tensor_path = path / "state.json", path / "state.safetensors"
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _damaged(json_path, f"not readable JSON: {exc}") from None
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError for a truncated file
        raise _damaged(tensor_path, f"not a readable safetensors file: {str(exc).splitlines()[0][:120]}") from None
    _expect(json_path, isinstance(meta, dict), f"holds a {type(meta).__name__}, not an object")
    step = meta.get("step")
    _expect(json_path, _is_int(step) and step >= 0, f"'step' is {step!r}, not a whole number")
    optimizer = meta.get("optimizer")
    _expect(
        json_path,
        isinstance(optimizer, dict)
        and isinstance(optimizer.get("param_groups"), list)
        and all(isinstance(g, dict) for g in optimizer["param_groups"])
        and isinstance(optimizer.get("state"), dict),
        "'optimizer' lacks its param_groups list or state object",
    )
    for pid, slots in optimizer["state"].items():
        _expect(
            json_path,
            re.fullmatch(r"[0-9]{1,6}", pid) is not None and isinstance(slots, dict),
            f"optimizer state {pid!r} is not an object",
        )
        for key, kind in slots.items():
            if kind == "tensor":
                _expect(
                    tensor_path, f"optimizer.{pid}.{key}" in tensors, f"the tensor optimizer.{pid}.{key} is missing"
                )
    _expect(json_path, isinstance(meta.get("lr_scheduler"), dict), "'lr_scheduler' is not an object")
    _expect(json_path, meta.get("scaler") is None or isinstance(meta["scaler"], dict), "'scaler' is not an object")
    fingerprint = meta.get("fingerprint", {})
    _expect(json_path, isinstance(fingerprint, dict), "'fingerprint' is not an object")
    vectors = tensors.get("vectors")
    if vectors is None:
        raise _damaged(tensor_path, "the tensor 'vectors' is missing")
    _expect(
        tensor_path,
        vectors.dim() == 2
        and vectors.dtype in (torch.float16, torch.bfloat16, torch.float32)
        and bool(torch.isfinite(vectors.float()).all()),
        f"'vectors' is {vectors.dtype} of shape {list(vectors.shape)}, not finite [vectors, width] numbers",
    )
    lora = {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}
    for name, value in lora.items():
        _expect(
            tensor_path,
            value.is_floating_point() and bool(torch.isfinite(value.float()).all()),
            f"the LoRA weight {name[:80]} is not finite numbers",
        )
    return TrainingState(
        lora=lora or None,
        step=step,
        vectors=vectors.float(),
        optimizer=_join_optimizer(tensors, optimizer),
        lr_scheduler=meta["lr_scheduler"],
        scaler=meta.get("scaler"),
        fingerprint=fingerprint,
    )


# -- whole-module checkpoints (the micro build's text encoder + UNet) ------------------------------
#
# The same layout as a token run's (checkpoint-<step>/state.safetensors + state.json, written to a
# hidden folder and renamed), for state that is whole modules rather than a few vectors: named
# tensors of any shape beside an optimizer's state. The micro build keeps its own rule of which
# checkpoints to keep (its rate schedule's half point), so pruning takes steps to spare.


def save_tensor_checkpoint(
    folder: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    optimizer: dict,
    keep: int,
    spare: tuple[int, ...] = (),
) -> Path:
    """Write checkpoint-<step> (`tensors` and an optimizer's state_dict) atomically; keep the newest `keep` and `spare`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".tmp-checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".tmp-checkpoint-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    opt_tensors, opt_meta = _split_optimizer(optimizer)
    clash = [k for k in tensors if k.startswith("optimizer.")]
    if clash:
        raise ValueError(f"tensor names may not start with 'optimizer.' ({clash[0]})")
    save_file(
        {**{k: v.detach().cpu().contiguous() for k, v in tensors.items()}, **opt_tensors},
        str(tmp / "state.safetensors"),
    )
    with atomic_path(tmp / "state.json") as path:
        path.write_text(json.dumps({"step": step, "optimizer": opt_meta}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old_step, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        if old_step not in spare:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_tensor_checkpoint(path: Path) -> tuple[int, dict[str, torch.Tensor], dict]:
    """(step, tensors, optimizer state_dict) of a `save_tensor_checkpoint` folder; `CheckpointDamaged` if unreadable."""
    from safetensors.torch import load_file

    json_path, tensor_path = path / "state.json", path / "state.safetensors"
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(json_path, f"not readable JSON: {exc}") from None
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError for a truncated file
        raise _damaged(tensor_path, f"not a readable safetensors file: {str(exc).splitlines()[0][:120]}") from None
    _expect(json_path, isinstance(meta, dict), f"holds a {type(meta).__name__}, not an object")
    step = meta.get("step")
    _expect(json_path, _is_int(step) and step >= 0, f"'step' is {step!r}, not a whole number")
    optimizer = meta.get("optimizer")
    _expect(
        json_path,
        isinstance(optimizer, dict)
        and isinstance(optimizer.get("param_groups"), list)
        and isinstance(optimizer.get("state"), dict)
        and all(isinstance(slots, dict) for slots in optimizer["state"].values()),
        "'optimizer' lacks its param_groups list or state object",
    )
    missing = [
        f"optimizer.{pid}.{key}"
        for pid, slots in optimizer["state"].items()
        for key, kind in slots.items()
        if kind == "tensor" and f"optimizer.{pid}.{key}" not in tensors
    ]
    _expect(tensor_path, not missing, f"the tensor {missing[0] if missing else ''} is missing")
    own = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    return step, own, _join_optimizer(tensors, optimizer)
