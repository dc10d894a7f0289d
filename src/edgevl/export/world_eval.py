"""Zero-shot accuracy of a PyTorch CLIP and its ONNX exports on the same freshly generated world test images.

Each world task gets a class-folder copy of the same `n` test samples in a temporary directory; the PyTorch
model and every ONNX precision are scored by `edgevl.eval.benchmark.evaluate_zeroshot` on identical inputs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from edgevl.export.runners import OnnxCLIP


def compare_world_accuracy(model: torch.nn.Module, export_dir: str | Path, *, model_name: str, n: int = 200,
                           split: str = "test", seed: int = 0, task_names: Sequence[str] | None = None,
                           precisions: Sequence[str] = ("fp32", "int8"), progress=None) -> dict[str, Any]:
    """{task: {"torch": acc1, "<precision>": acc1, "delta_<precision>": acc1 - torch acc1}} plus the setup."""
    from edgevl.data.transforms import ImageTransform
    from edgevl.data.world import make, tasks
    from edgevl.eval.benchmark import evaluate_zeroshot
    from edgevl.models.factory import preprocess_cfg_for, reparameterize
    from edgevl.tokenizer import get_tokenizer

    folded = reparameterize(model)
    preprocess = ImageTransform(preprocess_cfg_for(model))
    tokenizer = get_tokenizer(context_length=model.context_length)
    runners = {p: OnnxCLIP(export_dir, p) for p in precisions}
    results: dict[str, Any] = {"split": split, "seed": seed, "n": n, "model": model_name, "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="edgevl-world-") as tmp:
        for name in task_names or list(tasks()):
            root = Path(tmp) / name
            make(root, n, split=split, seed=seed, fmt="folder", task=name)
            spec = f"folder:{root}"
            row = {"torch": evaluate_zeroshot(folded, preprocess, tokenizer, spec)["acc1"]}
            for precision, runner in runners.items():
                row[precision] = evaluate_zeroshot(runner, preprocess, tokenizer, spec)["acc1"]
                row[f"delta_{precision}"] = row[precision] - row["torch"]
            results["tasks"][name] = row
            if progress:
                progress(f"world {name}: " + ", ".join(f"{k} {v:+.4f}" if k.startswith("delta") else f"{k} {v:.4f}"
                                                       for k, v in row.items()))
    return results
