"""Periodic evaluation on a held-out split: image↔text retrieval and, for labelled folders, zero-shot accuracy.

Metric names follow open_clip (`image_to_text_R@1`, `text_to_image_median_rank`, ...,
`zeroshot-val-top1/top5`). Only the first `max_samples` good samples are scored, one caption per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ZEROSHOT_TEMPLATE = "a photo of a {}."


def _take(dataset: Iterable, max_samples: int) -> list[Any]:
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
    """Retrieval metrics for captioned samples and zero-shot top-1/top-5 when the dataset has `classes`."""
    was_training = model.training
    model.eval()
    samples = _take(dataset, max_samples)
    images = [s.image for s in samples]
    feats = torch.cat([
        model.encode_image(torch.stack(images[i : i + batch_size]).to(device), normalize=True).float()
        for i in range(0, len(images), batch_size)
    ]) if images else torch.empty(0)
    metrics: dict[str, float] = {"num_samples": float(len(samples))}
    captions = [s.caption for s in samples]
    if samples and all(c is not None for c in captions):
        text = torch.cat([
            model.encode_text(tokenizer(captions[i : i + batch_size]).to(device), normalize=True).float()
            for i in range(0, len(captions), batch_size)
        ])
        sim = feats @ text.T
        metrics.update(_rank_metrics(sim, "image_to_text"))
        metrics.update(_rank_metrics(sim.T, "text_to_image"))
    classes = getattr(dataset, "classes", None)
    if samples and classes and all(s.label is not None for s in samples):
        prompts = [ZEROSHOT_TEMPLATE.format(c.replace("_", " ")) for c in classes]
        classifier = F.normalize(model.encode_text(tokenizer(prompts).to(device)).float(), dim=-1)
        top = (feats @ classifier.T).topk(min(5, len(classes)), dim=1).indices
        labels = torch.tensor([s.label for s in samples], device=top.device).unsqueeze(1)
        metrics["zeroshot-val-top1"] = (top[:, :1] == labels).any(dim=1).float().mean().item()
        metrics["zeroshot-val-top5"] = (top == labels).any(dim=1).float().mean().item()
    model.train(was_training)
    return metrics
