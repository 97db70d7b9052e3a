"""Atomic file writes, safe reads of user files, and file names fit for a one-line message.

Why writes: a user may kill a run at any moment (Ctrl-C, SIGKILL, a full disk). Writing to a
temporary file in the same folder and renaming it over the target means a reader only ever sees
the old file or the complete new one, never half of one.

Why reads: a path a user gives may name a FIFO (opening it waits for a writer, forever), a device
(/dev/zero never ends), a kernel file (/proc/self/mem claims 0 bytes) or a document nested deeper
than Python's stack. `check_regular_file`, `open_regular` and `read_json` refuse those with a
reason of their own. `shown_path` writes any name on one line (a newline or an undecodable byte in
a file name would otherwise split or garble the error line).

A leaf module: it imports only `styleprompt.plumbing.errors`, so `classic` writes files the same way.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from styleprompt.plumbing.errors import UserError

# Every temporary `atomic_path` makes is `.<target name>.<pid>.<random>.styleprompt-tmp`: a name no
# other program writes, holding the writer's process id, so a cleanup can tell ours (and whether
# their writer still runs) from a user's own `.notes.tmp`.
TEMPORARY_SUFFIX = ".styleprompt-tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX) + "$")


def shown_path(path: str | os.PathLike | bytes) -> str:
    """`path` as one printable line: control characters (a newline, an escape) are written as
    Python writes them in a string (`\\n`, `\\x1b`), undecodable bytes of the name as `\\xff`.

    Why: an error is promised as one line naming the file; a name holding a newline split it in
    two, and the bytes Python could not decode printed as surrogates (`\\udcff`) or not at all.
    """
    text = os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte the file system encoding could not decode (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)


def _explain_os_error(path: Path, exc: OSError) -> UserError:
    shown = shown_path(path)
    if exc.errno == errno.ENOSPC:
        return UserError(f"cannot write {shown}: the disk is full; free some space or choose another --output")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {shown}: permission denied; choose a writable --output folder")
    return UserError(f"cannot write {shown}: {exc.strerror or exc}")


# -- reading user files -----------------------------------------------------------------------------


def _kernel_devices() -> set[int]:
    """The device numbers of /proc and /sys: their files are the kernel's, whatever they are named."""
    devices = set()
    for root in ("/proc", "/sys"):
        with contextlib.suppress(OSError):
            devices.add(os.stat(root).st_dev)
    return devices


def _not_regular_reason(path: Path, info: os.stat_result) -> str | None:
    """Why the file `info` describes is not one to read as data, or None for a plain file."""
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return "it is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "it is a named pipe (FIFO), not a file: reading it would wait for a writer"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "it is a socket, not a file"
    if not stat.S_ISREG(mode):
        return "it is not a regular file"
    real = os.path.realpath(path)
    if info.st_dev in _kernel_devices() or real.startswith(("/proc/", "/sys/")):
        return "it is a file of the kernel (/proc or /sys), not a file of data"
    return None


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Refuse, by its kind, a path that is not a plain file of data: one line naming it.

    For readers that hand a path to a library (Pillow, safetensors); a missing file is left to
    the caller's own message. Nothing is opened, so a FIFO cannot block here.
    """
    p = Path(path)
    try:
        info = os.stat(p)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {shown_path(p)}") from None
    except OSError as exc:
        raise UserError(f"cannot read {shown_path(p)}: {_read_error_reason(exc)}") from None
    reason = _not_regular_reason(p, info)
    if reason:
        raise UserError(f"cannot read {shown_path(p)}: {reason}; give a regular {what}")
    return p


def _read_error_reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "its links loop"
    return exc.strerror or str(exc)


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """Open a plain file for reading in binary, never blocking: a FIFO, a device or a kernel file
    is refused in one line, judged on what was opened (so it cannot be swapped after a check).

    Why O_NONBLOCK: opening a FIFO for reading waits until someone opens it for writing; with
    the flag the open returns at once, and fstat then says what it is.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{what} not found: {shown_path(p)}") from None
    except IsADirectoryError:
        raise UserError(f"cannot read {shown_path(p)}: it is a folder, not a file; give a regular {what}") from None
    except OSError as exc:
        raise UserError(f"cannot read {shown_path(p)}: {_read_error_reason(exc)}") from None
    try:
        reason = _not_regular_reason(p, os.fstat(fd))
        if reason:
            raise UserError(f"cannot read {shown_path(p)}: {reason}; give a regular {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# Every JSON document styleprompt writes nests a few levels (survey keys and answers: 4); a deeper
# one was not written by it. Bounding the depth before parsing means a document nested 100000
# deep is one line, not a RecursionError from the parser.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_JSON_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings not counted)."""
    brackets = _JSON_NOT_BRACKET.sub("", _JSON_STRING.sub('""', text))
    return max(itertools.accumulate(_JSON_STEP[c] for c in brackets), default=0)


def parse_json(text: str, where: str, what: str = "JSON document", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` with the nesting bounded; a refusal is one line, `{where} is not a readable {what} ...`."""
    depth = json_depth(text)
    if depth > max_depth:
        raise UserError(
            f"{where} is not a readable {what}: it nests {depth} levels deep, more than the {max_depth} any "
            "styleprompt file holds (it was not written by styleprompt, or it was edited)"
        )
    try:
        return json.loads(text)
    except RecursionError:  # not reached below max_depth; kept as the last guard
        raise UserError(f"{where} is not a readable {what}: it nests too deeply") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where} is not a readable {what} ({exc})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """A JSON file of the user's: a plain file (see `open_regular`), UTF-8, nesting bounded."""
    p = Path(path)
    with open_regular(p, what) as handle:
        try:
            data = handle.read()
        except OSError as exc:
            raise UserError(f"cannot read {shown_path(p)}: {_read_error_reason(exc)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{shown_path(p)} is not a readable {what} (not UTF-8 text: {exc.reason})") from None
    return parse_json(text, shown_path(p), what)


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
                f"{flag} {shown_path(shown)}: cannot write in {shown_path(folder)} (permission denied); choose a writable folder"
            ) from None
        if exc.errno == errno.ENOSPC:
            raise UserError(
                f"{flag} {shown_path(shown)}: the disk holding {shown_path(folder)} is full; free some space or choose another folder"
            ) from None
        raise UserError(
            f"{flag} {shown_path(shown)}: cannot write in {shown_path(folder)} ({exc.strerror or exc})"
        ) from None


def check_output_folder(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Refuse, before any work, an output folder the run could not write (nothing is created).

    Why first: a model load or a long run that ends in "cannot write" loses the user's time,
    and generate would lose the images it painted. Catches an existing file (or /dev/null), a
    path through a file (`file.txt/sub`), and a folder the user may not write in.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {shown_path(target)} is a file, not a folder; give a folder")
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(
            f"{flag} {shown_path(target)}: {shown_path(existing)} is a file, so no folder can be made inside it; give another folder"
        )
    _probe_writable(existing, flag, target)
    return target


def check_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Refuse, before any work, an output file path the run could not write (a folder, a device, ...)."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise UserError(
            f"{flag} {shown_path(target)} is a folder; give a file name, such as {shown_path(target / 'output.png')}"
        )
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {shown_path(target)} is not a regular file (a device or a pipe); give a file name")
    check_output_folder(target.parent, flag)
    return target
