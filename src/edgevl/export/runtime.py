"""onnx / onnxruntime access: lazy imports with an install hint, and CPU inference sessions with edgevl's defaults."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from edgevl.errors import EdgevlError

INSTALL_HINT = "pip install 'edgevl[onnx]'"
DEFAULT_THREADS = 2


class ExportError(EdgevlError):
    """ONNX export, parity check, quantization or ONNX Runtime inference failed (message names the part)."""


def require(module: str) -> ModuleType:
    """Import `onnx`, `onnxscript` or `onnxruntime` (or a submodule), or raise ExportError with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the optional package {module.split('.')[0]!r}, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc


def session(path: str | Path, threads: int = DEFAULT_THREADS):
    """A CPU `onnxruntime.InferenceSession` with all graph optimizations and `threads` intra-op threads."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types (Fail, InvalidGraph, NoSuchFile)
        raise ExportError(f"onnxruntime cannot load {str(path)!r}: {exc}") from exc
