"""One process at a time in an output folder: an exclusive `fcntl` lock on a file inside it.

Why: two trainings started into the same new `--output` both ran to exit 0, and the folder ended
with one run's config.json beside the other's token. Every command that writes a run folder
(train, generate into a folder, compare, world, the micro build) holds this lock for its whole
run; a second process gets one line that names the holder's pid.

Why `fcntl.flock`: the kernel drops the lock when the holder's file descriptor closes, so a run
killed with SIGKILL leaves no stale lock behind (the lock file stays, harmlessly, and the next
run takes it). The file is named like a hidden temporary so that a run's `--overwrite` and the
folder-is-empty checks ignore it (`is_lock_file`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from styleprompt.plumbing.errors import UserError

LOCK_NAME = ".styleprompt.lock"


def is_lock_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder lock (left out when a folder's contents are counted or listed)."""
    return Path(path).name == LOCK_NAME


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "another process"
    return f"process {text}" if text.isdigit() else "another process"


class FolderLock:
    """An exclusive lock on `folder` (created if missing); release() or process exit frees it."""

    def __init__(self, folder: str | os.PathLike, what: str = "run") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl  # POSIX only; imported here so Windows can still import the module

        self.folder.mkdir(parents=True, exist_ok=True)
        lock_path = self.folder / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"{self.folder} is in use by {_holder(lock_path)} (another {self.what} writes there); "
                "wait for it to finish or choose another folder"
            ) from None
        except OSError:
            os.close(fd)  # a file system without locks (some network mounts): run unlocked
            return self
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def locked_folder(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold `folder`'s lock for the `with` block; raises `UserError` naming the holder if taken."""
    lock = FolderLock(folder, what).acquire()
    try:
        yield Path(folder)
    finally:
        lock.release()
