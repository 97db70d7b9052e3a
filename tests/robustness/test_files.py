"""Atomic writes: a failed write leaves the old file and no temporary; full disk and read-only are one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from styleprompt.plumbing import files
from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.files import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_text_atomic(tmp_path / "a.txt", "old")

    def disk_full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(UserError, match="the disk is full") as info:
        write_text_atomic(target, "new")
    assert "\n" not in str(info.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(folder, 0o555)
    code = (
        "from styleprompt.plumbing.files import write_text_atomic\nfrom styleprompt.plumbing.errors import UserError\n"
        f"try:\n    write_text_atomic({str(folder / 'x.txt')!r}, 'x')\nexcept UserError as e:\n    print(e)"
    )
    # Root ignores folder permissions: drop the capabilities that let it, as a normal user has none.
    proc = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            sys.executable,
            "-c",
            code,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "permission denied" in proc.stdout and proc.stdout.count("\n") == 1
    assert list(folder.iterdir()) == []


def test_stale_cleanup_touches_only_our_dead_temporaries(tmp_path):
    """A user's own dotfiles and files in sub-folders survive; a live writer's temporary too."""
    user_files = [
        tmp_path / ".notes.tmp",
        tmp_path / "sub" / "deeper" / ".draft.txt.tmp",
        tmp_path / ".x.99999999.abcdefgh.tmp",
        tmp_path / "sub" / ".a.1.abcdefgh.styleprompt-tmp",
    ]
    for path in user_files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".config.json.{dead.stdout.strip()}.abcd_123{files.TEMPORARY_SUFFIX}"
    live = tmp_path / f".loss.csv.{os.getpid()}.abcd_123{files.TEMPORARY_SUFFIX}"
    for path in (stale, live):
        path.write_text("partial")
    assert files.is_temporary(stale) and files.is_temporary(live)
    assert files.remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and live.exists()
    assert all(p.read_text() == "mine" for p in user_files)


def test_training_keeps_the_users_files_in_its_output(tmp_path, artworks_dir):
    from styleprompt.diffusion.config import TrainConfig
    from styleprompt.diffusion.training import train

    out = tmp_path / "run"
    mine = [out / ".notes.tmp", out / "sub" / "deeper" / ".draft.txt.tmp", out / "embeddings" / ".keep.tmp"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    train(
        TrainConfig(
            images=str(artworks_dir),
            model="tiny",
            token="<s1>",
            output=str(out),
            steps=1,
            grad_accum=1,
            preview_every=0,
            save_every=0,
            checkpoint_every=0,
            device="cpu",
        )
    )
    assert all(p.read_text() == "mine" for p in mine)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    """Not mkstemp's 0600: a survey page or an image is meant to be read by others when the umask allows."""
    code = (
        "import os, sys\nfrom styleprompt.plumbing.files import write_text_atomic\nfrom styleprompt.plumbing.images import save_image\n"
        "from PIL import Image\n"
        f"os.umask({umask})\n"
        "a = write_text_atomic(sys.argv[1] + '/a.html', 'x')\n"
        "b = save_image(Image.new('RGB', (4, 4)), sys.argv[1] + '/b.png')\n"
        "print(oct(os.stat(a).st_mode & 0o777), oct(os.stat(b).st_mode & 0o777))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [oct(mode), oct(mode)]


def test_the_cli_prints_any_message_on_one_line_even_one_built_from_a_raw_name():
    """The last guard behind files.shown_path: a message site that put a raw file name (a newline,
    an undecodable byte) in its text still prints one escaped line."""
    import os

    from styleprompt.plumbing.errors import SettingError, UserError, cli_message

    raw = "art\nwork " + os.fsdecode(b"x\xffy")
    line = cli_message(UserError(f"cannot read {raw}"))
    assert "\n" not in line and "\\n" in line and line.encode("utf-8")  # encodable: no lone surrogate
    assert "\n" not in cli_message(SettingError("lr", "{setting} is bad\nreally"))
