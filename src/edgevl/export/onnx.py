"""Export reparameterized CLIP towers and LightCap graphs to ONNX, check parity against PyTorch, write export.json.

Default exporter: torch's dynamo exporter (`torch.onnx.export(dynamo=True)`, the default and maintained path of
torch 2.13; opset 20). `exporter="legacy"` uses the deprecated TorchScript exporter (opset 17): 5-10x faster to
export, handy for old runtimes. Weights are stored inline (one self-contained file per graph) unless a graph's
parameters exceed `INLINE_LIMIT` bytes, where protobuf's 2 GB cap forces an external `<file>.data`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from edgevl.export.graphs import Graph, attach_world_inputs, captioner_graphs, clip_graphs
from edgevl.export.parity import DEFAULT_TOLERANCE, PARITY_BATCHES, check_parity, session_runner, worst_error
from edgevl.export.quantize import compare_int8, int8_path, quantize_int8
from edgevl.export.runtime import ExportError, require, session
from edgevl.io import atomic_write_text, sha256_file

EXPORTERS = {"dynamo": 20, "legacy": 17}  # exporter -> default opset
# Opsets each exporter really writes in torch 2.13: dynamo builds at >= 18 (lower requests come out as 18),
# the TorchScript exporter stops at 20.
OPSET_RANGES = {"dynamo": (18, 23), "legacy": (7, 20)}
PARTS = ("image", "text", "captioner")
EXPORT_MANIFEST = "export.json"
INLINE_LIMIT = 1_800_000_000
log = logging.getLogger(__name__)


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _dynamo_shapes(graph: Graph, example: tuple[torch.Tensor, ...]) -> dict[str, dict[int, Any]]:
    """torch.export `Dim`s for the graph's named dynamic axes (one Dim per axis name, shared across inputs)."""
    dims: dict[str, Any] = {}
    for axis in {a for axes in graph.dynamic_axes.values() for a in axes.values()}:
        low, high = graph.axis_ranges.get(axis, (1, 1 << 16))
        dims[axis] = torch.export.Dim(axis, min=low, max=high)
    return {name: {i: dims[a] for i, a in graph.dynamic_axes.get(name, {}).items()} for name in graph.input_names}


@contextlib.contextmanager
def _quiet_torch_onnx_logs():
    """Hide the dynamo exporter's 'torchvision is not installed' registry warnings for the duration."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _example(graph: Graph) -> tuple[torch.Tensor, ...]:
    """Tracing inputs at batch 2 (batch 1 would be specialized away by torch.export)."""
    return graph.make_inputs(2, torch.Generator().manual_seed(1234))


def check_exporter(exporter: str, opset: int | None) -> None:
    """ExportError naming an unknown exporter or an opset it cannot write (None: the exporter's default)."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose from {sorted(EXPORTERS)}")
    low, high = OPSET_RANGES[exporter]
    if opset is not None and not low <= opset <= high:
        raise ExportError(f"--opset {opset} is not supported by the {exporter} exporter; choose {low} to {high}")


def export_graph(graph: Graph, path: str | Path, exporter: str = "dynamo", opset: int | None = None) -> list[Path]:
    """Export one graph to `path` (atomically; `path.data` too for huge weights); returns the written files."""
    check_exporter(exporter, opset)
    require("onnx")
    if exporter == "dynamo":
        require("onnxscript")
    path = Path(path)
    opset = opset or EXPORTERS[exporter]
    external = _param_bytes(graph.module) > INLINE_LIMIT
    example = _example(graph)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_torch_onnx_logs():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter; parity is checked right after
            if exporter == "dynamo":
                torch.onnx.export(graph.module, example, str(tmp), input_names=graph.input_names,
                                  output_names=graph.output_names, opset_version=opset, dynamo=True,
                                  dynamic_shapes=_dynamo_shapes(graph, example), external_data=external,
                                  verbose=False)
            else:
                torch.onnx.export(graph.module, example, str(tmp), input_names=graph.input_names,
                                  output_names=graph.output_names, opset_version=opset, dynamo=False,
                                  dynamic_axes={**graph.output_axes, **graph.dynamic_axes})
        written = []
        for item in sorted(tmp_dir.iterdir()):
            os.replace(item, path.parent / item.name)
            written.append(path.parent / item.name)
        return written
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export of {graph.file} ({exporter} exporter, opset {opset}) failed: {exc}") from exc
    finally:
        for item in tmp_dir.iterdir():
            item.unlink()
        tmp_dir.rmdir()


def describe_io(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Names, element types and shapes (symbolic axes by name) of a graph's inputs and outputs, and its opset."""
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)

    def entry(value) -> dict[str, Any]:
        t = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "inputs": [entry(v) for v in model.graph.input],
            "outputs": [entry(v) for v in model.graph.output]}


def _file_entry(files: list[Path]) -> dict[str, Any]:
    return {"file": files[0].name, "sha256": sha256_file(files[0]),
            "data_files": {f.name: sha256_file(f) for f in files[1:]}, "bytes": sum(f.stat().st_size for f in files)}


def export_graphs(graphs: Sequence[Graph], out: str | Path, *, exporter: str = "dynamo", opset: int | None = None,
                  tolerance: float = DEFAULT_TOLERANCE, quantize: str | None = None,
                  batches: Sequence[int] = PARITY_BATCHES, progress=None) -> dict[str, Any]:
    """Export, parity-check and optionally int8-quantize each graph into `out`; returns {graph name: record}."""
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}; only 'int8' is supported")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, Any] = {}
    for graph in graphs:
        say = progress or (lambda msg: log.info(msg))
        say(f"exporting {graph.file}")
        files = export_graph(graph, out / graph.file, exporter, opset)
        report = check_parity(graph, session_runner(session(files[0]), graph), tolerance, batches)
        worst = worst_error(report)
        say(f"{graph.file}: parity max abs error {worst['max_abs_error']:.3g} "
            f"(relative {worst['relative_error']:.3g}) at batches {', '.join(report)}")
        record = {**_file_entry(files), **describe_io(files[0]), "parity": report, "parity_worst": worst}
        if quantize == "int8":
            q = quantize_int8(files[0], int8_path(files[0]))
            record["int8"] = {**_file_entry([q]), **compare_int8(graph, session(files[0]), session(q))}
            say(f"{q.name}: cosine vs fp32 min {record['int8']['cosine_min']:.5f}")
        records[graph.name] = record
    return records


def write_export_manifest(out: str | Path, manifest: dict[str, Any]) -> Path:
    """Atomically write `export.json` into `out`."""
    return atomic_write_text(Path(out) / EXPORT_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_export_manifest(folder: str | Path) -> dict[str, Any]:
    """The export.json of an export folder (ExportError when missing or malformed)."""
    path = Path(folder) / EXPORT_MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read export manifest {str(path)!r}: {exc}") from exc


def base_manifest(exporter: str, opset: int | None, tolerance: float) -> dict[str, Any]:
    from edgevl.version import __version__

    ort = require("onnxruntime")
    return {"format": "onnx", "edgevl_version": __version__, "torch_version": torch.__version__,
            "onnx_version": require("onnx").__version__, "onnxruntime_version": ort.__version__,
            "exporter": exporter, "opset": opset or EXPORTERS.get(exporter), "tolerance": tolerance,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _write_graphs(graphs: list[Graph], out: str | Path, *, backend, variants: Sequence[str], exporter: str,
                  opset: int | None, tolerance: float, quantize: str | None, progress) -> dict[str, Any]:
    """ONNX graphs (`backend` None) or `backend` packages of `graphs` in `out`: {graph name: record}."""
    if backend is None:
        return export_graphs(graphs, out, exporter=exporter, opset=opset, tolerance=tolerance, quantize=quantize,
                             progress=progress)
    from edgevl.export.packages import export_package_graphs

    return export_package_graphs(backend, graphs, out, tolerance=tolerance, variants=variants, progress=progress)


def export_clip(model: torch.nn.Module, out: str | Path, *, model_name: str, pretrained: str | None = None,
                parts: Sequence[str] = ("image", "text"), exporter: str = "dynamo", opset: int | None = None,
                tolerance: float = DEFAULT_TOLERANCE, quantize: str | None = None, progress=None,
                manifest: dict[str, Any] | None = None, backend=None, variants: Sequence[str] = ()) -> dict[str, Any]:
    """Reparameterize `model` (a copy), export the requested towers into `out` (ONNX, or `backend` packages with
    `variants`), write the tokenizer JSON, update and return export.json."""
    from edgevl.data.transforms import ImageTransform
    from edgevl.export.tokenizer_json import TOKENIZER_FILE, write_tokenizer_json
    from edgevl.models.factory import preprocess_cfg_for, reparameterize
    from edgevl.tokenizer import get_tokenizer

    folded = reparameterize(model)
    graphs = [g for g in clip_graphs(folded) if g.name in parts]
    manifest = manifest if manifest is not None else base_manifest(exporter, opset, tolerance)
    pp = preprocess_cfg_for(model)
    attach_world_inputs(graphs, ImageTransform(pp), get_tokenizer(context_length=model.context_length))
    Path(out).mkdir(parents=True, exist_ok=True)
    write_tokenizer_json(Path(out) / TOKENIZER_FILE, model.context_length)
    manifest.update({"model": model_name, "pretrained": pretrained, "context_length": model.context_length,
                     "preprocess": {"size": pp.size, "mean": list(pp.mean), "std": list(pp.std),
                                    "interpolation": pp.interpolation, "resize_mode": pp.resize_mode},
                     "embed_dim": int(folded.text.text_projection.shape[1]),
                     "logit_scale": folded.logit_scale.item(), "logit_multiplier": folded.scale().item(),
                     "tokenizer": {"file": TOKENIZER_FILE, "type": "clip-bpe", "text_dtype": "int64"
                                   if backend is None or backend.name != "litert" else "int32"}})
    manifest.setdefault("graphs", {}).update(
        _write_graphs(graphs, out, backend=backend, variants=variants, exporter=exporter, opset=opset,
                      tolerance=tolerance, quantize=quantize, progress=progress))
    write_export_manifest(out, manifest)
    return manifest


def export_captioner(model, out: str | Path, *, name: str, weights: str | None = None, exporter: str = "dynamo",
                     opset: int | None = None, tolerance: float = DEFAULT_TOLERANCE, quantize: str | None = None,
                     progress=None, manifest: dict[str, Any] | None = None, backend=None,
                     variants: Sequence[str] = ()) -> dict[str, Any]:
    """Export a LightCap model's visual part and decoder step into `out` (ONNX, or `backend` packages) plus its
    vocab.json; update export.json. Formats with static shapes (`backend.dynamic_cache` False) get the
    fixed-size cache graphs (`captioner.cache` "static" in export.json), the others the growing cache."""
    import copy

    from edgevl.models.lightcap.model import VOCAB_FILE

    model = copy.deepcopy(model).eval().fold_backbone()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = manifest if manifest is not None else base_manifest(exporter, opset, tolerance)
    vocab = {"type": "word", "words": model.vocab.words, "concepts": model.concept_names}
    atomic_write_text(out / VOCAB_FILE, json.dumps(vocab))
    cfg = model.config
    static = backend is not None and not backend.dynamic_cache
    prefix_length = model.concepts.top_k + cfg.grid_tokens
    manifest["captioner"] = {
        "name": name, "weights": weights, "vocab_file": VOCAB_FILE, "image_size": cfg.image_size,
        "mean": list(cfg.mean), "std": list(cfg.std), "interpolation": cfg.interpolation,
        "bos_id": model.bos_id, "eos_id": model.eos_id, "max_caption_tokens": cfg.max_caption_tokens,
        "prefix_length": prefix_length, "layers": cfg.layers, "heads": cfg.heads,
        "head_dim": cfg.hidden // cfg.heads, "cache": "static" if static else "growing",
        "id_dtype": "int32" if backend is not None and backend.name in ("litert", "coreml") else "int64",
    }
    if static:
        manifest["captioner"]["cache_length"] = prefix_length + cfg.max_caption_tokens
    manifest.setdefault("graphs", {}).update(
        _write_graphs(captioner_graphs(model, static_cache=static), out, backend=backend, variants=variants,
                      exporter=exporter, opset=opset, tolerance=tolerance, quantize=quantize, progress=progress))
    write_export_manifest(out, manifest)
    return manifest
