"""Fixtures of the training tests (the stand-ins themselves live in `train_helpers`)."""

from __future__ import annotations

import pytest
from train_helpers import config


@pytest.fixture
def make_config(tmp_path):
    return lambda **kw: config(tmp_path, **kw)
