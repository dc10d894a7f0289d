"""onnxruntime dynamic int8 quantization restricted to MatMul/Gemm, and how far it moves the outputs.

Conv stays fp32: ORT's dynamic ConvInteger path is slower than fp32 conv on CPU (spec: ecosystem.md §7).
Dynamo-exported graphs carry `value_info` shapes that make the quantizer's shape inference fail
(`ShapeInferenceError ... (64) vs (128)`); they are dropped first (ORT re-infers what it needs). ORT's
`quant_pre_process` is not run: it fails on external-data models and brought no gain on these graphs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgevl.export.graphs import Graph
from edgevl.export.parity import output_errors, row_cosines, run_session
from edgevl.export.runtime import ExportError, require
from edgevl.io import atomic_write

QUANTIZED_OPS = ("MatMul", "Gemm")


def int8_path(path: str | Path) -> Path:
    """`image.onnx` -> `image.int8.onnx`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.int8.onnx")


def untie_weights(model) -> int:
    """Give every MatMul/Gemm whose weight initializer is shared (tied embeddings: LightCap's heads) its own copy.

    ORT rewrites Gemm(transB=1) to MatMul by transposing the weight initializer in place, which corrupts the
    other users of a tied weight; each copy is quantized on its own (int8, a quarter of the fp32 size).
    Returns the number of copies made.
    """
    onnx = require("onnx")
    initializers = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input):
            uses[name] = uses.get(name, 0) + 1
    copies = 0
    for node in model.graph.node:
        weight = node.input[1] if node.op_type in QUANTIZED_OPS and len(node.input) > 1 else None
        if weight in initializers and uses[weight] > 1:
            clone = onnx.TensorProto()
            clone.CopyFrom(initializers[weight])
            clone.name = f"{weight}.untied{copies}"
            model.graph.initializer.append(clone)
            node.input[1] = clone.name
            copies += 1
    return copies


def quantize_int8(src: str | Path, dst: str | Path | None = None) -> Path:
    """Write a dynamic-int8 copy of `src` (weights inline) atomically; returns its path."""
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    src, dst = Path(src), Path(dst) if dst is not None else int8_path(src)
    model = onnx.load(str(src))  # pulls in external weights too
    del model.graph.value_info[:]
    untie_weights(model)
    fd, tmp_in = tempfile.mkstemp(suffix=".onnx", dir=dst.parent)  # scratch input, never the output
    os.close(fd)
    root = logging.getLogger()
    level = root.level
    try:
        onnx.save(model, tmp_in)
        root.setLevel(logging.ERROR)  # ORT logs a "consider pre-processing" warning on every call
        atomic_write(dst, lambda tmp_out: quantization.quantize_dynamic(
            tmp_in, tmp_out, weight_type=quantization.QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=False, reduce_range=False,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # types shape inference cannot see
        ))
    except Exception as exc:
        raise ExportError(f"int8 quantization of {str(src)!r} failed: {exc}") from exc
    finally:
        root.setLevel(level)
        os.unlink(tmp_in)
    return dst


@torch.no_grad()
def compare_int8(graph: Graph, fp32_session, int8_session, batch: int = 8, seed: int = 1) -> dict[str, float]:
    """Cosine similarity (min and mean over rows) and max abs error of the first output, int8 vs fp32 ORT."""
    inputs = graph.make_inputs(batch, torch.Generator().manual_seed(seed))
    ref = run_session(fp32_session, graph, inputs)[0]
    act = run_session(int8_session, graph, inputs)[0]
    cos = row_cosines(ref, act)
    return {"output": graph.output_names[0], "batch": batch, "cosine_min": float(np.min(cos)),
            "cosine_mean": float(np.mean(cos)), "max_abs_error": output_errors(ref, act)["max_abs_error"]}
