"""The micro world's commands as a hostile user types them (issue 26 items 1, 2): every bad setting,
output path and paintings folder of `python -m styleprompt.micro build` / `export` and of
`styleprompt world` is refused in one `error:` line with exit code 2 before any work (nothing is
created), a count x size the memory cannot hold is refused at once, and a folder another run holds
is refused with the holder's pid.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from styleprompt.cli import main as styleprompt_main
from styleprompt.micro.__main__ import main as micro_main
from styleprompt.plumbing.folder_lock import locked_folder

ROOT = Path(__file__).resolve().parents[2]
STYLES = ROOT.parent / "shared" / "data" / "style"
CLI = ["-c", "import sys; from styleprompt.cli import main; sys.exit(main(sys.argv[1:]))"]


def _one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    return errors[0]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "file.txt").write_text("the user's notes\n")
    return tmp_path


BUILD_CASES = [
    (["--output", "{d}/file.txt"], "is a file, not a folder"),
    (["--output", "{d}/file.txt/sub"], "is a file, so no folder can be made inside it"),
    (["--output", "/proc/styleprompt-build"], "cannot write in /proc"),
    (["--output", "/sys/styleprompt-build"], "cannot write in /sys"),
    (["--output", "{d}/b", "--per-class", "0"], "--per-class 0 is out of range"),
    (["--output", "{d}/b", "--per-class", "-2"], "--per-class -2 is out of range"),
    (["--output", "{d}/b", "--batch", "0"], "--batch 0 is out of range"),
    (["--output", "{d}/b", "--batch", "-5"], "--batch -5 is out of range"),
    (["--output", "{d}/b", "--checkpoint-every", "0"], "--checkpoint-every 0 is out of range"),
    (["--output", "{d}/b", "--checkpoint-every", "-1"], "--checkpoint-every -1 is out of range"),
    (["--output", "{d}/b", "--lr", "nan"], "--lr nan is out of range"),
    (["--output", "{d}/b", "--blend-lr", "inf"], "--blend-lr inf is out of range"),
    (["--output", "{d}/b", "--max-minutes", "-1"], "--max-minutes -1.0 is out of range"),
    (["--output", "{d}/b", "--blend-fraction", "5"], "--blend-fraction 5.0 is out of range"),
    (["--output", "{d}/b", "--seed", "-1"], "--seed -1 is out of range"),
    (["--output", "{d}/b", "--seed", str(2**70)], "is out of range"),
    (["--output", "{d}/b", "--unet-steps", "0"], "--unet-steps 0 is out of range"),
    (["--output", "{d}/b", "--per-class", "5000"], "use --per-class at most"),
    (["--output", "{d}/b", "--styles", "{d}/file.txt"], "not a folder"),
    (["--output", "{d}/b", "--styles", "{d}"], "is missing (the world needs all 19 paintings)"),
]


@pytest.mark.parametrize("argv, says", BUILD_CASES, ids=[" ".join(a[2:]) or a[1] for a, _ in BUILD_CASES])
def test_the_build_refuses_in_one_line_before_any_work(argv, says, corpus, capsys):
    line = _one_line(capsys, micro_main(["build", *(a.replace("{d}", str(corpus)) for a in argv)]))
    assert says in line, line
    assert sorted(p.name for p in corpus.iterdir()) == ["file.txt"]  # nothing made


def test_export_with_no_build_is_refused(corpus, capsys):
    line = _one_line(capsys, micro_main(["export", "--output", str(corpus / "none")]))
    assert "no such build folder" in line
    (corpus / "half").mkdir()
    (corpus / "half" / "data").mkdir()
    line = _one_line(capsys, micro_main(["export", "--output", str(corpus / "half")]))
    assert "holds no UNet checkpoint" in line
    line = _one_line(capsys, micro_main(["export", "--output", str(corpus / "file.txt")]))
    assert "is a file, not a folder" in line


WORLD_CASES = [
    (["--output", "{d}/file.txt"], "is a file, not a folder"),
    (["--output", "{d}/file.txt/sub"], "is a file, so no folder can be made inside it"),
    (["--output", "/proc/styleprompt-world"], "cannot write in /proc"),
    (["--output", "/sys/styleprompt-world"], "cannot write in /sys"),
    (["--output", "{d}/w", "--count", "5000", "--size", "512"], "needs about 7.5 GiB"),
    (["--output", "{d}/w", "--count", "0"], "--count must be between"),
    (["--output", "{d}/w", "--size", "100000"], "--size must be between"),
]


@pytest.mark.parametrize("argv, says", WORLD_CASES, ids=[" ".join(a[2:]) or a[1] for a, _ in WORLD_CASES])
def test_world_refuses_in_one_line_before_any_work(argv, says, corpus, capsys):
    line = _one_line(capsys, styleprompt_main(["world", *(a.replace("{d}", str(corpus)) for a in argv)]))
    assert says in line, line
    assert sorted(p.name for p in corpus.iterdir()) == ["file.txt"]


def test_a_locked_folder_is_refused_with_the_holders_pid(corpus, capsys):
    """A second build, export or world into a folder a run holds: one line naming the holder."""
    out = corpus / "held"
    with locked_folder(out, "micro build"):
        line = _one_line(capsys, styleprompt_main(["world", "--count", "1", "--output", str(out)]))
        assert f"in use by process {os.getpid()}" in line
        (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
        for name in ("state.json", "state.safetensors"):
            (out / "checkpoints" / "checkpoint-1" / name).write_text("{}")
        (out / "vae").mkdir()
        line = _one_line(capsys, micro_main(["export", "--output", str(out)]))
        assert f"in use by process {os.getpid()}" in line
        if STYLES.is_dir():
            line = _one_line(capsys, micro_main(["build", "--output", str(out), "--styles", str(STYLES)]))
            assert f"in use by process {os.getpid()}" in line


def _as_user(argv: list[str], timeout: float = 120, limit_gib: int | None = None) -> subprocess.CompletedProcess:
    """Run a command in a child process without root's override of file permissions (and a memory limit)."""
    drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]

    def limit() -> None:
        if limit_gib:
            resource.setrlimit(resource.RLIMIT_AS, (limit_gib * 2**30, limit_gib * 2**30))

    return subprocess.run(
        [*(drop if os.geteuid() == 0 else []), sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        preexec_fn=limit,
    )


def _one_child_line(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return errors[0]


@pytest.mark.slow
def test_world_refuses_a_huge_count_and_size_at_once_under_a_memory_limit(tmp_path):
    """It used to run 104 s into a MemoryError; under a 6 GB address-space limit it is one line, at once."""
    t0 = time.monotonic()
    proc = _as_user(
        [*CLI, "world", "--count", "5000", "--size", "512", "--output", str(tmp_path / "w")],
        limit_gib=6,
    )
    line = _one_child_line(proc)
    assert "use --count" in line and time.monotonic() - t0 < 60
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_unreadable_paintings_and_read_only_outputs_are_refused(tmp_path):
    if not STYLES.is_dir():
        pytest.skip(f"the world's paintings are not in {STYLES}")
    import shutil

    styles = tmp_path / "styles"
    shutil.copytree(STYLES, styles)
    os.chmod(styles / "starry_night.jpg", 0o000)
    os.chmod(tmp_path, 0o755)
    proc = _as_user(["-m", "styleprompt.micro", "build", "--output", str(tmp_path / "b"), "--styles", str(styles)])
    assert "starry_night.jpg cannot be read (permission denied)" in _one_child_line(proc)
    os.chmod(styles / "starry_night.jpg", 0o644)
    os.chmod(styles, 0o000)
    proc = _as_user(["-m", "styleprompt.micro", "build", "--output", str(tmp_path / "b"), "--styles", str(styles)])
    assert "the folder cannot be read" in _one_child_line(proc)
    os.chmod(styles, 0o755)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    os.chmod(readonly, 0o555)
    for argv in (
        ["-m", "styleprompt.micro", "build", "--output", str(readonly / "b"), "--styles", str(styles)],
        [*CLI, "world", "--count", "1", "--output", str(readonly / "w")],
    ):
        line = _one_child_line(_as_user(argv))
        assert "permission denied" in line and str(readonly) in line
    assert list(readonly.iterdir()) == [] and not (tmp_path / "b").exists()


def test_export_from_a_damaged_checkpoint_is_one_line(corpus, capsys):
    """Export never falls back silently to an older model: a torn newest checkpoint is named."""
    checkpoint = corpus / "b" / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text('{"step": 4}')
    (checkpoint / "state.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    (corpus / "b" / "vae").mkdir()
    line = _one_line(capsys, micro_main(["export", "--output", str(corpus / "b")]))
    assert "checkpoint-4" in line and "is damaged" in line
    assert not (corpus / "b" / "model").exists()
