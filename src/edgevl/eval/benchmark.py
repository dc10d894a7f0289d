"""`edgevl eval`: zero-shot classification and image↔text retrieval on any reader spec.

Results use clip_benchmark's JSON schema (`dataset, model, pretrained, task, metrics, language`) and metric
names, so they line up with published tables.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from edgevl.data.readers import SkipLog, collate_samples, open_dataset, parse_spec
from edgevl.errors import ConfigError, NoUsableInputError
from edgevl.eval.retrieval import retrieval_metrics
from edgevl.eval.zeroshot import encode_images, zero_shot_metrics
from edgevl.io import atomic_write_text
from edgevl.progress import track

TASKS = ("zeroshot_classification", "zeroshot_retrieval")


def result_record(dataset: str, model: str, pretrained: str | None, task: str, metrics: dict) -> dict[str, Any]:
    """One clip_benchmark-style result."""
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained or "",
        "task": task,
        "metrics": metrics,
        "language": "en",
    }


def _loader(dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_samples)


@torch.inference_mode()
def evaluate_zeroshot(
    model: nn.Module,
    preprocess: Callable,
    tokenizer: Callable,
    spec: str,
    *,
    classnames: str | None = None,
    templates: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    skip_log: SkipLog | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """acc1, acc5 and mean per-class recall on a class-folder dataset (`folder:` spec).

    `classnames` and `templates` are defaults for the spec's `?classnames=` / `?templates=` options; the folder
    reader resolves them (`edgevl.data.classnames`) exactly as training validation does. With `progress`, a bar
    and a line on stderr saying where the class names and templates came from.
    """
    if parse_spec(spec).kind != "folder":
        raise ConfigError(f"zero-shot classification needs a class-folder dataset (folder:...), got {spec!r}")
    dataset = open_dataset(spec, transform=preprocess, skip_log=skip_log, classnames=classnames, templates=templates)
    setup = dataset.zeroshot
    if progress:
        print(f"{spec}: class names from {setup.names_source}; templates: {setup.templates_source}", file=sys.stderr)
    loader = track(_loader(dataset, batch_size, workers), desc="zero-shot", unit="batch", enabled=progress)
    batches = ((batch["image"], batch["label"]) for batch in loader if batch)
    metrics = zero_shot_metrics(model, tokenizer, setup.names, setup.templates, batches)
    if metrics is None:
        raise NoUsableInputError(f"no readable images in {spec!r}")
    return metrics


@torch.inference_mode()
def evaluate_retrieval(
    model: nn.Module,
    preprocess: Callable,
    tokenizer: Callable,
    spec: str,
    *,
    batch_size: int = 64,
    workers: int = 0,
    ks: tuple[int, ...] = (1, 5, 10),
    skip_log: SkipLog | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Recall@K both ways on any captions dataset, using every caption of every image."""
    dataset = open_dataset(spec, transform=preprocess, caption="all", skip_log=skip_log)
    image_feats, text_feats, text_to_image = [], [], []
    for batch in track(_loader(dataset, batch_size, workers), desc="retrieval", unit="batch", enabled=progress):
        if not batch:
            continue
        offset = sum(f.shape[0] for f in image_feats)
        image_feats.append(encode_images(model, batch["image"]))
        texts = []
        for i, caps in enumerate(batch["captions"]):
            texts.extend(caps)
            text_to_image.extend([offset + i] * len(caps))
        if texts:
            text_feats.append(F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1))
    if not image_feats or not text_feats:
        raise NoUsableInputError(f"no readable image-caption pairs in {spec!r}")
    return retrieval_metrics(torch.cat(image_feats), torch.cat(text_feats), text_to_image, ks)


def guess_task(spec: str) -> str:
    """Class folders are classification tasks; everything else (captions) is retrieval."""
    return "zeroshot_classification" if parse_spec(spec).kind == "folder" else "zeroshot_retrieval"


def write_results(records: list[dict], path: str | os.PathLike) -> None:
    """One record -> a JSON object (clip_benchmark's file format); several -> a JSON list. Atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(records[0] if len(records) == 1 else records, indent=2))
