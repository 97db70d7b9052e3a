"""Runs that collide and resumes that change the recipe (issue 26 items 2, 3 and 6): each case ends
in one `error:` line and exit 2 with nothing of the other run's changed, or runs correctly.

- two trainings (or two generates) into the same folder, as two real processes: the second is
  refused naming the first's pid, even with --overwrite, and the first run's files stay its own;
- a resume with another seed, lr or grad-accum, a crafted config.json (a list, a string lr,
  `"cpu_threads": 4096` in a child under an address-space limit), checkpoints without config.json;
- a folder of more artworks than a run trains on, refused before any is read or a model loads,
  and the progress bar while the artworks are encoded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from styleprompt.cli import main
from styleprompt.diffusion.data import MAX_TRAIN_IMAGES
from styleprompt.plumbing.folder_lock import LOCK_NAME
from tests.conftest import make_artworks

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from styleprompt.cli import main; sys.exit(main(sys.argv[1:]))"
FLAGS = [
    "--model",
    "tiny",
    "--token",
    "<c>",
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


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _one_error(code, err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    return errors[0]


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the first process ended before {what}: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _holds_lock(folder: Path, pid: int) -> bool:
    try:
        return (folder / LOCK_NAME).read_text() == str(pid)
    except OSError:
        return False


# -- two processes, one folder -----------------------------------------------------------------------


@pytest.mark.slow
def test_two_trainings_into_one_new_folder(tmp_path):
    images = make_artworks(tmp_path / "art", 2)
    out = tmp_path / "run"
    first_args = ["train", "--images", str(images), "--output", str(out), "--steps", "100000", "--seed", "1", *FLAGS]
    first = subprocess.Popen(
        [sys.executable, "-c", CLI, *first_args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(
            lambda: (out / "loss.csv").is_file() and len((out / "loss.csv").read_text().splitlines()) > 2,
            "training",
            first,
        )
        second_args = ["train", "--images", str(images), "--output", str(out), "--steps", "2", "--seed", "2", *FLAGS]
        second = subprocess.run(
            [sys.executable, "-c", CLI, *second_args, "--overwrite"],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = _one_error(second.returncode, second.stderr)
        assert f"in use by process {first.pid}" in line and "another training" in line, line
        assert first.poll() is None, "the first training was disturbed"
        assert json.loads((out / "config.json").read_text())["seed"] == 1  # the first run's, not removed or mixed
        assert (out / "checkpoints").is_dir()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Killed with SIGKILL, the holder leaves the folder free: the run resumes.
    code = main(
        [
            "train",
            "--images",
            str(images),
            "--output",
            str(out),
            "--steps",
            "1",
            "--seed",
            "1",
            *FLAGS,
            "--resume",
            "latest",
        ]
    )
    assert code == 0


@pytest.mark.slow
def test_two_generates_into_one_folder(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"<t>": torch.randn(1, 32)}, str(tmp_path / "t.safetensors"))
    out = tmp_path / "gen"
    args = ["generate", "--model", "tiny", "--embedding", str(tmp_path / "t.safetensors"), "--prompt", "a <t>"]
    args += ["--output", str(out), "--device", "cpu", "--seed", "0"]
    first = subprocess.Popen(
        [sys.executable, "-c", CLI, *args, "--count", "100", "--steps", "200"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _holds_lock(out, first.pid), "the lock", first)
        second = subprocess.run(
            [sys.executable, "-c", CLI, *args, "--count", "1", "--steps", "1"],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = _one_error(second.returncode, second.stderr)
        assert f"in use by process {first.pid}" in line and "another generate" in line, line
        assert not list(out.glob("*.png"))  # the second painted nothing into the first's folder
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


# -- resumes that change the recipe ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("recipe")
    images = make_artworks(base / "art", 2)
    run = base / "run"
    assert main(["train", "--images", str(images), "--output", str(run), "--steps", "2", *FLAGS]) == 0
    return images, run


def _copy(finished_run, tmp_path) -> tuple[Path, Path]:
    images, original = finished_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    return images, run


def _resume(images: Path, run: Path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["train", "--images", str(images), "--output", str(run), "--steps", "3", *FLAGS, "--resume", "latest"]
    code = main([*argv, *extra])
    return code, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, says",
    [
        (["--seed", "7"], "seed 0 -> 7"),
        (["--lr", "0.01"], "lr 0.005 -> 0.01"),
        (["--grad-accum", "3"], "grad_accum 1 -> 3"),
        (["--vectors", "3"], "vectors 2 -> 3"),
        (["--init-word", "photo"], 'init_word "painting" -> "photo"'),
        (["--property", "object"], 'learnable_property "style" -> "object"'),
        (["--resolution", "64"], "resolution 128 -> 64"),
        (["--seed", "7", "--lr", "0.01", "--batch-size", "2"], "batch_size 1 -> 2; lr 0.005 -> 0.01; seed 0 -> 7"),
    ],
)
def test_a_resume_with_another_recipe_is_refused(finished_run, tmp_path, capsys, extra, says):
    images, run = _copy(finished_run, tmp_path)
    before = (run / "config.json").read_bytes()
    code, err = _resume(images, run, capsys, *extra)
    line = _one_error(code, err)
    assert says in line and "--overwrite" in line and "new run" in line, line
    assert (run / "config.json").read_bytes() == before  # not rewritten with the new settings
    assert len((run / "loss.csv").read_text().splitlines()) == 3  # nothing trained


@pytest.mark.slow
def test_a_resume_with_other_artworks_is_refused(finished_run, tmp_path, capsys):
    _, run = _copy(finished_run, tmp_path)
    other = make_artworks(tmp_path / "other", 2, first_seed=5)
    line = _one_error(*_resume(other, run, capsys))
    assert "are not the ones the run was trained on" in line, line


@pytest.mark.slow
def test_a_resume_with_the_same_recipe_and_other_outputs_runs(finished_run, tmp_path, capsys):
    """Where outputs go and how often may change; so may --steps under the constant schedule."""
    images, run = _copy(finished_run, tmp_path)
    moved = tmp_path / "moved-art"
    shutil.copytree(images, moved)  # the same pictures in another folder: the same recipe
    code, err = _resume(moved, run, capsys, "--save-every", "1", "--checkpoint-every", "3")
    assert code == 0, err[-2000:]
    assert json.loads((run / "config.json").read_text())["images"] == str(moved.resolve())


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, says",
    [
        ("[1, 2]", "holds a list"),
        ('{"lr": "0.005"}', "'lr' is \"0.005\", not a number"),
        ('{"cpu_threads": 0}', "'cpu_threads' is 0"),
        ('{"cpu_threads": true}', "'cpu_threads' is True"),
    ],
)
def test_a_crafted_config_is_refused_on_resume(finished_run, tmp_path, capsys, config, says):
    images, run = _copy(finished_run, tmp_path)
    (run / "config.json").write_text(config)
    line = _one_error(*_resume(images, run, capsys))
    assert says in line and "config.json" in line, line


@pytest.mark.slow
def test_checkpoints_without_config_are_refused(finished_run, tmp_path, capsys):
    images, run = _copy(finished_run, tmp_path)
    (run / "config.json").unlink()
    line = _one_error(*_resume(images, run, capsys))
    assert "no config.json" in line and "cannot be checked" in line, line


RESUME_LIMITED = """
import resource, sys
limit = 6 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from styleprompt.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_cpu_threads_4096_is_bounded_by_the_machine(finished_run, tmp_path):
    """Run under a 6 GiB address-space limit: 4096 OpenMP threads would not fit; the count is clamped."""
    images, run = _copy(finished_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, cpu_threads=4096)))
    argv = ["train", "--images", str(images), "--output", str(run), "--steps", "3", *FLAGS, "--resume", "latest"]
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_LIMITED, *argv], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    cores = os.cpu_count() or 1
    assert f"records cpu_threads 4096, more than the {cores} cores here; using {cores}" in proc.stderr
    assert json.loads((run / "config.json").read_text())["cpu_threads"] == cores


# -- bounded artworks ---------------------------------------------------------------------------------------


def test_too_many_artworks_are_refused_before_any_is_read(tmp_path, capsys, monkeypatch):
    import styleprompt.diffusion.data as data
    import styleprompt.diffusion.training as training

    folder = tmp_path / "many"
    folder.mkdir()
    tiny = Image.new("RGB", (8, 8))
    for i in range(MAX_TRAIN_IMAGES + 1):
        tiny.save(folder / f"{i:05d}.png")
    monkeypatch.setattr(data, "load_image", lambda *a, **k: pytest.fail("an artwork was decoded first"))
    monkeypatch.setattr(training, "load_pipeline", lambda *a, **k: pytest.fail("a model was loaded first"))
    started = time.monotonic()
    code = main(["train", "--images", str(folder), "--output", str(tmp_path / "run"), "--steps", "1", *FLAGS])
    line = _one_error(code, capsys.readouterr().err)
    assert time.monotonic() - started < 30
    assert f"holds {MAX_TRAIN_IMAGES + 1} images" in line and f"at most {MAX_TRAIN_IMAGES}" in line, line
    assert "encoded once" in line and "3-20" in line  # the reason: what each costs


def test_encoding_the_artworks_shows_a_progress_bar(tmp_path, capsys):
    images = make_artworks(tmp_path / "art", 3)
    assert main(["train", "--images", str(images), "--output", str(tmp_path / "run"), "--steps", "1", *FLAGS]) == 0
    err = capsys.readouterr().err
    assert "encoding artworks" in err and "reading artworks" in err, err[-2000:]
    assert "image/s" in err or "s/image" in err, err[-2000:]  # tqdm's rate: the bar has an ETA
