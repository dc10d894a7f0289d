"""Skip a test, printing the reason, when a package format's optional extra is not installed."""

from __future__ import annotations

import pytest

from edgevl.export.backends import BACKENDS
from edgevl.export.runtime import ExportError


def need(backend: str) -> None:
    """Skip (with the one-line install hint as the reason) when `backend`'s extra is missing."""
    try:
        BACKENDS[backend].require()
    except ExportError as exc:
        pytest.skip(str(exc))
