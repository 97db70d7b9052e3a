"""Where the project's plumbing lives: the leaf modules both packages import, and nothing more.

`styleprompt.plumbing.errors`, `styleprompt.plumbing.files` and `styleprompt.plumbing.images` hold the error type, atomic
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
PLUMBING = {
    "styleprompt",
    "styleprompt.plumbing",
    "styleprompt.plumbing.errors",
    "styleprompt.plumbing.files",
    "styleprompt.plumbing.images",
}


def test_plumbing_imports_no_other_styleprompt_module_and_no_torch() -> None:
    code = (
        "import json, sys\n"
        "import styleprompt.plumbing.errors, styleprompt.plumbing.files, styleprompt.plumbing.images\n"
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


def _documented_modules() -> set[str]:
    """The `wing/module.py` names in docs/architecture.md's module tables (first column)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Modules, one line each") :]
    section = section[: section.index("`classic/`\n")]
    named: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            named.update(part.strip(" `") for part in first.split(","))
    return named


def test_the_architecture_table_names_every_module_of_every_wing_and_no_other() -> None:
    wings = ("plumbing", "diffusion", "evaluation", "micro")
    in_tree = {f"{wing}/{p.name}" for wing in wings for p in (ROOT / "styleprompt" / wing).glob("*.py")}
    in_tree -= {f"{wing}/__init__.py" for wing in wings if wing != "micro"}  # a wing's docstring only
    documented = {name for name in _documented_modules() if name.split("/")[0] in wings}
    assert documented == in_tree, (
        f"docs/architecture.md and the tree differ: only in the doc {sorted(documented - in_tree)}, "
        f"only in the tree {sorted(in_tree - documented)}"
    )


def test_no_flat_modules_are_left_beside_the_wings() -> None:
    flat = {p.name for p in (ROOT / "styleprompt").glob("*.py")}
    assert flat == {"__init__.py", "cli.py"}, f"put {sorted(flat - {'__init__.py', 'cli.py'})} in a wing"
