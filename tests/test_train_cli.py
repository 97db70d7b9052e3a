"""The train command: real outputs from the CLI, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from styleprompt.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--model",
    "tiny",
    "--steps",
    "2",
    "--grad-accum",
    "1",
    "--preview-every",
    "0",
    "--save-every",
    "0",
    "--device",
    "cpu",
]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--images", str(tmp_path / "empty"), "--output", str(tmp_path / "o"), *FAST)
    assert_one_line_error(code, err, "no images", "empty")


def test_folder_of_non_images(capsys, tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "notes.jpg").write_text("this is not a picture")
    (folder / "blank.png").write_bytes(b"")
    code, _, err = run_cli(capsys, "train", "--images", str(folder), "--output", str(tmp_path / "o"), *FAST)
    assert_one_line_error(code, err, "none of the 2 image files")


def test_corrupt_jpeg_among_good_ones_is_skipped_with_a_warning(capsys, caplog, artworks_dir, tmp_path):
    good = (artworks_dir / "art1.jpg").read_bytes()
    (artworks_dir / "broken.jpg").write_bytes(good[: len(good) // 3])
    with caplog.at_level(logging.WARNING):
        code, out, _ = run_cli(
            capsys, "train", "--images", str(artworks_dir), "--output", str(tmp_path / "o"), "--token", "<s1>", *FAST
        )
    assert code == 0, out
    assert (tmp_path / "o" / "learned_embeds.safetensors").is_file()
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)


def test_token_already_in_the_vocabulary(capsys, artworks_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "train",
        "--images",
        str(artworks_dir),
        "--output",
        str(tmp_path / "o"),
        "--token",
        "<|endoftext|>",
        *FAST,
    )
    assert_one_line_error(code, err, "already in the tokenizer")


def test_unknown_model_offline(capsys, artworks_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["train", "--images", str(artworks_dir), "--output", str(tmp_path / "o"), *FAST]
    args[args.index("tiny")] = "no-such-org/no-such-model"
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "no-such-org/no-such-model", "not available")


def test_unknown_model_name_and_missing_path(capsys, artworks_dir, tmp_path):
    for model, needle in [("not a model", "unknown model"), (str(tmp_path / "nothing.txt"), "unknown model")]:
        args = ["train", "--images", str(artworks_dir), "--output", str(tmp_path / "o"), *FAST]
        args[args.index("tiny")] = model
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, needle)


@pytest.mark.slow
def test_existing_run_needs_resume(capsys, artworks_dir, tmp_path):
    args = ["train", "--images", str(artworks_dir), "--output", str(tmp_path / "o"), "--checkpoint-every", "1", *FAST]
    assert run_cli(capsys, *args)[0] == 0
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "--resume latest")
    code, out, _ = run_cli(capsys, *args, "--resume", "latest", "--steps", "3")
    assert code == 0 and "step 3" in out


@pytest.mark.slow
def test_a_non_empty_output_needs_resume_or_overwrite(capsys, artworks_dir, tmp_path):
    out = tmp_path / "o"
    args = ["train", "--images", str(artworks_dir), "--output", str(out), *FAST, "--save-every", "1"]
    assert run_cli(capsys, *args)[0] == 0
    assert len(list((out / "embeddings").iterdir())) == 2
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "is not empty", "--overwrite", "--resume latest")
    code, _, _ = run_cli(capsys, *args, "--steps", "1", "--overwrite")
    assert code == 0
    assert [p.name for p in (out / "embeddings").iterdir()] == ["step-000001.safetensors"]  # no step 2 left from before
    assert (out / "notes.txt").read_text() == "mine"


def test_fp16_on_cpu_is_refused(capsys, artworks_dir, tmp_path):
    code, _, err = run_cli(
        capsys,
        "train",
        "--images",
        str(artworks_dir),
        "--output",
        str(tmp_path / "o"),
        "--mixed-precision",
        "fp16",
        *FAST,
    )
    assert_one_line_error(code, err, "fp16 needs a GPU")


@pytest.mark.slow
def test_train_style_token_script_end_to_end(tmp_path, artworks_dir):
    """The acceptance command, as a user runs it: a subprocess, the real entry script."""
    out = tmp_path / "s1"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train_style_token.py"),
            "--model",
            "tiny",
            "--images",
            str(artworks_dir),
            "--token",
            "<s1>",
            "--steps",
            "6",
            "--preview-every",
            "3",
            "--preview-steps",
            "2",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("learned_embeds.safetensors", "loss.csv", "loss.png", "config.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "previews").glob("step-*.png"))) == 3
    assert "Traceback" not in proc.stderr
