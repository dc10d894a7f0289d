"""Shared fixtures: tiny random teachers, captioner and a 24-sample world dataset (3 shards of 8)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_world, save_captioner, save_teachers  # noqa: E402


@dataclass(frozen=True)
class TinySetup:
    root: Path
    data: str
    teachers: tuple[str, ...]
    captioner: str


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two threads per process are several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinySetup:
    root = tmp_path_factory.mktemp("reinforce")
    teachers = tuple(save_teachers(root))
    return TinySetup(root, make_world(root, 24, 8), teachers, save_captioner(root))
