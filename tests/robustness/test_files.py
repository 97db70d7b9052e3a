"""Atomic writes: a failed write leaves the old file and no temporary; full disk and read-only are one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classic import files
from classic.errors import UserError
from classic.files import write_text_atomic

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
        "from classic.files import write_text_atomic\nfrom classic.errors import UserError\n"
        f"try:\n    write_text_atomic({str(folder / 'x.txt')!r}, 'x')\nexcept UserError as e:\n    print(e)"
    )
    # Root ignores folder permissions: drop the capabilities that let it, as a normal user has none.
    proc = subprocess.run(
        ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
         sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "permission denied" in proc.stdout and proc.stdout.count("\n") == 1
    assert list(folder.iterdir()) == []
