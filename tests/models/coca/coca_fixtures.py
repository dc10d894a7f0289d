"""The two tiny open_clip CoCa fixtures (tests/fixtures/coca/, made by open_clip 3.3.0): models and golden data."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

import edgevl

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "coca"
MODELS = ("coca_tiny_rv", "coca_tiny_sv")


def load_model(name: str) -> torch.nn.Module:
    """The fixture CoCa built from its folder (`open_clip_config.json` + `model.safetensors`), in eval mode."""
    return edgevl.create_model(f"local-dir:{FIXTURES / name}")


@lru_cache(maxsize=2)
def golden(name: str) -> dict[str, torch.Tensor]:
    """Inputs and open_clip's outputs (`io.safetensors`)."""
    return load_file(FIXTURES / name / "io.safetensors")


@lru_cache(maxsize=2)
def generate_cases(name: str) -> list[dict]:
    """open_clip's `generate` calls and their tokens (`generate.json`)."""
    return json.loads((FIXTURES / name / "generate.json").read_text())["generate"]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()
