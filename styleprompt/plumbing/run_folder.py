"""A command's run folder: refused when it already holds something, unless the user says what to do.

Why: re-running into an existing run folder silently wrote over the last run, and a re-run killed
half-way left old and new files mixed (an old embeddings/step-000500 next to a new loss.csv). So a
command that writes a run folder (train, compare) starts only in a new or empty one, with
`--resume` (continue the run that is there) or with `--overwrite` (remove that run's own files
first; anything else in the folder, such as the user's notes, stays).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from styleprompt.plumbing.errors import UserError
from styleprompt.plumbing.folder_lock import is_lock_file


def claim_run_folder(
    folder: str | Path, own: Iterable[str], *, overwrite: bool, resume: bool = False, resume_hint: str = ""
) -> Path:
    """Check (and with `overwrite`, clear) `folder` before a run writes it; returns its path.

    `own` names the files and folders a run of this command writes directly in `folder`;
    `resume_hint` is the flag that continues a run (only for commands that can).
    """
    root = Path(folder).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(f"--output {root} is a file, not a folder; give a folder for the run")
    entries = sorted(p.name for p in root.iterdir() if not is_lock_file(p)) if root.is_dir() else []
    if not entries or resume:
        return root
    if overwrite:
        for name in own:
            path = root / name
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
