"""The package's layering stays true: import-linter contracts (pyproject.toml), no module imports the package root,
no module imports another module's private names."""

from __future__ import annotations

import ast
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "changecap"


@functools.cache
def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out.append((name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
    return out


def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is a dev dependency (pip install -e '.[dev]')"
    proc = subprocess.run([exe, "--no-cache"], cwd=SRC.parents[1], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert "0 broken" in proc.stdout


def test_no_module_imports_the_package_root() -> None:
    """``changecap/__init__`` imports submodules (lazily); a submodule importing the root would close a cycle."""
    offenders = []
    for name, tree in _modules():
        if name == "changecap":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "changecap" and node.level == 0:
                offenders.append(f"{name}: from changecap import {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.Import) and any(a.name == "changecap" for a in node.names):
                offenders.append(f"{name}: import changecap")
    assert not offenders, offenders


def test_no_private_names_imported_across_modules() -> None:
    offenders = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("changecap"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and node.module != name:
                    offenders.append(f"{name}: from {node.module} import {', '.join(private)}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("lower", "upper"),
    [("changecap.models", "changecap.engine"), ("changecap.models", "changecap.inference"),
     ("changecap.engine", "changecap.inference"), ("changecap.data", "changecap.models")],
)  # fmt: skip
def test_lower_layers_do_not_import_upper_ones(lower: str, upper: str) -> None:
    """The contracts' most important consequences, stated directly (also at function level)."""
    offenders = []
    for name, tree in _modules():
        if not (name == lower or name.startswith(lower + ".")):
            continue
        for node in ast.walk(tree):
            modules = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            modules += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{name} imports {m}" for m in modules if m == upper or m.startswith(upper + ".")]
    assert not offenders, offenders
