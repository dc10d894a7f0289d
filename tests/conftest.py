"""Shared test helpers: paths to the golden fixtures copied from the reference implementations, one-thread runs,
a second process that holds an output folder's lock, and an offline hub cache (built with `hub_cache`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def hub_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache chosen through HF_HUB_CACHE, with HF_HUB_OFFLINE=1: nothing may touch the network."""
    root = tmp_path / "hf-cache"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): the references
    were computed that way, and tiny models run fastest so on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student_bundle():
    """(model, preprocess_val, tokenizer) of the tiny world student with seed-0 random weights."""
    import edgevl

    torch.manual_seed(0)
    model, _, preprocess = edgevl.create_model_and_transforms("world-student-mci")
    return model, preprocess, edgevl.get_tokenizer("world-student-mci")


@pytest.fixture
def lock_holder() -> Callable:
    """`with lock_holder(folder, command) as pid:` runs the body while another live process holds `folder`'s
    output lock (as `command`); the process is killed afterwards, leaving a stale lock file behind."""

    @contextlib.contextmanager
    def hold(folder: Path, command: str = "train") -> Iterator[int]:
        script = ("import time\nfrom edgevl.locks import output_lock\n"
                  f"with output_lock({str(folder)!r}, {command!r}):\n"
                  "    print('held', flush=True)\n    time.sleep(60)\n")
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "held"
            yield proc.pid
        finally:
            proc.kill()
            proc.wait()

    return hold
