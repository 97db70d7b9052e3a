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


# -- the layering: wings in order, arrows of import go down only, no circles -------------------------

# Each package of the tree and its level; a module may import its own level or lower, never higher.
# `styleprompt` itself (its lazy re-exports are strings, imported on demand) stands with the plumbing.
LEVELS: dict[str, int] = {
    "styleprompt": 0,
    "styleprompt.plumbing": 0,
    "classic": 1,  # the baselines: the plumbing only (test above); the diffusion wing reads its limits
    "styleprompt.diffusion": 2,
    "styleprompt.micro": 3,
    "styleprompt.evaluation": 3,
    "styleprompt.commands": 4,
    "styleprompt.cli": 4,
    "styleprompt.ui": 4,
    "app": 4,
    "train_style_token": 4,
}
# Imports that break a rule on purpose: (importer, imported) -> why. Keep it short, and say why.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_files() -> dict[str, Path]:
    """Every module of the project by dotted name (packages by their own name)."""
    files = {p.stem: p for p in ROOT.glob("*.py") if p.stem in LEVELS}
    for package in ("styleprompt", "classic"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The project modules `path` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..wing import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = _module_files()
    return {name: _imports(path, name, set(files)) for name, path in files.items()}


def _level(module: str) -> int:
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        if ".".join(parts[:cut]) in LEVELS:
            return LEVELS[".".join(parts[:cut])]
    raise AssertionError(f"{module} belongs to no wing: add its package to LEVELS (and to docs/architecture.md)")


def test_the_import_graph_sees_imports_inside_functions() -> None:
    """The walker must count a function's lazy import, or the two tests below would miss arrows."""
    graph = _graph()
    # models.load_pipeline imports tiny inside the function only
    assert "styleprompt.diffusion.tiny" in graph["styleprompt.diffusion.models"]
    assert "styleprompt.plumbing.errors" in graph["classic.limits"]
    assert "styleprompt.ui" in graph["app"]


def test_no_module_imports_a_wing_above_its_own() -> None:
    graph = _graph()
    upward = sorted(
        f"{importer} -> {imported}"
        for importer, targets in graph.items()
        for imported in targets
        if _level(imported) > _level(importer) and (importer, imported) not in ALLOWED
    )
    assert not upward, "imports against the wing order (plumbing < classic < diffusion < micro/evaluation < cli):\n" + (
        "\n".join(upward)
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if (node, nxt) in ALLOWED:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_among_the_project_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other (directly or round a circle): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_allowed_exception_is_still_needed_and_says_why() -> None:
    graph = _graph()
    for (importer, imported), why in ALLOWED.items():
        assert imported in graph.get(importer, set()), f"{importer} no longer imports {imported}: drop it from ALLOWED"
        assert len(why) > 20, f"say why {importer} may import {imported}"
