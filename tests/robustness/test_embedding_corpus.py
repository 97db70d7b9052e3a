"""Bad embedding files through every command that reads them: one line, exit code 2, nothing run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from styleprompt.cli import main

SENTINEL_NAME = "pwned-sentinel"


class _RunsCodeWhenUnpickled:
    """Unpickling this calls os.system, which would create the sentinel file."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _malicious_pickle(path: Path) -> None:
    torch.save({"string_to_param": {"*": _RunsCodeWhenUnpickled(path.parent / SENTINEL_NAME)}, "name": "x"}, path)


BAD_EMBEDDINGS = {
    "wrong width (SD 1.x file for a 32-wide model)": (
        "wide.safetensors",
        lambda p: save_file({"<w>": torch.randn(2, 768)}, str(p)),
    ),
    "NaN values": ("nan.safetensors", lambda p: save_file({"<n>": torch.full((2, 32), float("nan"))}, str(p))),
    "infinite values": ("inf.safetensors", lambda p: save_file({"<i>": torch.full((1, 32), float("inf"))}, str(p))),
    "empty dict": ("empty.safetensors", lambda p: save_file({}, str(p))),
    "several unknown keys": (
        "keys.safetensors",
        lambda p: save_file({f"k{i}": torch.randn(3, 7) for i in range(3)}, str(p)),
    ),
    "text file named .safetensors": ("text.safetensors", lambda p: p.write_text("not tensors")),
    "pickle that runs code": ("evil.pt", _malicious_pickle),
    "text file named .bin": ("e.bin", lambda p: p.write_text("hello, this is not an embedding\n")),
    "random bytes named .pt": ("noise.pt", lambda p: p.write_bytes(bytes(range(256)) * 4)),
    "damaged pickle (protocol byte, then garbage)": ("bad.bin", lambda p: p.write_bytes(b"\x80\x02" + b"h\x65" * 50)),
    "truncated torch file": ("cut.pt", lambda p: _truncated_torch_file(p)),
}


def _truncated_torch_file(path: Path) -> None:
    torch.save({"<t>": torch.randn(2, 32)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    paths = {}
    for name, (filename, make) in BAD_EMBEDDINGS.items():
        make(tmp_path / filename)
        paths[name] = tmp_path / filename
    return paths


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("name", list(BAD_EMBEDDINGS))
def test_generate_refuses(name, bad_files, capsys, tmp_path):
    path = bad_files[name]
    line = _one_line_error(
        capsys,
        [
            "generate",
            "--model",
            "tiny",
            "--embedding",
            str(path),
            "--prompt",
            "a <w> style",
            "--steps",
            "1",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert path.name in line or "width" in line or "pickle" in line.lower()
    assert not (path.parent / SENTINEL_NAME).exists()
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("name", [n for n in BAD_EMBEDDINGS if not n.startswith("wrong width")])
def test_convert_refuses(name, bad_files, capsys, tmp_path):
    path = bad_files[name]
    _one_line_error(capsys, ["convert", str(path), "--to", "a1111", "--output", str(tmp_path / "out.pt")])
    assert not (path.parent / SENTINEL_NAME).exists()
    assert not (tmp_path / "out.pt").exists()


def test_convert_accepts_a_width_that_only_the_model_rejects(bad_files, capsys, tmp_path):
    """A 768-wide file is a valid SD 1.x embedding: only generate, which has a model, refuses it."""
    assert (
        main(
            [
                "convert",
                str(bad_files["wrong width (SD 1.x file for a 32-wide model)"]),
                "--to",
                "a1111",
                "--output",
                str(tmp_path / "out.pt"),
            ]
        )
        == 0
    )
    assert (tmp_path / "out.pt").is_file()


def test_a_safetensors_file_named_bin_is_read_by_its_content(capsys, tmp_path):
    """What a file is comes from its bytes: a safetensors file under a pickle's name still loads."""
    path = tmp_path / "learned.bin"
    save_file({"<b>": torch.randn(2, 32)}, str(path))
    assert main(["inspect", str(path)]) == 0
    assert "<b>" in capsys.readouterr().out
