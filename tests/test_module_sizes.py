"""House rule: every module of the package stays small enough to read in one sitting (issue 22)."""

from __future__ import annotations

from pathlib import Path

import edgevl

MAX_LINES = 500


def test_no_module_is_over_500_lines():
    root = Path(edgevl.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert len(sizes) > 50  # the package itself was found
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
