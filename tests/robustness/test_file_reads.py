"""Files read safely, and the loose ends of the third round (issue 26, items 5 and 7).

Every case runs through `styleprompt.cli.main` in one child process with a time limit: a read
that blocked (a FIFO opened for reading waits for a writer) ends the child there and fails the
test, instead of hanging the suite. Asserted for each: exit code 2, exactly one `error:` line,
no traceback, the fragment that names the reason, and the user's files byte-identical.

Classes: what is no plain file (a FIFO, /dev/zero, /proc/self/mem) at every reader; JSON nested
100000 deep; file names holding a newline or an undecodable byte; an output that is one of
blend's inputs; a token holding a prompt slot; `pick --steps 0`; a folder of artworks the user
may not read. Beside them, in-process: convert keeps every precision exactly, and the helpers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import json_depth, open_regular, read_json, shown_path
from styleprompt.plumbing.folder_lock import is_lock_file
from tests.robustness.hostile import CHILD

ROOT = Path(__file__).resolve().parents[2]
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
DEEP = "[" * 100_000 + "]" * 100_000
NEWLINE_NAME = "bad\nname.safetensors"
BYTE_NAME = os.fsdecode(b"bad\xffname.safetensors")  # a name that is not UTF-8: a surrogate in Python

# What is no plain file, and the reason each gets (never "empty (0 bytes)", as before).
NOT_REGULAR = {
    "fifo": ("{d}/pipe", "named pipe (FIFO)"),
    "/dev/zero": ("/dev/zero", "it is a device"),
    "/proc/self/mem": ("/proc/self/mem", "a file of the kernel"),
}


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # "{d}" is the case folder, "{x}" the file under test
    says: str

    def args(self, folder: Path, target: str = "") -> list[str]:
        return [a.replace("{x}", target).replace("{d}", str(folder)) for a in self.argv]


def _image(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)


def build(folder: Path) -> Path:
    """The files the cases read: made here, nothing downloaded or committed."""
    from styleprompt.cli import main
    from tests.test_survey import fake_compare_run

    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe")
    _image(folder / "style.png", 1)
    save_file({"<a>": torch.randn(2, 32)}, str(folder / "A.safetensors"))
    save_file({"<b>": torch.randn(2, 32)}, str(folder / "B.safetensors"))
    os.link(folder / "A.safetensors", folder / "A-link.safetensors")  # the same file under another name
    save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}, str(folder / "Z_2.safetensors"))
    save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}, str(folder / "xl.safetensors"))
    save_file({"{class}": torch.randn(1, 32)}, str(folder / "slot.safetensors"))
    (folder / NEWLINE_NAME).write_text("not an embedding\n")
    (folder / BYTE_NAME).write_text("not an embedding\n")
    (folder / "pic\nture.png").write_text("not an image\n")
    (folder / "deep.json").write_text(DEEP)
    odd = folder / "odd-art"
    odd.mkdir()
    (odd / "a\nb.png").write_text("not an image\n")
    survey = fake_compare_run(folder / "cmp")
    assert main(["survey", str(survey)]) == 0
    deep_run = fake_compare_run(folder / "deep-cmp")
    (deep_run / "compare.json").write_text(DEEP)
    run = folder / "run"
    (run / "embeddings").mkdir(parents=True)
    save_file({"<t>": torch.randn(2, 32)}, str(run / "embeddings" / "step-000002.safetensors"))
    return folder


def user_files(folder: Path) -> dict[str, bytes]:
    names = ("A.safetensors", "B.safetensors", "Z_2.safetensors", "xl.safetensors", "cmp/survey-key.json")
    return {name: (folder / name).read_bytes() for name in names}


# -- the readers, each given what is no plain file ---------------------------------------------------

READERS = [
    Case("inspect", ("inspect", "{x}"), ""),
    Case("convert", ("convert", "{x}", "--to", "a1111", "--output", "{d}/out/x.pt"), ""),
    Case("generate --from-png", ("generate", "--from-png", "{x}", "--output", "{d}/out/gen", "--device", "cpu"), ""),
    Case(
        "transfer --content",
        (
            "transfer",
            "--method",
            "adain",
            "--random-weights",
            "--content",
            "{x}",
            "--style",
            "{d}/style.png",
            "--output",
            "{d}/out/t.png",
            "--no-progress",
        ),
        "",
    ),
    Case("survey-results key", ("survey-results", "{x}", "{d}/cmp/survey-key.json"), ""),
    Case("survey-results answers", ("survey-results", "{d}/cmp/survey-key.json", "{x}"), ""),
]

CASES: list[tuple[Case, str]] = [
    (Case(f"{reader.name} on {kind}", reader.argv, says), target)
    for reader in READERS
    for kind, (target, says) in NOT_REGULAR.items()
]

_TRAIN = ("train", "--model", "tiny", "--steps", "1", "--grad-accum", "1", "--preview-every", "0", "--device", "cpu")
OTHER_CASES = [
    # JSON nested 100000 deep: one line before the parser recurses
    Case("survey-results: a key nested 100000 deep", ("survey-results", "{d}/deep.json", "{d}/deep.json"), "nests"),
    Case(
        "survey-results: answers nested 100000 deep",
        ("survey-results", "{d}/cmp/survey-key.json", "{d}/deep.json"),
        "nests 100000 levels deep",
    ),
    Case("survey: compare.json nested 100000 deep", ("survey", "{d}/deep-cmp"), "nests 100000 levels deep"),
    # names shown escaped, on one line
    Case("inspect a name with a newline", ("inspect", f"{{d}}/{NEWLINE_NAME}"), "bad\\nname.safetensors"),
    Case("inspect a name that is not UTF-8", ("inspect", f"{{d}}/{BYTE_NAME}"), "bad\\xffname.safetensors"),
    Case(
        "transfer a content named with a newline",
        tuple(a.replace("{x}", "{d}/pic\nture.png") for a in READERS[3].argv),
        "pic\\nture.png",
    ),
    Case(
        "train on a folder of one file named with a newline",
        _TRAIN + ("--images", "{d}/odd-art", "--token", "<x>", "--output", "{d}/out/odd"),
        "a\\nb.png",
    ),
    # blend's output is one of its inputs (convert refused it already; one check now serves both)
    Case(
        "blend --output A A B",
        ("blend", "{d}/A.safetensors", "{d}/B.safetensors", "--token", "<m>", "--output", "{d}/A.safetensors"),
        "is the input file",
    ),
    Case(
        "blend --output B A B",
        ("blend", "{d}/A.safetensors:0.5", "{d}/B.safetensors:0.5", "--token", "<m>", "--output", "{d}/B.safetensors"),
        "is the input file",
    ),
    Case(
        "blend --output a hard link of A",
        ("blend", "{d}/A.safetensors", "{d}/B.safetensors", "--token", "<m>", "--output", "{d}/A-link.safetensors"),
        "is the input file",
    ),
    Case(
        "blend --to sdxl-pair whose X_2 is an input",
        (
            "blend",
            "{d}/Z_2.safetensors",
            "{d}/xl.safetensors",
            "--token",
            "<m>",
            "--to",
            "sdxl-pair",
            "--output",
            "{d}/Z.safetensors",
        ),
        "Z_2.safetensors is the input file",
    ),
    Case(
        "convert --output IN",
        ("convert", "{d}/A.safetensors", "--to", "diffusers", "--output", "{d}/A.safetensors"),
        "is the input file",
    ),
    # a token holding a prompt slot: refused as a token, not with advice about --class
    Case(
        "train --token {class}",
        _TRAIN + ("--images", "{d}/cmp/inputs", "--token", "{class}", "--output", "{d}/out/tc"),
        "{class} is a slot",
    ),
    Case(
        "train --token <[filewords]>",
        _TRAIN + ("--images", "{d}/cmp/inputs", "--token", "<[filewords]>", "--output", "{d}/out/tf"),
        "[filewords] is a slot",
    ),
    Case(
        "generate an embedding keyed {class}",
        (
            "generate",
            "--model",
            "tiny",
            "--embedding",
            "{d}/slot.safetensors",
            "--prompt",
            "a {token} style of a {class}",
            "--class",
            "city",
            "--steps",
            "1",
            "--output",
            "{d}/out/gs",
            "--device",
            "cpu",
        ),
        "{class} is a slot",
    ),
    # pick --steps 0 ran with generate's default steps
    Case(
        "pick --steps 0", ("pick", "--run", "{d}/run", "--steps", "0", "--device", "cpu"), "--steps 0 is out of range"
    ),
]


def run_cases(cases: dict[str, list[str]], folder: Path, timeout: int) -> dict:
    spec, out = folder / "cases.json", folder / "results.json"
    spec.write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(spec), str(out), "6"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the cases did not finish in {timeout} s: a read blocked (a FIFO waiting for a writer?)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def outcomes():
    folder = Path(tempfile.mkdtemp(prefix="styleprompt-reads-"))
    try:
        build(folder)
        before = user_files(folder)
        argv = {case.name: case.args(folder, target.replace("{d}", str(folder))) for case, target in CASES}
        argv.update({case.name: case.args(folder) for case in OTHER_CASES})
        yield folder, run_cases(argv, folder, timeout=600), before
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def the_one_line(got: dict) -> str:
    err = got["stderr"]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert got["code"] == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("case, target", CASES, ids=[c.name for c, _ in CASES])
def test_no_plain_file_gets_its_reason(case, target, outcomes):
    folder, results, before = outcomes
    line = the_one_line(results[case.name])
    assert case.says in line and "empty (0 bytes)" not in line, line
    assert user_files(folder) == before


@pytest.mark.slow
@pytest.mark.parametrize("case", OTHER_CASES, ids=[c.name for c in OTHER_CASES])
def test_refused_in_one_line(case, outcomes):
    folder, results, before = outcomes
    line = the_one_line(results[case.name])
    assert case.says in line, line
    assert "\udcff" not in line and "--class" not in line, line
    assert user_files(folder) == before


@pytest.mark.slow
def test_no_refused_case_left_output(outcomes):
    """A case refused after its run folder was locked leaves only the lock's hidden file (no result)."""
    folder, _, _ = outcomes
    out = folder / "out"
    made = [p for p in out.rglob("*") if p.is_file() and not is_lock_file(p)] if out.exists() else []
    assert made == []
    assert not (folder / "Z.safetensors").exists()


# -- a folder of artworks the user may not read --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", [0o000, 0o300], ids=["mode 000", "no read bit"])
def test_unreadable_art_folder_is_one_line(mode, tmp_path):
    """Root reads any folder; the command then runs with the capabilities that allow it dropped
    (`setpriv`), so the refusal is the one an ordinary user gets."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: root reads a mode-000 folder")
    work = Path(tempfile.mkdtemp(prefix="styleprompt-noread-"))
    try:
        os.chmod(work, 0o755)
        art = work / "art"
        art.mkdir()
        _image(art / "a.png")
        os.chmod(art, mode)
        argv = ["-m", "styleprompt.cli", *_TRAIN, "--images", str(art), "--token", "<x>", "--output", str(work / "out")]
        proc = subprocess.run(
            [*(DROP_DAC if os.geteuid() == 0 else []), sys.executable, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "permission denied" in errors[0] and str(art) in errors[0], errors[0]
    finally:
        os.chmod(work / "art", 0o755)
        shutil.rmtree(work, ignore_errors=True)


# -- convert copies the vectors exactly, in their precision -------------------------------------------------

FORMAT_FILES = {
    "diffusers": "out.safetensors",
    "diffusers .bin": "out.bin",
    "a1111": "out.pt",
    "emb_params": "out.safetensors",
    "a1111-png": "out.png",
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("fmt", list(FORMAT_FILES))
def test_convert_keeps_the_precision(fmt, dtype, tmp_path, capsys):
    from styleprompt.cli import main
    from styleprompt.diffusion.formats import read_embedding

    vectors = (torch.randn(3, 32, dtype=torch.float64) / 3).to(dtype)
    save_file({"<p>": vectors}, str(tmp_path / "in.safetensors"))
    out = tmp_path / FORMAT_FILES[fmt]
    assert main(["convert", str(tmp_path / "in.safetensors"), "--to", fmt.split()[0], "--output", str(out)]) == 0
    back = read_embedding(out).vectors
    # A1111's PNG stores decimals: float32 where they are exact in float32, float64 where not
    expected = (torch.float64 if dtype == torch.float64 else torch.float32) if fmt == "a1111-png" else dtype
    assert back.dtype == expected
    assert torch.equal(back.to(torch.float64), vectors.to(torch.float64))


def test_blend_keeps_float64(tmp_path, capsys):
    from styleprompt.cli import main
    from styleprompt.diffusion.formats import read_embedding

    a, b = torch.randn(2, 32, dtype=torch.float64), torch.randn(2, 32, dtype=torch.float64)
    save_file({"<a>": a}, str(tmp_path / "a.safetensors"))
    save_file({"<b>": b}, str(tmp_path / "b.safetensors"))
    out = tmp_path / "m.safetensors"
    args = [f"{tmp_path / 'a.safetensors'}:0.25", f"{tmp_path / 'b.safetensors'}:0.75", "--token", "<m>"]
    assert main(["blend", *args, "--output", str(out)]) == 0
    mixed = read_embedding(out).vectors
    assert mixed.dtype == torch.float64 and torch.equal(mixed, 0.25 * a + 0.75 * b)


# -- the helpers -----------------------------------------------------------------------------------------


def test_shown_path_is_one_printable_line():
    assert shown_path("a\nb.png") == "a\\nb.png"
    assert shown_path(BYTE_NAME) == "bad\\xffname.safetensors"
    assert shown_path("é \x1b[31m.png") == "é \\x1b[31m.png"
    assert shown_path(Path("/plain/path.png")) == "/plain/path.png"
    for name in ("a\nb", BYTE_NAME, "\r\t\x00\u2028"):
        assert shown_path(name).isprintable()


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth('{"a": [1, {"b": "]]]]{{{{"}]}') == 3
    assert json_depth('"[[[\\"[["') == 0
    assert json_depth(DEEP) == 100_000


def test_read_json_bounds_the_depth(tmp_path):
    (tmp_path / "ok.json").write_text(json.dumps({"a": [[[1]]]}))
    assert read_json(tmp_path / "ok.json") == {"a": [[[1]]]}
    (tmp_path / "deep.json").write_text(DEEP)
    with pytest.raises(UserError, match="nests 100000 levels deep"):
        read_json(tmp_path / "deep.json")


def test_open_regular_never_waits_on_a_fifo(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes; an alarm fails the test instead of hanging it."""
    os.mkfifo(tmp_path / "pipe")

    def hung(signum, frame):
        raise AssertionError("open_regular blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(UserError, match="named pipe"):
            open_regular(tmp_path / "pipe")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("path, says", [("/dev/zero", "device"), ("/proc/self/mem", "kernel"), ("/tmp", "folder")])
def test_open_regular_names_the_kind(path, says):
    if not Path(path).exists():
        pytest.skip(f"{path} does not exist here")
    with pytest.raises(UserError, match=says):
        open_regular(path)


def test_load_image_on_what_is_no_plain_file(tmp_path):
    from styleprompt.plumbing.images import load_image

    os.mkfifo(tmp_path / "pipe.png")
    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(AssertionError("blocked")))
    signal.alarm(10)
    try:
        for path, says in ((tmp_path / "pipe.png", "named pipe"), ("/dev/zero", "device")):
            with pytest.raises(UserError, match=says):
                load_image(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.slow  # imports Gradio
def test_app_messages_hide_the_server_paths(tmp_path, monkeypatch):
    from styleprompt.ui.common import user_message
    from styleprompt.ui.serve import OutputFolder

    out = tmp_path / "app-out"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(out / "cache"))
    OutputFolder(out)
    upload = out / "cache" / "3f2a9c" / "bad token.safetensors"
    message = user_message(UserError(f"cannot read {upload} as safetensors (x); is it complete?"))
    assert message == "cannot read bad token.safetensors as safetensors (x); is it complete?"
    message = user_message(UserError(f"--output {out / 'train' / 'r1'} is not empty; {out}: full"))
    assert message == "--output train/r1 is not empty; the output folder: full"
    assert user_message(UserError(f"{out}put/x is elsewhere")) == f"{out}put/x is elsewhere"  # another folder


@pytest.mark.parametrize(
    "token, says",
    [("{class}", "{class} is a slot"), ("<a[filewords]>", "[filewords] is a slot"), ("<a\x1bb>", "one word")],
)
def test_token_names_no_prompt_rewrites(token, says):
    from styleprompt.diffusion.tokens import validate_token_name

    with pytest.raises(UserError, match=re.escape(says)):
        validate_token_name(token)
    validate_token_name("<my-style>")
    validate_token_name("{token}")  # filled in with the token itself: it stays in the prompt
