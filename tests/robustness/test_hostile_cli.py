"""Every hostile case through the command line: one `error:` line, exit code 2, nothing of the
user's changed, and memory bounded: all cases run in one child process under a 6 GB
address-space limit (RLIMIT_AS), so a case that tried to allocate what a size asked for would
end in a MemoryError traceback there instead of the machine's OOM killer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.robustness.hostile import CASES, build, run_child, user_files

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_SPACE_GIB = 6


@pytest.fixture(scope="module")
def outcomes() -> tuple[Path, dict, dict]:
    folder = Path(tempfile.mkdtemp(prefix="styleprompt-hostile-"))
    build(folder)
    before = user_files(folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    results = run_child(CASES, folder, folder / "results.json", ADDRESS_SPACE_GIB, sys.executable, ROOT, env)
    yield folder, results, before
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_one_line(case, outcomes):
    folder, results, before = outcomes
    got = results[case.name]
    err = got["stderr"]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert got["code"] == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert case.says in errors[0], errors[0]
    assert user_files(folder) == before


@pytest.mark.slow
def test_no_case_left_model_outputs(outcomes):
    """Refused before work: no run folder holds a result (train and generate folders stay empty or absent)."""
    folder, _, _ = outcomes
    made = [p for p in (folder / "out").rglob("*") if p.is_file()] if (folder / "out").exists() else []
    assert made == []


def test_read_only_output_folder_refused_before_loading(tmp_path):
    """A folder the user may not write: refused as a normal user (root's override dropped), before any model loads."""
    work = Path(tempfile.mkdtemp(prefix="styleprompt-ro-"))
    try:
        build(work)
        os.chmod(work, 0o755)
        readonly = work / "ro"
        readonly.mkdir()
        os.chmod(readonly, 0o555)
        argv = [
            "generate",
            "--model",
            "tiny",
            "--embedding",
            str(work / "token.safetensors"),
            "--prompt",
            "a <t>",
            "--steps",
            "1",
            "--output",
            str(readonly / "gen"),
            "--device",
            "cpu",
        ]
        drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
        code = (
            "import sys; from styleprompt.cli import main; import styleprompt.diffusion.models as m\n"
            "m.load_pipeline = lambda *a, **k: sys.exit('loaded a model first')\nsys.exit(main(sys.argv[1:]))"
        )
        proc = subprocess.run(
            [*(drop if os.geteuid() == 0 else []), sys.executable, "-c", code, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
        assert "permission denied" in errors[0] and str(readonly) in errors[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_generate_keeps_painted_images_when_the_folder_fails(tmp_path):
    """Writing fails after painting (here: the folder is a path through a file): the images go to a
    new temporary folder that the one line names."""
    import re

    from PIL import Image

    from styleprompt.diffusion.generate import Generated, save_generated
    from styleprompt.plumbing.errors import UserError

    (tmp_path / "file.txt").write_text("the user's notes\n")
    params = {
        "prompt": "p",
        "negative_prompt": "",
        "steps": 1,
        "scheduler": "ddim",
        "guidance": 7.5,
        "width": 8,
        "height": 8,
        "model": "tiny",
        "mode": "txt2img",
    }
    items = [
        Generated(image=Image.new("RGB", (8, 8), (i, 0, 0)), params=dict(params, seed=i), seed=i) for i in range(2)
    ]
    with pytest.raises(UserError) as info:
        save_generated(items, tmp_path / "file.txt" / "sub")
    message = str(info.value)
    rescue = Path(re.search(r"are in (\S+)$", message).group(1))
    try:
        assert "\n" not in message and sorted(p.name for p in rescue.iterdir()) == ["000-seed0.png", "001-seed1.png"]
        assert (tmp_path / "file.txt").read_text() == "the user's notes\n"
    finally:
        shutil.rmtree(rescue, ignore_errors=True)
