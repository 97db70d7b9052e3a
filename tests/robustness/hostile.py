"""Hostile flags and files (issue 17): each case is a command line a user might type, and the line
it must be refused with. Built on the fly in a folder; nothing is downloaded or committed.

Classes: sizes that ask for more memory than a method holds (flags, and sizes that an image's
proportions imply after scaling), numbers and names out of range, a token equal to a word of the
model's vocabulary, output paths that cannot be written, damaged resume state, crafted documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HUGE_SEED = str(2**70)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # memory, number, token, output, resume, document
    argv: tuple[str, ...]  # "{d}" is the corpus folder
    says: str  # a fragment the one error line must hold

    def args(self, folder: Path) -> list[str]:
        return [a.replace("{d}", str(folder)) for a in self.argv]


def _image(path: Path, w: int, h: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def build(folder: Path) -> Path:
    """The files the cases name."""
    folder.mkdir(parents=True, exist_ok=True)
    _image(folder / "content.png", 64, 48)
    _image(folder / "style.png", 48, 64, seed=1)
    _image(folder / "thin-1x20000.png", 1, 20000)
    _image(folder / "thin-10x2000.png", 10, 2000)
    art = folder / "art"
    art.mkdir(exist_ok=True)
    for i in range(2):
        _image(art / f"a{i}.png", 64, 64, seed=i)
    save_file({"<t>": torch.randn(2, 32)}, str(folder / "token.safetensors"))
    save_file({"painting": torch.randn(1, 32)}, str(folder / "word.safetensors"))
    save_file({"<many>": torch.randn(10000, 32)}, str(folder / "many.safetensors"))
    (folder / "file.txt").write_text("the user's notes\n")
    (folder / "existing.png").write_text("the user's file\n")
    return folder


def _transfer(
    method: str,
    *extra: str,
    content: str = "{d}/content.png",
    style: str = "{d}/style.png",
    output: str = "{d}/out/t.png",
) -> tuple[str, ...]:
    args = ("transfer", "--method", method, "--content", content, "--style", style, "--output", output, "--no-progress")
    return args + (("--random-weights",) if method != "ghiasi" else ()) + extra


def _train(*extra: str, token: str = "<x>", output: str = "{d}/out/train", device: str = "cpu") -> tuple[str, ...]:
    return (
        "train",
        "--model",
        "tiny",
        "--images",
        "{d}/art",
        "--token",
        token,
        "--steps",
        "1",
        "--grad-accum",
        "1",
        "--output",
        output,
        "--preview-every",
        "0",
        "--device",
        device,
    ) + extra


def _generate(
    *extra: str, output: str = "{d}/out/gen", embedding: str = "{d}/token.safetensors", device: str = "cpu"
) -> tuple[str, ...]:
    return (
        "generate",
        "--model",
        "tiny",
        "--embedding",
        embedding,
        "--prompt",
        "a <t> lighthouse",
        "--steps",
        "1",
        "--seed",
        "1",
        "--output",
        output,
        "--device",
        device,
    ) + extra


def _compare(*extra: str, content: str = "{d}/content.png", output: str = "{d}/out/cmp") -> tuple[str, ...]:
    return (
        "compare",
        "--model",
        "tiny",
        "--content",
        content,
        "--style-images",
        "{d}/style.png",
        "--output",
        output,
        "--methods",
        "adain",
        "--random-weights",
        "--no-metrics",
    ) + extra


CASES: list[Case] = [
    # -- sizes a method cannot hold (each runs under a 6 GB address-space limit) ----------------------
    Case(
        "adain style 1x20000 at short side 512",
        "memory",
        _transfer("adain", style="{d}/thin-1x20000.png"),
        "makes it 512x10240000",
    ),
    Case(
        "adain style 10x2000 at short side 512",
        "memory",
        _transfer("adain", style="{d}/thin-10x2000.png"),
        "makes it 512x102400",
    ),
    Case("gatys style 1x20000", "memory", _transfer("gatys", style="{d}/thin-1x20000.png"), "thinner than the 16 px"),
    Case("ghiasi --size 100000", "memory", _transfer("ghiasi", "--size", "100000"), "--size 100000 is out of range"),
    Case("adain --size 99999", "memory", _transfer("adain", "--size", "99999"), "--size 99999 is out of range"),
    Case(
        "ghiasi --size 16384 on a 4:3 content",
        "memory",
        _transfer("ghiasi", "--size", "16384"),
        "the largest this image takes",
    ),
    Case("adain --style-size 100000", "memory", _transfer("adain", "--style-size", "100000"), "--style-size 100000"),
    Case("adain --style-size 8000", "memory", _transfer("adain", "--style-size", "8000"), "lower --style-size"),
    Case(
        "gatys --tile-size 0 at 4096",
        "memory",
        _transfer("gatys", "--tile-size", "0", "--size", "4096"),
        "gatys untiled",
    ),
    Case(
        "train --resolution 100000", "memory", _train("--resolution", "100000"), "--resolution 100000 is out of range"
    ),
    Case("train --vectors 10000", "memory", _train("--vectors", "10000"), "--vectors 10000 is out of range"),
    Case("compare --cell-size 100000", "memory", _compare("--cell-size", "100000"), "--cell-size 100000"),
    Case("compare --size 100000", "memory", _compare("--size", "100000"), "--size 100000"),
    Case(
        "generate a 10000-vector embedding",
        "memory",
        _generate(embedding="{d}/many.safetensors"),
        "holds 10000 vectors",
    ),
    Case("generate --width 100000", "memory", _generate("--width", "100000"), "--width 100000 is out of range"),
    Case("generate --count 100000", "memory", _generate("--count", "100000"), "--count 100000 is out of range"),
    # -- numbers and names out of range ---------------------------------------------------------------
    Case("train --resolution -8", "number", _train("--resolution", "-8"), "--resolution -8 is out of range"),
    Case("train --seed 2**70", "number", _train("--seed", HUGE_SEED), "64 bits"),
    Case("transfer --seed 2**70", "number", _transfer("adain", "--seed", HUGE_SEED), "64 bits"),
    Case("generate --seed 2**70", "number", _generate("--seed", HUGE_SEED), "--seed"),
    Case("compare --seed 2**70", "number", _compare("--seed", HUGE_SEED), "64 bits"),
    Case(
        "train --preview-every 1 --preview-steps 0",
        "number",
        _train("--preview-every", "1", "--preview-steps", "0"),
        "--preview-steps 0",
    ),
    Case("adain --style-size 0", "number", _transfer("adain", "--style-size", "0"), "--style-size 0"),
    Case("adain --style-size -1", "number", _transfer("adain", "--style-size", "-1"), "--style-size -1"),
    Case("ghiasi --tile-size -1", "number", _transfer("ghiasi", "--tile-size", "-1"), "--tile-size -1"),
    Case("adain --tile-size -1", "number", _transfer("adain", "--tile-size", "-1"), "--tile-size -1"),
    Case("transfer --device bogus", "number", _transfer("adain", "--device", "bogus"), "unknown --device 'bogus'"),
    Case("train --device bogus", "number", _train(device="bogus"), "unknown --device 'bogus'"),
    Case("generate --device bogus", "number", _generate(device="bogus"), "unknown --device 'bogus'"),
    Case(
        "gatys --learning-rate nan",
        "number",
        _transfer("gatys", "--optimizer", "adam", "--learning-rate", "nan"),
        "--learning-rate",
    ),
    Case("gatys --style-scale 0", "number", _transfer("gatys", "--style-scale", "0"), "--style-scale 0"),
    Case("gatys --style-scale 1000", "number", _transfer("gatys", "--style-scale", "1000"), "--style-scale 1000"),
    Case(
        "adain content 10x2000", "number", _transfer("adain", content="{d}/thin-10x2000.png"), "thinner than the 16 px"
    ),
    Case(
        "ghiasi content 10x2000",
        "number",
        _transfer("ghiasi", content="{d}/thin-10x2000.png"),
        "thinner than the 16 px",
    ),
    Case(
        "gatys content 1x20000", "number", _transfer("gatys", content="{d}/thin-1x20000.png"), "thinner than the 16 px"
    ),
    Case("compare content 10x2000", "number", _compare(content="{d}/thin-10x2000.png"), "thinner than the 16 px"),
    # -- a token equal to a word of the vocabulary -----------------------------------------------------
    Case("train --token painting", "token", _train(token="painting"), "'painting</w>'"),
    Case("train --token the", "token", _train(token="the"), "'the</w>'"),
    Case("train --token Painting", "token", _train(token="Painting"), "'painting</w>'"),
    Case(
        "generate an embedding keyed 'painting'", "token", _generate(embedding="{d}/word.safetensors"), "'painting</w>'"
    ),
    # -- output paths that cannot be written, refused before a model loads -----------------------------
    Case("generate --output an existing file", "output", _generate(output="{d}/file.txt"), "is a file, not a folder"),
    Case("generate --output /dev/null", "output", _generate(output="/dev/null"), "is a file, not a folder"),
    Case("generate --output file.txt/sub", "output", _generate(output="{d}/file.txt/sub"), "file.txt is a file"),
    Case("train --output an existing file", "output", _train(output="{d}/file.txt"), "is a file"),
    Case("train --output file.txt/sub", "output", _train(output="{d}/file.txt/sub"), "file.txt is a file"),
    Case(
        "transfer --output file.txt/sub.png",
        "output",
        _transfer("ghiasi", output="{d}/file.txt/sub.png"),
        "file.txt is a file",
    ),
    Case("transfer --output /dev/null", "output", _transfer("ghiasi", output="/dev/null"), "/dev/null"),
    Case("compare --output an existing file", "output", _compare(output="{d}/file.txt"), "is a file, not a folder"),
]


def user_files(folder: Path) -> dict[str, bytes]:
    """What the user had in the corpus folder (checked unchanged after every case)."""
    return {p.name: p.read_bytes() for p in (folder / "file.txt", folder / "existing.png")}


# The child process: every case through `styleprompt.cli.main`, under an address-space limit.
CHILD = """
import contextlib, io, json, resource, sys, traceback
limit = int(sys.argv[3]) * 2**30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from styleprompt.cli import main
cases = json.loads(open(sys.argv[1]).read())
results = {}
for name, argv in cases.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code = "raised"
            err.write(traceback.format_exc())
    results[name] = {"code": code, "stderr": err.getvalue()}
open(sys.argv[2], "w").write(json.dumps(results))
"""


def run_child(cases: list[Case], folder: Path, out: Path, limit_gib: int, python: str, cwd: Path, env: dict) -> dict:
    import subprocess

    spec = folder / "cases.json"
    spec.write_text(json.dumps({c.name: c.args(folder) for c in cases}))
    proc = subprocess.run(
        [python, "-c", CHILD, str(spec), str(out), str(limit_gib)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())
