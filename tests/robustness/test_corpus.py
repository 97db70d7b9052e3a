"""Every entry point against the bad-input corpus: read correctly, or one line and exit code 2.

The permissions entry only means something without root's power to read any file, so when the
tests run as root that entry's check runs in a subprocess whose capabilities to bypass file
permissions are dropped (util-linux `setpriv`): it is then refused like any user's would be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from styleprompt.cli import COMMANDS, main
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.images import load_image
from tests.robustness.corpus import CORPUS, Entry, as_params, build

ROOT = Path(__file__).resolve().parents[2]
IDS = [e.name for e in CORPUS]
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def corpus() -> dict[str, Path]:
    """In a world-readable folder, so that a check run as `nobody` reaches the files."""
    folder = Path(tempfile.mkdtemp(prefix="styleprompt-corpus-"))
    os.chmod(folder, 0o755)
    yield build(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def work_dir() -> Path:
    """A scratch folder every user may write (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="styleprompt-robust-"))
    os.chmod(folder, 0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def needs_other_user(entry: Entry) -> bool:
    return entry.filename == "noperm.png" and os.geteuid() == 0


def run_without_root_powers(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*DROP_DAC, sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def check_cli(entry: Entry, argv: list[str], capsys, tmp_path: Path) -> str:
    """Run one CLI call; assert the corpus entry's outcome. Returns stderr."""
    if needs_other_user(entry):
        proc = run_without_root_powers(["-m", "styleprompt.cli", *argv])
        code, err = proc.returncode, proc.stderr
    else:
        code = main(argv)
        err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if entry.expect == "ok":
        assert code == 0, err
    else:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1, err
    return err


@pytest.mark.parametrize("entry", CORPUS, ids=IDS)
def test_load_image(entry: Entry, corpus):
    path = corpus[entry.name]
    if needs_other_user(entry):
        code = f"from styleprompt.plumbing.images import load_image\nload_image({str(path)!r})"
        proc = run_without_root_powers(["-c", code])
        assert proc.returncode != 0 and "permission denied" in proc.stderr
        return
    if entry.expect == "refused":
        with pytest.raises(UserError) as info:
            load_image(path)
        assert "\n" not in str(info.value) and path.name in str(info.value)
    else:
        img = load_image(path)
        assert img.mode == "RGB" and img.size == entry.size


@pytest.mark.parametrize("entry", as_params(CORPUS))
def test_train(entry: Entry, corpus, capsys, work_dir):
    folder = work_dir / "art"
    folder.mkdir(mode=0o777)
    shutil.copy(corpus[entry.name], folder / entry.filename)  # copies the mode bits too
    argv = [
        "train",
        "--model",
        "tiny",
        "--images",
        str(folder),
        "--output",
        str(work_dir / "out"),
        "--steps",
        "1",
        "--grad-accum",
        "1",
        "--preview-every",
        "0",
        "--device",
        "cpu",
    ]
    err = check_cli(entry, argv, capsys, work_dir)
    if entry.expect == "refused":
        assert "could be read" in err and entry.filename in err


@pytest.mark.slow
def test_train_on_a_folder_of_only_these(corpus, capsys, tmp_path):
    folder = tmp_path / "everything"
    folder.mkdir()
    for entry in CORPUS:
        if not needs_other_user(entry):
            shutil.copy(corpus[entry.name], folder / entry.filename)
    argv = [
        "train",
        "--model",
        "tiny",
        "--images",
        str(folder),
        "--output",
        str(tmp_path / "out"),
        "--steps",
        "1",
        "--grad-accum",
        "1",
        "--preview-every",
        "0",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    used = __import__("json").loads((tmp_path / "out" / "config.json").read_text())["images_used"]
    assert used == sum(e.expect == "ok" for e in CORPUS if not needs_other_user(e))


@pytest.mark.skipif("transfer" not in COMMANDS, reason="the transfer command is not registered")
@pytest.mark.parametrize("entry", as_params(CORPUS))
def test_transfer_content(entry: Entry, corpus, capsys, work_dir):
    from tests.conftest import make_artwork

    style = make_artwork(work_dir / "style.png", seed=1)
    os.chmod(style, 0o644)
    argv = [
        "transfer",
        "--method",
        "adain",
        "--random-weights",
        "--content",
        str(corpus[entry.name]),
        "--style",
        str(style),
        "--size",
        "64",
        "--output",
        str(work_dir / "out.png"),
    ]
    check_cli(entry, argv, capsys, work_dir)
    if entry.expect == "ok":
        assert (work_dir / "out.png").is_file()


@pytest.mark.parametrize("entry", as_params(CORPUS))
def test_generate_content_image(entry: Entry, corpus, capsys, work_dir):
    argv = [
        "generate",
        "--model",
        "tiny",
        "--prompt",
        "a painting of a lighthouse",
        "--image",
        str(corpus[entry.name]),
        "--strength",
        "0.5",
        "--steps",
        "2",
        "--seed",
        "0",
        "--width",
        "64",
        "--height",
        "64",
        "--device",
        "cpu",
        "--output",
        str(work_dir / "gen"),
    ]
    check_cli(entry, argv, capsys, work_dir)
    if entry.expect == "ok":
        assert len(list((work_dir / "gen").glob("*.png"))) == 1


@pytest.mark.parametrize("entry", as_params(CORPUS))
def test_compare_content_image(entry: Entry, corpus, capsys, work_dir, shared_data):
    argv = [
        "compare",
        "--content",
        str(corpus[entry.name]),
        "--style-images",
        str(shared_data / "style" / "mondrian.jpg"),
        "--methods",
        "ghiasi",
        "--no-metrics",
        "--size",
        "64",
        "--device",
        "cpu",
        "--output",
        str(work_dir / "cmp"),
    ]
    check_cli(entry, argv, capsys, work_dir)
    if entry.expect == "ok":
        assert (work_dir / "cmp" / "grid.png").is_file()


@pytest.mark.parametrize("entry", as_params(CORPUS))
def test_evaluate_output_image(entry: Entry, corpus, capsys, work_dir):
    check_cli(entry, ["evaluate", str(corpus[entry.name]), "--json"], capsys, work_dir)
