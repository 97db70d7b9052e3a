"""A command's run folder: refused when it already holds something, unless the user says what to do.

Why: re-running into an existing run folder silently wrote over the last run, and a re-run killed
half-way left old and new files mixed (an old embeddings/step-000500 next to a new loss.csv). So a
command that writes a run folder (train, compare) starts only in a new or empty one, with
`--resume` (continue the run that is there) or with `--overwrite` (remove that run's own files
first; anything else in the folder, such as the user's notes, stays).
"""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.folder_lock import is_lock_file, locked_folder

# The folders this process holds the lock of, per thread, with how deep (run_folder_lock is re-entrant).
_HELD: dict[tuple[Path, int], int] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def run_folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """`folder_lock.locked_folder`, re-entrant within one thread.

    Why: a command takes the lock before it clears the folder (`--overwrite` must not remove a
    running run's files), then calls the library, which takes it again for callers that did not
    (the app); a second flock from the same process would refuse itself. Another thread of the
    same process (two app requests) still gets the refusal.
    """
    key = (Path(folder).expanduser().resolve(), threading.get_ident())
    with _HELD_GUARD:
        depth = _HELD.get(key, 0)
        if depth:
            _HELD[key] = depth + 1
    if depth:
        try:
            yield Path(folder)
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return
    with locked_folder(folder, what):
        with _HELD_GUARD:
            _HELD[key] = 1
        try:
            yield Path(folder)
        finally:
            with _HELD_GUARD:
                del _HELD[key]


def claim_run_folder(
    folder: str | Path,
    own: Iterable[str],
    *,
    overwrite: bool,
    resume: bool = False,
    resume_hint: str = "",
    keep: Iterable[str | os.PathLike] = (),
) -> Path:
    """Check (and with `overwrite`, clear) `folder` before a run writes it; returns its path.

    `own` names the files and folders a run of this command writes directly in `folder`;
    `resume_hint` is the flag that continues a run (only for commands that can); `keep` are
    paths never removed, nor anything holding them (the artworks a new run is about to read).
    """
    root = Path(folder).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(f"--output {root} is a file, not a folder; give a folder for the run")
    entries = sorted(p.name for p in root.iterdir() if not is_lock_file(p)) if root.is_dir() else []
    if not entries or resume:
        return root
    if overwrite:
        kept = [Path(p).expanduser().resolve() for p in keep]
        for name in own:
            path = root / name
            if any(k == path.resolve() or path.resolve() in k.parents for k in kept):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        return root
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    resume_text = f"add {resume_hint} to continue the run there, " if resume_hint else ""
    raise UserError(
        f"--output {root} is not empty ({len(entries)} entries: {shown}); {resume_text}"
        "add --overwrite to replace its run, or choose a new folder"
    )
