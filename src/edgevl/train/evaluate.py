"""Periodic evaluation on a held-out split: image↔text retrieval and, for labelled folders, zero-shot accuracy.

Metric names follow open_clip (`image_to_text_R@1`, `text_to_image_median_rank`, ...,
`zeroshot-val-top1/top5`). At most `max_samples` good samples are scored, one caption per image: the first
ones of a stream, evenly spaced ones of a map-style dataset (a class folder is sorted by class). Zero-shot
accuracy uses the folder reader's class names and templates and `edgevl.eval.zeroshot.zero_shot_metrics`, the
same as `edgevl eval`, so both report the same top-1 for a checkpoint (docs/eval.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from edgevl.eval.zeroshot import encode_images, zero_shot_metrics


def _take(dataset: Iterable, max_samples: int) -> list[Any]:
    if not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        n = len(dataset)
        picks = range(n) if n <= max_samples else (i * n // max_samples for i in range(max_samples))
        return [s for s in (dataset[i] for i in picks) if s is not None]
    samples = []
    for sample in dataset:
        if sample is not None:
            samples.append(sample)
            if len(samples) >= max_samples:
                break
    return samples


def _rank_metrics(similarity: torch.Tensor, prefix: str) -> dict[str, float]:
    """Ranks of the diagonal entry in each row of a square similarity matrix (1 = best; ties count against
    it, so a collapsed model with identical embeddings scores rank N, not 1)."""
    correct = similarity.diagonal().unsqueeze(1)
    ranks = (similarity >= correct).sum(dim=1).float()
    out = {f"{prefix}_mean_rank": ranks.mean().item(), f"{prefix}_median_rank": ranks.median().item()}
    for k in (1, 5, 10):
        out[f"{prefix}_R@{k}"] = (ranks <= k).float().mean().item()
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Iterable,
    tokenizer: Callable[[list[str]], torch.Tensor],
    device: torch.device,
    max_samples: int = 1000,
    batch_size: int = 64,
) -> dict[str, float]:
    """Retrieval metrics for captioned samples; zero-shot top-1/top-5 for a class folder (`dataset.zeroshot`)."""
    was_training = model.training
    model.eval()
    samples = _take(dataset, max_samples)
    chunks = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    metrics: dict[str, float] = {"num_samples": float(len(samples))}
    captions = [s.caption for s in samples]
    if samples and all(c is not None for c in captions):
        feats = torch.cat([encode_images(model, torch.stack([s.image for s in c]).to(device)) for c in chunks])
        text = torch.cat([
            F.normalize(model.encode_text(tokenizer([s.caption for s in c]).to(device)).float(), dim=-1)
            for c in chunks
        ])
        sim = feats @ text.T
        metrics.update(_rank_metrics(sim, "image_to_text"))
        metrics.update(_rank_metrics(sim.T, "text_to_image"))
    setup = getattr(dataset, "zeroshot", None)
    if samples and setup is not None and all(s.label is not None for s in samples):
        batches = ((torch.stack([s.image for s in c]), torch.tensor([s.label for s in c])) for c in chunks)
        scores = zero_shot_metrics(model, tokenizer, setup.names, setup.templates, batches, device=device)
        assert scores is not None  # there was at least one batch
        metrics["zeroshot-val-top1"] = scores["acc1"]
        metrics["zeroshot-val-top5"] = scores["acc5"]
    model.train(was_training)
    return metrics
