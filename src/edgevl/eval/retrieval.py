"""Image↔text retrieval recall@K with several captions per image (clip_benchmark metric names)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from edgevl.errors import ConfigError


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K both ways.

    `text_to_image[t]` is the index of the image caption `t` describes. Text→image ("image_retrieval"): a
    caption scores a hit when its image is among the K most similar images. Image→text ("text_retrieval"): an
    image scores a hit when any of its captions is among its K most similar captions.
    """
    t2i = torch.as_tensor(text_to_image, dtype=torch.long)
    n_img, n_txt = image_features.shape[0], text_features.shape[0]
    if t2i.numel() != n_txt:
        raise ConfigError(f"text_to_image has {t2i.numel()} entries for {n_txt} texts")
    if n_txt and (t2i.min() < 0 or t2i.max() >= n_img):
        raise ConfigError("text_to_image refers to an image index out of range")
    sim = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    positive = torch.zeros(n_img, n_txt, dtype=torch.bool)
    positive[t2i, torch.arange(n_txt)] = True
    metrics: dict[str, float] = {}
    for k in ks:
        top_images = sim.T.topk(min(k, n_img), dim=1).indices  # [n_txt, k]
        metrics[f"image_retrieval_recall@{k}"] = (top_images == t2i[:, None]).any(dim=1).float().mean().item()
        top_texts = sim.topk(min(k, n_txt), dim=1).indices  # [n_img, k]
        hit = positive.gather(1, top_texts).any(dim=1)
        has_caption = positive.any(dim=1)
        metrics[f"text_retrieval_recall@{k}"] = hit[has_caption].float().mean().item()
    return metrics
