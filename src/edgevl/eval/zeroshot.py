"""Zero-shot classification: class-name × template classifiers, top-k prediction and the usual metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edgevl.errors import ConfigError

Template = str | Callable[[str], str]


def _fill(template: Template, classname: str) -> str:
    return template(classname) if callable(template) else template.format(classname)


@torch.inference_mode()
def build_zero_shot_classifier(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[Template],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Class embeddings as a [embed_dim, num_classes] matrix.

    Every template is filled with every class name and encoded; the normalized embeddings of one class are
    averaged over templates and re-normalized, so `image_features @ classifier` gives cosine similarities.
    """
    if not classnames:
        raise ConfigError("zero-shot classification needs at least one class name")
    if not templates:
        raise ConfigError("zero-shot classification needs at least one template")
    texts = [_fill(t, c) for c in classnames for t in templates]
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="class embeddings"):
        ids = tokenizer(texts[start : start + batch_size]).to(device)
        chunks.append(F.normalize(model.encode_text(ids).float(), dim=-1))
    per_text = torch.cat(chunks).view(len(classnames), len(templates), -1)
    return F.normalize(per_text.mean(dim=1), dim=-1).T.contiguous()


def encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalized float32 image embeddings, the features every zero-shot and retrieval score here uses."""
    return F.normalize(model.encode_image(images).float(), dim=-1)


@torch.inference_mode()
def zero_shot_metrics(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[Template],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: str | torch.device = "cpu",
) -> dict[str, float] | None:
    """Build the classifier and score every (images, labels) batch: `classification_metrics`, or None when
    there was no batch. `edgevl eval` and training validation both score through here."""
    classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates, device=device)
    logits, labels = [], []
    for images, target in batches:
        logits.append((encode_images(model, images.to(device)) @ classifier).cpu())
        labels.append(target.cpu())
    if not logits:
        return None
    return classification_metrics(torch.cat(logits), torch.cat(labels))


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose target is among the k highest logits, for each k (k capped at #classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == target[:, None]
    return {k: hits[:, : min(k, kmax)].any(dim=1).float().mean().item() for k in ks}


def mean_per_class_recall(logits: torch.Tensor, target: torch.Tensor, num_classes: int | None = None) -> float:
    """Average over classes present in `target` of the fraction of their samples predicted correctly."""
    num_classes = num_classes or logits.shape[1]
    pred = logits.argmax(dim=1)
    recalls = []
    for c in range(num_classes):
        mask = target == c
        if mask.any():
            recalls.append((pred[mask] == c).float().mean().item())
    return sum(recalls) / len(recalls) if recalls else 0.0


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """clip_benchmark's metric names: `acc1`, `acc5`, `mean_per_class_recall`."""
    acc = topk_accuracy(logits, target, (1, 5))
    return {"acc1": acc[1], "acc5": acc[5], "mean_per_class_recall": mean_per_class_recall(logits, target)}
