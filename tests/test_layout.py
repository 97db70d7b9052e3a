"""Where the project's plumbing lives: the leaf modules both packages import, and nothing more.

`styleprompt.errors`, `styleprompt.files` and `styleprompt.images` hold the error type, atomic
writes and safe image I/O that `classic` and `styleprompt` share. They must stay leaves (no other
styleprompt module, no torch or diffusion library at import), or `classic` would drag the
diffusion side in, and `import styleprompt` would stop being cheap.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUMBING = {"styleprompt", "styleprompt.errors", "styleprompt.files", "styleprompt.images"}


def test_plumbing_imports_no_other_styleprompt_module_and_no_torch() -> None:
    code = (
        "import json, sys\n"
        "import styleprompt.errors, styleprompt.files, styleprompt.images\n"
        "roots = ('styleprompt', 'classic', 'torch', 'diffusers', 'transformers')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in roots)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == PLUMBING


def test_classic_imports_only_the_plumbing_of_styleprompt() -> None:
    imported: dict[str, set[str]] = {}
    for path in sorted((ROOT / "classic").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "styleprompt":  # from styleprompt import files
                modules = [f"styleprompt.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            else:
                continue
            imported.setdefault(path.name, set()).update(m for m in modules if m.split(".")[0] == "styleprompt")
    assert any(imported.values()), "classic no longer imports the shared plumbing: update this test and the docs"
    beyond = {name: sorted(modules - PLUMBING) for name, modules in imported.items() if modules - PLUMBING}
    assert not beyond, f"classic imports more of styleprompt than its plumbing: {beyond}"
