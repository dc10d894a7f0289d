"""`edgevl eval`: zero-shot classification and image↔text retrieval on any reader spec.

Results use clip_benchmark's JSON schema (`dataset, model, pretrained, task, metrics, language`) and metric
names, so they line up with published tables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from edgevl.data.readers import SkipLog, collate_samples, open_dataset
from edgevl.errors import ConfigError, NoUsableInputError
from edgevl.eval.retrieval import retrieval_metrics
from edgevl.eval.templates import get_templates, read_classnames
from edgevl.eval.zeroshot import build_zero_shot_classifier, classification_metrics
from edgevl.io import atomic_write_text

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


def _class_setup(dataset, root: Path, classnames: str | None, templates: str | None) -> tuple[list[str], list[str]]:
    """Class names and templates: explicit files, else clip_benchmark files in the dataset root, else defaults."""
    if classnames:
        names = read_classnames(classnames)
    elif (root / "classnames.txt").is_file():
        names = read_classnames(root / "classnames.txt")
    else:
        names = [c.replace("_", " ") for c in dataset.classes]
    if len(names) != len(dataset.classes):
        raise ConfigError(f"{len(names)} class names given for {len(dataset.classes)} class folders")
    if templates:
        tmpl = get_templates(templates)
    elif (root / "zeroshot_classification_templates.txt").is_file():
        tmpl = get_templates(str(root / "zeroshot_classification_templates.txt"))
    else:
        tmpl = get_templates("photo")
    return names, tmpl


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
    """acc1, acc5 and mean per-class recall on a class-folder dataset (`folder:` spec)."""
    dataset = open_dataset(spec, transform=preprocess, skip_log=skip_log)
    if not hasattr(dataset, "classes"):
        raise ConfigError(f"zero-shot classification needs a class-folder dataset (folder:...), got {spec!r}")
    names, tmpl = _class_setup(dataset, Path(dataset.root), classnames, templates)
    classifier = build_zero_shot_classifier(model, tokenizer, names, tmpl)
    logits, labels = [], []
    for batch in tqdm(_loader(dataset, batch_size, workers), desc="zero-shot", disable=not progress):
        if not batch:
            continue
        feats = F.normalize(model.encode_image(batch["image"]).float(), dim=-1)
        logits.append(feats @ classifier)
        labels.append(batch["label"])
    if not logits:
        raise NoUsableInputError(f"no readable images in {spec!r}")
    return classification_metrics(torch.cat(logits), torch.cat(labels))


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
    for batch in tqdm(_loader(dataset, batch_size, workers), desc="retrieval", disable=not progress):
        if not batch:
            continue
        offset = sum(f.shape[0] for f in image_feats)
        image_feats.append(F.normalize(model.encode_image(batch["image"]).float(), dim=-1))
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
    from edgevl.data.readers import parse_spec

    return "zeroshot_classification" if parse_spec(spec).kind == "folder" else "zeroshot_retrieval"


def write_results(records: list[dict], path: str | os.PathLike) -> None:
    """One record -> a JSON object (clip_benchmark's file format); several -> a JSON list. Atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(records[0] if len(records) == 1 else records, indent=2))
