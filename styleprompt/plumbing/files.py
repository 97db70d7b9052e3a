"""Atomic file writes.

Why: a user may kill a run at any moment (Ctrl-C, SIGKILL, a full disk). Writing to a temporary
file in the same folder and renaming it over the target means a reader only ever sees the old
file or the complete new one, never half of one.

A leaf module: it imports only `styleprompt.plumbing.errors`, so `classic` writes files the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from styleprompt.plumbing.errors import UserError

# Every temporary `atomic_path` makes is `.<target name>.<pid>.<random>.styleprompt-tmp`: a name no
# other program writes, holding the writer's process id, so a cleanup can tell ours (and whether
# their writer still runs) from a user's own `.notes.tmp`.
TEMPORARY_SUFFIX = ".styleprompt-tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX) + "$")


def _explain_os_error(path: Path, exc: OSError) -> UserError:
    if exc.errno == errno.ENOSPC:
        return UserError(f"cannot write {path}: the disk is full; free some space or choose another --output")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {path}: permission denied; choose a writable --output folder")
    return UserError(f"cannot write {path}: {exc.strerror or exc}")


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), since setting
    it to read it back would briefly change it for every other thread."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename.

    The caller writes the whole file to the yielded path (with any library's own save
    function). If the block raises, the temporary file is removed and `path` is untouched.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX, dir=target.parent
        )
        os.close(fd)
    except OSError as exc:
        raise _explain_os_error(target, exc) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes its file 0600; a written file gets the mode any new file gets (a survey
        # page is meant to be shared), as if it had been opened for writing in the usual way
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _explain_os_error(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is named as `atomic_path` names its temporaries."""
    return _TEMPORARY_NAME.match(Path(path).name) is not None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporaries that a killed writer left in `folder` (SIGKILL runs no cleanup).

    Why so narrow: the folder may hold the user's own files. Only this folder is looked at (not
    the ones below it: call it for each folder a run writes), only names `atomic_path` makes
    (`.<name>.<pid>.<random>.styleprompt-tmp`), and only those whose writing process has ended.
    Returns how many were removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.iterdir():
        match = _TEMPORARY_NAME.match(path.name)
        if match is None or path.is_symlink() or not path.is_file() or _process_alive(int(match.group(1))):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _probe_writable(folder: Path, flag: str, shown: Path) -> None:
    """Create and remove one temporary in `folder`: the only test that holds for root and read-only mounts."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".probe.{os.getpid()}.", suffix=TEMPORARY_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(
                f"{flag} {shown}: cannot write in {folder} (permission denied); choose a writable folder"
            ) from None
        if exc.errno == errno.ENOSPC:
            raise UserError(
                f"{flag} {shown}: the disk holding {folder} is full; free some space or choose another folder"
            ) from None
        raise UserError(f"{flag} {shown}: cannot write in {folder} ({exc.strerror or exc})") from None


def check_output_folder(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Refuse, before any work, an output folder the run could not write (nothing is created).

    Why first: a model load or a long run that ends in "cannot write" loses the user's time,
    and generate would lose the images it painted. Catches an existing file (or /dev/null), a
    path through a file (`file.txt/sub`), and a folder the user may not write in.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {target} is a file, not a folder; give a folder")
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(
            f"{flag} {target}: {existing} is a file, so no folder can be made inside it; give another folder"
        )
    _probe_writable(existing, flag, target)
    return target


def check_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Refuse, before any work, an output file path the run could not write (a folder, a device, ...)."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise UserError(f"{flag} {target} is a folder; give a file name, such as {target / 'output.png'}")
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {target} is not a regular file (a device or a pipe); give a file name")
    check_output_folder(target.parent, flag)
    return target
