"""The on-device formats beside ONNX: convert one `Graph` to a package file, and run it here where the runtime exists.

Each backend is an optional extra: ExecuTorch with the XNNPACK delegate (`.pte`), LiteRT (`.tflite`, run by
`ai_edge_litert`'s interpreter), OpenVINO IR (`.xml` + `.bin`) and Core ML (`.mlpackage`, converted and checked
structurally here; prediction needs macOS). The phone formats are exported at batch 1 (a phone encodes one image
or text at a time); their runners here loop over rows. OpenVINO keeps ONNX's dynamic axes. Versions are the ones
that install beside torch 2.13.0 (spec: deploy-runtimes.md).
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from edgevl.export.graphs import Graph
from edgevl.export.runtime import DEFAULT_THREADS, ExportError

GraphRun = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Backend:
    """One package format: its extra, file suffix, variants, whether its runtime predicts on this machine, and
    whether it runs the captioner's growing KV cache (`dynamic_cache`; else it gets the fixed-size cache graphs)."""

    name: str
    title: str
    extra: str
    modules: tuple[str, ...]
    suffix: str
    variants: tuple[str, ...]
    runs_here: bool
    batch_one: bool
    dynamic_cache: bool

    def require(self) -> None:
        """Import the backend's packages, or ExportError naming the extra to install."""
        for module in self.modules:
            require_extra(module, self.extra, self.title)

    def file(self, graph_name: str, variant: str) -> str:
        """`image.pte` for fp32, `image.int8.pte` for a variant."""
        return f"{graph_name}{self.suffix}" if variant == "fp32" else f"{graph_name}.{variant}{self.suffix}"


def require_extra(module: str, extra: str, title: str) -> ModuleType:
    """Import `module`, or raise ExportError with the one-line install hint of `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"{title} needs the optional package {module.split('.')[0]!r} ({exc}); "
                          f"install it with: pip install 'edgevl[{extra}]'") from exc


BACKENDS = {
    "executorch": Backend("executorch", "ExecuTorch (XNNPACK)", extra="executorch", modules=("executorch.exir",),
                          suffix=".pte", variants=("fp32", "int8"), runs_here=True, batch_one=True,
                          dynamic_cache=False),
    "litert": Backend("litert", "LiteRT", extra="litert", modules=("litert_torch", "ai_edge_litert.interpreter"),
                      suffix=".tflite", variants=("fp32", "int8", "int8w"), runs_here=True, batch_one=True,
                      dynamic_cache=False),
    "openvino": Backend("openvino", "OpenVINO", extra="openvino", modules=("openvino",), suffix=".xml",
                        variants=("fp32", "fp16"), runs_here=True, batch_one=False, dynamic_cache=True),
    "coreml": Backend("coreml", "Core ML", extra="coreml", modules=("coremltools",), suffix=".mlpackage",
                      variants=("fp32", "fp16", "int8w"), runs_here=False, batch_one=True, dynamic_cache=False),
}


def get_backend(name: str) -> Backend:
    """The backend called `name` (ExportError listing the choices)."""
    if name not in BACKENDS:
        raise ExportError(f"unknown package format {name!r}; choose from onnx, aot, {', '.join(BACKENDS)}")
    return BACKENDS[name]


def example_inputs(graph: Graph, batch: int, seed: int = 1234) -> tuple[torch.Tensor, ...]:
    """Tracing inputs of `graph` at `batch`."""
    return graph.make_inputs(batch, torch.Generator().manual_seed(seed))


def _int32_ids(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """LiteRT has no int64 arg-max: token ids travel as int32 (the text tower's pooling works on either)."""
    return tuple(t.int() if t.dtype == torch.long else t for t in inputs)


def _in_temp_dir(path: Path, write: Callable[[Path], None]) -> list[Path]:
    """Run `write(tmp/path.name)` in a fresh folder beside `path`, then move every file it made into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        write(tmp_dir / path.name)
        written = []
        for item in sorted(tmp_dir.iterdir(), key=lambda p: p.suffix != path.suffix):
            target = path.parent / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _export_program(graph: Graph) -> torch.export.ExportedProgram:
    """torch.export of `graph` at batch 1, every shape static (what the phone formats take)."""
    return torch.export.export(graph.module, example_inputs(graph, 1))


def _write_executorch(graph: Graph, tmp: Path, variant: str) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = _export_program(graph)
    if variant == "int8":  # Linear layers only: XNNPACK has no dynamic-int8 kernels for the convolutions
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
        prepared = prepare_pt2e(program.module(), XNNPACKQuantizer().set_module_type(torch.nn.Linear, config))
        example = example_inputs(graph, 1)
        prepared(*example)
        program = torch.export.export(convert_pt2e(prepared), example)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    tmp.write_bytes(lowered.buffer)


def _write_litert(graph: Graph, tmp: Path, variant: str) -> None:
    import litert_torch

    litert_torch.convert(graph.module, _int32_ids(example_inputs(graph, 1))).export(str(tmp))
    if variant != "fp32":
        from ai_edge_quantizer import quantizer, recipe

        chosen = recipe.dynamic_wi8_afp32() if variant == "int8" else recipe.weight_only_wi8_afp32()
        quantized = quantizer.Quantizer(str(tmp), chosen).quantize().quantized_model
        tmp.write_bytes(bytes(quantized))


def _write_openvino(graph: Graph, tmp: Path, variant: str) -> None:
    import openvino as ov

    model = ov.convert_model(graph.module, example_input=example_inputs(graph, 2))
    for port, name in [*zip(model.inputs, graph.input_names), *zip(model.outputs, graph.output_names)]:
        port.get_tensor().set_names({name})
    ov.save_model(model, str(tmp), compress_to_fp16=variant == "fp16")


def _logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(exp(a) + exp(b)) from ops Core ML converts (its converter has no logaddexp; LightCap's ensemble uses it)."""
    spread = torch.log1p(torch.exp(-(a - b).abs()))
    return torch.where(a == b, a + math.log(2.0), torch.maximum(a, b) + spread)  # a == b: also both -inf


def coreml_decompositions() -> dict[Any, Callable]:
    """The decompositions applied before Core ML conversion: logaddexp as above, and clamp_min (coremltools 9
    asserts on a float tensor clamped at an int, as LightCap's concept averaging does)."""
    from torch._decomp import get_decompositions

    aten = torch.ops.aten
    return {aten.logaddexp.default: _logaddexp, **get_decompositions([aten.clamp_min])}


def coreml_program(graph: Graph) -> torch.export.ExportedProgram:
    """The batch-1 program Core ML converts: `graph` exported and decomposed by `coreml_decompositions`."""
    return _export_program(graph).run_decompositions(coreml_decompositions())


def _write_coreml(graph: Graph, tmp: Path, variant: str) -> None:
    import coremltools as ct

    program = coreml_program(graph)
    precision = ct.precision.FLOAT16 if variant == "fp16" else ct.precision.FLOAT32
    model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                       compute_precision=precision)
    if variant == "int8w":
        config = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric"))
        model = ct.optimize.coreml.linear_quantize_weights(model, config)
    model.save(str(tmp))


WRITERS = {"executorch": _write_executorch, "litert": _write_litert, "openvino": _write_openvino,
           "coreml": _write_coreml}


def convert_graph(backend: Backend, graph: Graph, out: Path, variant: str = "fp32") -> list[Path]:
    """Write `graph` as a `backend` package file (atomically) into `out`; returns the written paths."""
    backend.require()
    if variant not in backend.variants:
        raise ExportError(f"{backend.title} has no {variant!r} variant; choose from {', '.join(backend.variants)}")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # converter chatter; parity is checked right after
            return _in_temp_dir(out / backend.file(graph.name, variant),
                                lambda tmp: WRITERS[backend.name](graph, tmp, variant))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{backend.title} conversion of {graph.name} ({variant}) failed: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc


BatchAxes = dict[str, list[int | None]]  # {"inputs": [...], "outputs": [...]}: each tensor's batch axis or None


def _rows(run: GraphRun, batch_axes: BatchAxes | None = None) -> GraphRun:
    """Run a batch-1 package row by row and join the outputs along their batch axes (default: axis 0 everywhere;
    an input whose axis is None, like the caption position, goes whole to every row)."""

    def each_row(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        in_axes = batch_axes["inputs"] if batch_axes else [0] * len(arrays)
        rows = next(a.shape[k] for a, k in zip(arrays, in_axes) if k is not None)
        if rows == 1:
            return run(arrays)
        outs = [run([a if k is None else np.take(a, [i], axis=k) for a, k in zip(arrays, in_axes)])
                for i in range(rows)]
        out_axes = batch_axes["outputs"] if batch_axes else [0] * len(outs[0])
        return [np.concatenate(parts, axis=k) for parts, k in zip(zip(*outs), out_axes)]

    return each_row


def _load_executorch(path: Path, threads: int) -> GraphRun:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda arrays: [t.numpy() for t in method.execute([torch.from_numpy(np.ascontiguousarray(a))
                                                              for a in arrays])]


def _load_litert(path: Path, threads: int) -> GraphRun:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        for detail, array in zip(inputs, arrays):
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=detail["dtype"]))
        interpreter.invoke()
        return [interpreter.get_tensor(d["index"]).copy() for d in outputs]

    return run


def _load_openvino(path: Path, threads: int) -> GraphRun:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                           "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        results = request.infer([np.ascontiguousarray(a) for a in arrays])
        return [np.array(results[port]) for port in compiled.outputs]

    return run


LOADERS = {"executorch": _load_executorch, "litert": _load_litert, "openvino": _load_openvino}


def load_graph(backend: Backend, path: str | Path, threads: int = DEFAULT_THREADS,
               batch_axes: BatchAxes | None = None) -> GraphRun:
    """A function running the package file `path` on numpy inputs (outputs in the graph's order); a batch-1
    format runs row by row, split and joined along `batch_axes` (`Graph.batch_axes`; default axis 0)."""
    backend.require()
    if not backend.runs_here:
        raise ExportError(f"{backend.title} packages predict on macOS/iOS only; this machine can only convert them")
    try:
        run = LOADERS[backend.name](Path(path), threads)
    except Exception as exc:
        raise ExportError(f"{backend.title} cannot load {str(path)!r}: {exc}") from exc
    return _rows(run, batch_axes) if backend.batch_one else run


def inspect_coreml(path: str | Path, graph: Graph) -> dict[str, Any]:
    """Core ML structural check: the .mlpackage loads in coremltools' spec reader and its inputs/outputs have the
    graph's count and batch-1 shapes; returns the inputs, outputs and op histogram (ExportError on a mismatch)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))

    def describe(features) -> list[dict[str, Any]]:
        return [{"name": f.name, "shape": list(f.type.multiArrayType.shape)} for f in features]

    inputs, outputs = describe(spec.description.input), describe(spec.description.output)
    expected_in = [list(t.shape) for t in example_inputs(graph, 1)]
    with torch.no_grad():
        reference = graph.module(*example_inputs(graph, 1))
    expected_out = [list(t.shape) for t in (reference if isinstance(reference, tuple) else (reference,))]
    if [i["shape"] for i in inputs] != expected_in or [o["shape"] for o in outputs] != expected_out:
        raise ExportError(f"Core ML package {Path(path).name} has inputs {inputs} and outputs {outputs}; "
                          f"expected shapes {expected_in} -> {expected_out}")
    ops: dict[str, int] = {}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
    return {"inputs": inputs, "outputs": outputs, "ops": dict(sorted(ops.items())),
            "spec_version": spec.specificationVersion, "prediction": "needs macOS (coremltools predicts on macOS only)"}


def runtime_versions(backend: Backend) -> dict[str, str]:
    """{package: version} of the backend's runtime packages, for export.json."""
    from importlib.metadata import PackageNotFoundError, version

    names = {"executorch": ["executorch"], "litert": ["litert-torch", "ai-edge-litert", "ai-edge-quantizer"],
             "openvino": ["openvino"], "coreml": ["coremltools"]}[backend.name]
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
