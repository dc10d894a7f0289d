"""`import edgevl`: fast (nothing heavy at import), and the lazy names, the editors' view and `help()` agree."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import edgevl

INIT = Path(edgevl.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the imports under `if TYPE_CHECKING:` in edgevl/__init__.py."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_editors_see_exactly_the_lazy_public_names():
    assert _type_checking_imports() == edgevl._LAZY


def test_every_public_name_resolves_to_its_module():
    for name, module in edgevl._LAZY.items():
        assert getattr(edgevl, name) is getattr(importlib.import_module(module), name), name
    assert sorted(edgevl.__all__) == sorted(["__version__", *edgevl._LAZY]) == dir(edgevl)


def test_import_stays_light():
    code = "import sys, edgevl; print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
