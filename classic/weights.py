"""Where each classic method finds its pretrained weights, in one order for all of them.

Why one module: WCT, the compressed WCT, MicroAST and the shallow VGG-19 each need a folder of
published weight files, and a user should set them up once, the same way for every method:

1. an explicit flag or field (`--wct-weights DIR`, `--vgg-weights PATH`, ...);
2. the environment variable `STYLEPROMPT_WEIGHTS`, a folder laid out like the repository's
   `../shared/weights` (one subfolder per set: `cd-wct/`, `wct/`, `microast/`, `vgg19-conv1-3/`);
3. `../shared/weights` next to the repository: what the repository's own tests and benches read
   (an installed package never has it).

Every weight file is data: it is opened with `torch.load(..., weights_only=True)` (or
safetensors), and a file that is missing, truncated or holds something other than the expected
state dict fails in one line that names the file and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

from styleprompt.plumbing.errors import UserError

ENV_VAR = "STYLEPROMPT_WEIGHTS"
REPO_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"

# Where users on the internet get each set (the upstream repositories; docs/classic.md).
UPSTREAM = {
    "cd-wct": "github.com/MingSun-Tse/Collaborative-Distillation, trained_models/wct_se_16x_new{,_sd}/ "
    "(kSE.pth -> encoderK.pth, kSD.pth -> decoderK.pth)",
    "wct": "github.com/sunshineatnoon/PytorchWCT models/vgg19_normalized_decoder{1,2,3}.pth.tar "
    "(-> decoder_r11/r21/r31.pth.tar) and github.com/sunayana-981/LinearStyleTransfer models/vgg_r31.pth "
    "(-> vgg_normalised_r31.pth)",
    "microast": "github.com/EndyWon/MicroAST models/*_iter_160000.pth.tar",
    "vgg19-conv1-3": "github.com/sunayana-981/LinearStyleTransfer weights/enc_r51/block{1,2,3}_conv*_{kernel,bias}_0.npy",
}


def weights_root() -> Path | None:
    """The folder of weight sets: $STYLEPROMPT_WEIGHTS when set, else the repository's ../shared/weights.

    A set variable that names no folder is a user mistake (one line), not a silent fallback.
    """
    value = os.environ.get(ENV_VAR)
    if value:
        root = Path(value).expanduser()
        if not root.is_dir():
            raise UserError(f"{ENV_VAR}={value} is not a folder: point it at a folder laid out like ../shared/weights")
        return root
    return REPO_WEIGHTS if REPO_WEIGHTS.is_dir() else None


def find_set(name: str, explicit: str | os.PathLike | None = None, *, flag: str = "") -> Path | None:
    """The folder of weight set `name`: `explicit` (a folder), else <root>/<name>, else None."""
    if explicit is not None:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise UserError(f"{flag or name} {folder}: no such folder (expected the {name} weight files)")
        return folder
    root = weights_root()
    if root is None or not (root / name).is_dir():
        return None
    return root / name


def missing_set(name: str, flag: str) -> UserError:
    """The one-line error for a set that is nowhere to be found, with where to get it."""
    return UserError(
        f"the {name} weights were not found: pass {flag} DIR, or set {ENV_VAR} to a folder with a {name}/ subfolder "
        f"(get them from {UPSTREAM[name]})"
    )


def read_weights(path: Path, expected: str, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} state dict from `path`, safely; `expected` says what it should be.

    `key`: the state dict sits under this key of a checkpoint dict (Collaborative Distillation
    stores {'epoch': 20, 'model': {...}}); a file without it is accepted when it is the plain
    state dict itself.
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected {expected})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or unsafe files are the same user problem
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot be read as weights ({reason}); expected {expected}") from None
    if key is not None and isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
        state = state[key]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors; expected {expected}")
    return {str(k): v for k, v in state.items()}


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, expected: str) -> None:
    """`module.load_state_dict(state)` with exact keys and shapes, or one line naming the file."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise UserError(f"{path}: not {expected} ({detail}; {len(state)} tensors, expected {len(own)})")
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"{path}: not {expected} ({name} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)})"
            )
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
