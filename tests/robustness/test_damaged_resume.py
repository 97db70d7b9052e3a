"""Damaged resume state: one line naming the file and what to do, or (--resume latest) the
checkpoint before the damaged one, with a warning. Never a traceback, never a silent restart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from safetensors.torch import load_file, save_file

from styleprompt.cli import main
from tests.conftest import make_artworks

FLAGS = [
    "--model",
    "tiny",
    "--token",
    "<r>",
    "--vectors",
    "2",
    "--grad-accum",
    "1",
    "--preview-every",
    "0",
    "--save-every",
    "0",
    "--checkpoint-every",
    "1",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run of 2 steps with checkpoints 1 and 2."""
    base = tmp_path_factory.mktemp("resume")
    images = base / "art"
    make_artworks(images, 2)
    run = base / "run"
    assert main(["train", "--images", str(images), "--output", str(run), "--steps", "2", *FLAGS]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    return images, run


def _json(text: str) -> Callable[[Path], None]:
    return lambda run: (run / "checkpoints" / "checkpoint-2" / "state.json").write_text(text)


def _edit_json(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / "checkpoints" / "checkpoint-2" / "state.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))

    return edit


def _edit_tensors(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / "checkpoints" / "checkpoint-2" / "state.safetensors"
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path))

    return edit


def _truncate(run: Path) -> None:
    path = run / "checkpoints" / "checkpoint-2" / "state.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _reshape(name: str):
    def change(t: dict) -> None:
        key = next(k for k in t if k.endswith(name)) if name != "vectors" else "vectors"
        t[key] = t[key].reshape(-1)[:5].clone()

    return change


DAMAGE = {
    "truncated state.safetensors": (_truncate, "state.safetensors is damaged"),
    "state.json {}": (_json("{}"), "'step' is None"),
    "state.json [1,2]": (_json("[1, 2]"), "holds a list"),
    "state.json not JSON": (_json('{"step": 2,'), "not readable JSON"),
    "step a string": (_edit_json(lambda m: m.update(step="2")), "'step' is '2'"),
    "optimizer a list": (_edit_json(lambda m: m.update(optimizer=[1])), "'optimizer' lacks"),
    "scheduler counters wrong type": (_edit_json(lambda m: m["lr_scheduler"].update(last_epoch="x")), "lr_scheduler"),
    "vectors missing": (_edit_tensors(lambda t: t.pop("vectors")), "'vectors' is missing"),
    "vectors misshapen": (_edit_tensors(_reshape("vectors")), "'vectors' is torch.float32 of shape [5]"),
    "optimizer moment missing": (
        _edit_tensors(lambda t: t.pop(next(k for k in t if k.endswith("exp_avg")))),
        "is missing",
    ),
    "optimizer moment misshapen": (_edit_tensors(_reshape("exp_avg_sq")), "exp_avg_sq has shape [5]"),
}


# Kinds of damage whose --resume latest fallback is run too (one per layer: file, JSON, optimizer).
FALLBACK_CHECKED = ("truncated state.safetensors", "state.json [1,2]", "optimizer moment misshapen")


def _resume(images: Path, run: Path, resume: str, capsys) -> tuple[int, str]:
    code = main(["train", "--images", str(images), "--output", str(run), "--steps", "3", "--resume", resume, *FLAGS])
    return code, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_checkpoint(name, finished_run, tmp_path, capsys, caplog):
    images, original = finished_run
    damage, says = DAMAGE[name]
    run = tmp_path / "run"
    shutil.copytree(original, run)
    damage(run)

    named = str(run / "checkpoints" / "checkpoint-2")
    code, err = _resume(images, run, named, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert says in errors[0] and "checkpoint-2" in errors[0] and "earlier one" in errors[0], errors[0]

    if name not in FALLBACK_CHECKED:  # the fallback is the same code path for every kind of damage
        return
    caplog.clear()
    code, err = _resume(images, run, "latest", capsys)  # skips the damaged one for checkpoint-1
    assert code == 0 and "Traceback" not in err, err[-2000:]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("checkpoint-2" in w and "trying the checkpoint before it" in w for w in warnings), warnings
    assert any(w.startswith("resuming from") and w.endswith("checkpoint-1 (step 1)") for w in warnings), warnings
    steps = [line.split(",")[0] for line in (run / "loss.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3"]


@pytest.mark.slow
def test_every_checkpoint_damaged(finished_run, tmp_path, capsys):
    images, original = finished_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "state.json").write_text("[]")
    code, err = _resume(images, run, "latest", capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "every checkpoint" in errors[0] and "Traceback" not in err, err


def test_loss_log_not_utf8(finished_run, tmp_path, capsys):
    images, original = finished_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    (run / "loss.csv").write_bytes(b"step,loss,lr,elapsed_s\n1,\xff\xfe,0.1,2\n")
    code, err = _resume(images, run, "latest", capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "loss.csv" in errors[0] and "move loss.csv" in errors[0], err
    assert (run / "loss.csv").read_bytes().startswith(b"step,loss")  # the user's file is kept as it was
