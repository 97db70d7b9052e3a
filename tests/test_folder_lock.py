"""A run folder belongs to one process at a time, and a killed holder leaves it free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.folder_lock import LOCK_NAME, FolderLock, is_lock_file, locked_folder

ROOT = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys, time\n"
    "from styleprompt.plumbing.folder_lock import FolderLock\n"
    "FolderLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def _holder(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    child = _holder(tmp_path / "run")
    try:
        with pytest.raises(UserError, match=rf"in use by process {child.pid}\b") as caught:
            FolderLock(tmp_path / "run", "training").acquire()
        assert "\n" not in str(caught.value) and "another training" in str(caught.value)
    finally:
        child.kill()
        child.wait()


def test_a_holder_killed_with_sigkill_leaves_the_folder_free(tmp_path: Path) -> None:
    child = _holder(tmp_path / "run")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops the flock when the dead process's descriptors close
        try:
            with locked_folder(tmp_path / "run"):
                break
        except UserError:
            assert time.monotonic() < deadline, "the lock outlived its killed holder"
            time.sleep(0.1)
    assert (tmp_path / "run" / LOCK_NAME).read_text() == str(os.getpid())


def test_the_same_process_can_take_it_again_after_release(tmp_path: Path) -> None:
    with locked_folder(tmp_path / "new" / "deep") as folder:
        assert is_lock_file(folder / LOCK_NAME)
    with locked_folder(tmp_path / "new" / "deep"):
        pass
