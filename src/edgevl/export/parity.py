"""Compare a runtime's outputs with PyTorch: max abs error, error relative to the output magnitude, cosine."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from edgevl.export.graphs import Graph
from edgevl.export.runtime import ExportError

DEFAULT_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 5)


def output_errors(reference: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """{max_abs_error, relative_error}; relative = max abs error / max |reference|. Infinities (blocked tokens)
    must sit at the same places and are left out of the error."""
    if reference.shape != actual.shape:
        raise ExportError(f"output shape {actual.shape} differs from PyTorch's {reference.shape}")
    finite = np.isfinite(reference)
    if not np.array_equal(finite, np.isfinite(actual)) or not np.array_equal(reference[~finite], actual[~finite]):
        return {"max_abs_error": float("inf"), "relative_error": float("inf")}
    ref, act = reference[finite].astype(np.float64), actual[finite].astype(np.float64)
    if ref.size == 0:
        return {"max_abs_error": 0.0, "relative_error": 0.0}
    err = float(np.abs(ref - act).max())
    scale = float(np.abs(ref).max())
    return {"max_abs_error": err, "relative_error": err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))}


def row_cosines(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (first axis) of two equally shaped outputs, over finite entries."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    act = actual.reshape(actual.shape[0], -1).astype(np.float64)
    keep = np.isfinite(ref) & np.isfinite(act)
    ref, act = np.where(keep, ref, 0.0), np.where(keep, act, 0.0)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(act, axis=1)
    return np.where(norms > 0, (ref * act).sum(1) / np.maximum(norms, 1e-300), 1.0)


def run_session(sess, graph: Graph, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """Run an ORT session on torch inputs (fed by the graph's input names)."""
    feed = {name: t.detach().cpu().numpy() for name, t in zip(graph.input_names, inputs)}
    return sess.run(graph.output_names, feed)


TorchRun = Callable[[tuple[torch.Tensor, ...]], list[np.ndarray]]


def session_runner(sess, graph: Graph) -> TorchRun:
    """An ORT session as a function of torch inputs (what `check_parity` runs)."""
    return lambda inputs: run_session(sess, graph, inputs)


@torch.no_grad()
def check_parity(graph: Graph, run: TorchRun, tolerance: float = DEFAULT_TOLERANCE, batches=PARITY_BATCHES,
                 seed: int = 0, runtime: str = "ONNX") -> dict[str, dict[str, dict[str, float]]]:
    """Random inputs at each batch size (and the graph's real inputs, as batch "real") through PyTorch and `run`
    (a runtime): {batch: {output: errors}}.

    Raises ExportError naming the runtime, graph, batch and output when a relative error exceeds `tolerance`.
    """
    gen = torch.Generator().manual_seed(seed)
    report: dict[str, dict[str, dict[str, float]]] = {}
    cases = [(str(batch), graph.make_inputs(batch, gen)) for batch in batches]
    if graph.real_inputs is not None:
        cases.append(("real", graph.real_inputs))
    for batch, inputs in cases:
        expected = graph.module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = run(inputs)
        report[batch] = {}
        for name, ref, act in zip(graph.output_names, expected, actual):
            errors = output_errors(ref.numpy(), act)
            report[batch][name] = errors
            if not errors["relative_error"] <= tolerance:
                raise ExportError(
                    f"{runtime} parity check failed for {graph.name} output {name!r} at batch {batch}: max abs error "
                    f"{errors['max_abs_error']:.3g}, relative {errors['relative_error']:.3g} > tolerance {tolerance:g}"
                )
    return report


def worst_error(report: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """The largest max-abs and relative errors over all batches and outputs of a parity report."""
    rows = [e for outputs in report.values() for e in outputs.values()]
    return {key: max(r[key] for r in rows) for key in ("max_abs_error", "relative_error")}
