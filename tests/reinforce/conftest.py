"""Shared fixtures: tiny random teachers, captioner, a 24-sample world dataset (3 shards of 8, plus one broken
sample in shard 1) and a reference single-process run over it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import TinySetup, make_world, reinforce_config, save_captioner, save_teachers

from edgevl.reinforce.generate import reinforce


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


@pytest.fixture(scope="session")
def reference(tiny) -> tuple[Path, dict]:
    """A finished single-process run with the default test settings: (folder, manifest)."""
    out = tiny.root / "reference"
    return out, reinforce(reinforce_config(tiny, out))
