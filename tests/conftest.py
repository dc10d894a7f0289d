"""Shared test helpers: paths to the golden fixtures copied from the reference implementations, one-thread runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


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
