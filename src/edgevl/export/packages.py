"""Export graphs as ExecuTorch / LiteRT / OpenVINO / Core ML packages with parity checks, beside the ONNX path.

Every fp32 package that runs here is compared with PyTorch on random inputs at batch 1 and 5 (relative error
<= tolerance); a failing package is deleted and the export fails. Core ML packages get a structural check
instead (prediction needs macOS). Variants (int8, int8w, fp16) record their cosine to the fp32 package.
"""

from __future__ import annotations

import datetime
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevl.export.backends import Backend, convert_graph, example_inputs, inspect_coreml, load_graph, runtime_versions
from edgevl.export.graphs import Graph
from edgevl.export.parity import (
    DEFAULT_TOLERANCE,
    PARITY_BATCHES,
    TorchRun,
    check_parity,
    output_errors,
    row_cosines,
    worst_error,
)
from edgevl.export.runtime import ExportError
from edgevl.io import sha256_file

log = logging.getLogger(__name__)


def package_manifest(backend: Backend, tolerance: float) -> dict[str, Any]:
    """The format-independent head of export.json for a `backend` package."""
    from edgevl.version import __version__

    return {"format": backend.name, "edgevl_version": __version__, "torch_version": torch.__version__,
            "runtime_versions": runtime_versions(backend), "tolerance": tolerance, "batch_one": backend.batch_one,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def file_entry(files: Sequence[Path]) -> dict[str, Any]:
    """{file, sha256, data_files, bytes} of a package's main file and its side files (folders are summed)."""

    def size(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size

    def digest(path: Path) -> str | None:
        return None if path.is_dir() else sha256_file(path)

    return {"file": files[0].name, "sha256": digest(files[0]), "data_files": {f.name: digest(f) for f in files[1:]},
            "bytes": sum(size(f) for f in files)}


def remove(files: Sequence[Path]) -> None:
    """Delete package files and folders (a package that failed its check)."""
    for path in files:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def torch_runner(backend: Backend, path: Path, graph: Graph) -> TorchRun:
    """A package of `graph` as a function of torch inputs (for `check_parity`)."""
    run = load_graph(backend, path, batch_axes=graph.batch_axes)
    return lambda inputs: run([t.detach().cpu().numpy() for t in inputs])


@torch.no_grad()
def compare_variant(graph: Graph, reference: TorchRun, variant: TorchRun, batch: int = 8,
                    seed: int = 1) -> dict[str, float]:
    """Cosine (min, mean over rows) and max abs error of the first output, a variant vs its fp32 package."""
    inputs = example_inputs(graph, batch, seed)
    ref, act = reference(inputs)[0], variant(inputs)[0]
    cos = row_cosines(ref, act)
    return {"output": graph.output_names[0], "batch": batch, "cosine_min": float(np.min(cos)),
            "cosine_mean": float(np.mean(cos)), "max_abs_error": output_errors(ref, act)["max_abs_error"]}


def export_package_graphs(backend: Backend, graphs: Sequence[Graph], out: str | Path, *,
                          tolerance: float = DEFAULT_TOLERANCE, variants: Sequence[str] = (),
                          batches: Sequence[int] = PARITY_BATCHES, progress=None) -> dict[str, Any]:
    """Convert, check and (optionally) write variants of each graph into `out`; returns {graph name: record}."""
    say = progress or (lambda msg: log.info(msg))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, Any] = {}
    for graph in graphs:
        say(f"converting {graph.name} to {backend.title}")
        files = convert_graph(backend, graph, out)
        record: dict[str, Any] = {**file_entry(files), "batch_axes": graph.batch_axes}
        try:
            if backend.runs_here:
                fp32 = torch_runner(backend, files[0], graph)
                report = check_parity(graph, fp32, tolerance, batches, runtime=backend.title)
                record.update(parity=report, parity_worst=worst_error(report))
                say(f"{files[0].name}: parity max abs error {record['parity_worst']['max_abs_error']:.3g} "
                    f"(relative {record['parity_worst']['relative_error']:.3g}) at batches {', '.join(report)}")
            else:
                record["structure"] = inspect_coreml(files[0], graph)
                say(f"{files[0].name}: converted and structurally checked ({sum(record['structure']['ops'].values())}"
                    f" ops); prediction needs macOS, so no parity figures here")
        except ExportError:
            remove(files)
            raise
        for variant in variants:
            variant_files = convert_graph(backend, graph, out, variant)
            entry = file_entry(variant_files)
            if backend.runs_here:
                entry.update(compare_variant(graph, fp32, torch_runner(backend, variant_files[0], graph)))
                say(f"{variant_files[0].name}: cosine vs fp32 min {entry['cosine_min']:.5f}")
            else:
                entry["structure"] = inspect_coreml(variant_files[0], graph)
            record[variant] = entry
        records[graph.name] = record
    return records
