"""Every command block of README.md, run as written, in order: a newcomer's path must work.

The only ways a run differs from what a reader types:
- `NOT_RUN` lists the commands that cannot run in a test, each with its reason (the set-up lines,
  and the examples that need Stable Diffusion from the hub, a GPU or the reader's own files).
  Every entry must still match a README command; any new README command runs by default.
- The README's /tmp/ paths go into the test's own temporary folder, so runs never meet (a run
  folder that is not empty is refused by design). The commands run in a folder laid out like a
  checkout: `app.py`, `train_style_token.py`, and `../shared/data` next to it.
- People's input: before `survey-results`, the test saves a rater's answers file where the
  README reads the answers (/tmp/answers), as the survey page's Save button would.
- A server (`python app.py ...`) gets a free port (parallel runs), must answer HTTP, and is stopped.
- `CHEAPER` lists the commands run with extra flags that shrink their work, each with its reason:
  what they add is covered at full size elsewhere, and here only "it runs as written and writes
  what the README says" is checked (at full size `pick` alone sat silent for over 7 minutes).

What is checked is what the README says each command writes, never exact pictures (the shipped
micro model may be retrained).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app_server import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 1800  # a loaded CI machine; on an idle 2-core CPU the slowest (micro training) takes ~3 min
SERVER_TIMEOUT_S = 300

SD_HUB = "loads Stable Diffusion 1.5 from the Hugging Face hub (network, GBs)"
NOT_RUN = {
    r"#\s*install$": "the install line itself: it would reinstall the venv this test runs in (.ci/run runs it)",
    r"#\s*test$": "the test line itself: it runs this test",
    r"--mixed-precision fp16$": f"{SD_HUB}, a GPU (fp16), and the reader's my_paintings/",
    r"--resume latest$": f"{SD_HUB} and the reader's interrupted run",
    r"^accelerate launch ": f"{SD_HUB}, several GPUs (bf16)",
    r"--embedding my-style\.safetensors ": f"{SD_HUB} and the reader's own token file",
    r"--content C\.jpg ": "the reader's own C.jpg/S.jpg and VGG-19/AdaIN weight files (downloads)",
    r"^python app\.py\s*(#|$)": SD_HUB,
}

# pattern -> (flags appended to the command, why the smaller run checks enough)
CHEAPER = {
    r"^styleprompt train --model micro ": (
        "--steps 60",
        "60 steps instead of 400 (the token learning a style on unseen classes is tests/test_micro.py's, at 150)",
    ),
    r"^styleprompt pick ": (
        "--class lighthouse city --steps 2",
        "two subjects (the fewest it compares) at 2 sampling steps instead of 4 at 25 (scoring is tests/test_pick.py's)",
    ),
}


def readme_commands() -> list[str]:
    """The commands of every ```bash block in order, continuation lines joined, comment lines dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+", " ", command).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def why_not_run(command: str) -> str | None:
    return next((why for pattern, why in NOT_RUN.items() if re.search(pattern, command)), None)


def as_run(command: str) -> str:
    """The command with CHEAPER's flags put before its trailing comment."""
    for pattern, (flags, _why) in CHEAPER.items():
        if re.search(pattern, command):
            code, hash_, comment = command.partition(" #")
            return f"{code.rstrip()} {flags}" + (f" {hash_.strip()}{comment}" if hash_ else "")
    return command


def test_only_the_listed_commands_are_left_out():
    commands = readme_commands()
    for pattern in (*NOT_RUN, *CHEAPER):
        assert any(re.search(pattern, c) for c in commands), f"NOT_RUN entry {pattern!r} matches no README command"
    left_out = [c for c in commands if why_not_run(c)]
    assert len(left_out) <= 10 and len(commands) - len(left_out) >= 15, left_out  # the offline path stays long
    assert all("--model tiny" not in c and "--model micro" not in c for c in left_out)


def test_the_micro_example_trains_on_the_apps_world_classes_and_paints_others():
    """The README's world pictures are the app's helper's default classes, and the classes its
    generate command paints are not among them (the sentence says "classes the token never saw")."""
    from styleprompt.ui.train_tab import WORLD_TRAINING_CLASSES

    commands = readme_commands()
    world = next(c for c in commands if c.startswith("styleprompt world ") and "--style" in c)
    trained = re.findall(r"--class (\S+)", world)
    assert trained == WORLD_TRAINING_CLASSES, world
    micro = next(c for c in commands if c.startswith("styleprompt generate --model micro"))
    painted = re.findall(r"--class (\S+)", micro)
    assert painted and not set(painted) & set(trained), micro


def _checkout(tmp_path: Path, shared_data: Path) -> Path:
    """A folder where `python app.py`, `train_style_token.py` and ../shared/data are what the README says."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("app.py", "train_style_token.py"):
        (repo / name).symlink_to(ROOT / name)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    return repo


def _answer_the_survey(compare_folder: Path, answers: Path) -> None:
    """A rater's saved answers (the page's Save button writes this file): Ghiasi is preferred wherever shown."""
    from tests.test_survey import answers_file, side_of

    key = json.loads((compare_folder / "survey-key.json").read_text())
    answers.mkdir(exist_ok=True)
    answers_file(
        answers / "survey-answers-rater.json",
        key,
        lambda pair: (side_of(pair, "ghiasi") if "ghiasi" in (pair["A"], pair["B"]) else "tie", "A"),
    )


def _serve(command: str, cwd: Path, env: dict, log: Path) -> None:
    """Start the app as written (on a free port), wait until it answers HTTP, stop it."""
    port = free_port()
    code = command.split(" #")[0]
    command = re.sub(r"--port \d+", f"--port {port}", code) if "--port" in code else f"{code} --port {port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                    assert response.status == 200 and "gradio" in response.read().decode().lower()
                    return
            except OSError:
                assert proc.poll() is None, f"{command} exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, (
                    f"{command} did not answer in {SERVER_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
                )
                time.sleep(1)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, shared_data):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    repo = _checkout(tmp_path, shared_data)
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    outputs: dict[str, str] = {}
    timings = []
    for command in readme_commands():
        if why_not_run(command):
            continue
        line = as_run(command).replace("/tmp/", f"{tmp}/")
        if "survey-results" in line:
            _answer_the_survey(tmp / "cmp", tmp / "answers")
        start = time.monotonic()
        if re.match(r"python app\.py ", line):
            _serve(line, repo, env, tmp_path / f"app-{len(timings)}.log")
        else:
            proc = subprocess.run(
                ["bash", "-c", line], cwd=repo, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
            )
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
                f"{command}\nexit {proc.returncode}\n{proc.stderr[-3000:]}"
            )
            outputs[command.split()[1]] = proc.stdout
        timings.append((round(time.monotonic() - start, 1), command))
        print(f"{timings[-1][0]:7.1f} s  {command}", flush=True)
    assert len(timings) == len(readme_commands()) - sum(1 for c in readme_commands() if why_not_run(c))

    # Micro section: 8 world pictures -> a token run -> 4 pictures of each of two classes.
    assert len(_pngs(tmp / "w")) == 8
    assert not any("boat" in n or "fish" in n for n in _pngs(tmp / "w"))  # the classes generate paints are unseen
    assert (tmp / "rw" / "learned_embeds.safetensors").is_file()
    micro = _pngs(tmp / "gw")
    assert len(micro) == 8 and sum("boat" in n for n in micro) == 4 and sum("fish" in n for n in micro) == 4, micro
    # The run-folder table, on the smoke-test run (pick and --resume rely on it).
    s1 = tmp / "s1"
    for name in ("learned_embeds.safetensors", "loss.csv", "loss.png", "config.json"):
        assert (s1 / name).is_file(), name
    assert len(list((s1 / "embeddings").glob("step-*.safetensors"))) >= 2
    assert list((s1 / "checkpoints").glob("checkpoint-*")) and _pngs(s1 / "previews")
    # Generate: txt2img and img2img into one folder, never overwritten; the repaint of the first.
    assert "000-seed1.png" in _pngs(tmp / "g") and len(_pngs(tmp / "g")) >= 2
    assert len(_pngs(tmp / "again")) == 1
    # Classic: Ghiasi at --size 1024 (long side), the masked AdaIN.
    assert max(_image_size(tmp / "g.png")) == 1024
    assert (tmp / "masked.png").is_file()
    # Compare, evaluate, survey, pick.
    for name in ("grid.png", "metrics.csv", "metrics.md", "report.html", "survey.html", "survey-key.json"):
        assert (tmp / "cmp" / name).is_file(), name
    # Issue 27's done-when: the tiny compare (Gatys after 3 iterations, random VGG) crowns no unchanged photo.
    import csv

    with open(tmp / "cmp" / "metrics.csv", newline="") as handle:
        best = {row["method"] for row in csv.DictReader(handle) if row["best"] == "yes"}
    assert "gatys" not in best and best <= {"ghiasi"}, best
    metrics = json.loads(outputs["evaluate"])["metrics"]
    assert {"style_similarity", "style_rank"} <= set(metrics), metrics
    assert "1 response(s)" in outputs["survey-results"] and "ghiasi" in outputs["survey-results"].lower()
    assert all((s1 / "pick" / name).is_file() for name in ("pick.png", "pick.csv", "pick.json"))
    assert "recommended: " in outputs["pick"]
