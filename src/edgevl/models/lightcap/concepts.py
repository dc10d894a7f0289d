"""Visual concept extractor: align grid regions with precomputed CLIP text embeddings and keep the top-K words.

There is no detector here, so the regions are the grid cells plus the whole-image mean. The alignment MLP
(C -> 1024 -> 1024, the paper's two linear blocks) maps them into the CLIP joint space; concept scores are the best
region-concept cosine similarity. No text encoder runs at inference: the concept embeddings are a stored buffer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.errors import ConfigError


class Concepts(NamedTuple):
    """The top-K concepts of each image: vocabulary indices [B, K] and their cosine scores [B, K]."""

    indices: torch.Tensor
    scores: torch.Tensor


def grid_regions(grid: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] grid -> [B, H*W + 1, C] region features (every cell, then the global mean)."""
    cells = grid.flatten(2).transpose(1, 2)
    return torch.cat([cells, cells.mean(dim=1, keepdim=True)], dim=1)


class ConceptExtractor(nn.Module):
    """Region-to-concept retrieval over a fixed vocabulary of `num_concepts` CLIP text embeddings."""

    def __init__(self, in_channels: int, num_concepts: int, joint_dim: int = 1024, hidden_dim: int = 1024,
                 top_k: int = 20) -> None:
        super().__init__()
        if num_concepts < 1:
            raise ConfigError("the concept vocabulary is empty; LightCap needs at least one concept word")
        if top_k < 1:
            raise ConfigError(f"concept top_k must be positive, got {top_k}")
        self.align = nn.Sequential(nn.Linear(in_channels, hidden_dim), nn.ReLU(inplace=True),
                                   nn.Linear(hidden_dim, joint_dim))
        self.register_buffer("text_embeddings", F.normalize(torch.randn(num_concepts, joint_dim), dim=-1))
        self.logit_scale = nn.Parameter(torch.tensor(2.302585))  # log(10), learned in concept training
        self.top_k = min(top_k, num_concepts)

    @property
    def num_concepts(self) -> int:
        return self.text_embeddings.shape[0]

    def set_text_embeddings(self, embeddings: torch.Tensor) -> None:
        """Install the precomputed CLIP text embeddings [num_concepts, joint_dim] (L2-normalized here)."""
        if tuple(embeddings.shape) != tuple(self.text_embeddings.shape):
            raise ConfigError(f"concept embeddings must have shape {tuple(self.text_embeddings.shape)}, "
                              f"got {tuple(embeddings.shape)}")
        self.text_embeddings.copy_(F.normalize(embeddings.float(), dim=-1))

    def similarities(self, grid: torch.Tensor) -> torch.Tensor:
        """Best region-concept cosine similarity per concept: [B, num_concepts]."""
        regions = F.normalize(self.align(grid_regions(grid)), dim=-1)
        return (regions @ self.text_embeddings.t()).amax(dim=1)

    def concept_logits(self, grid: torch.Tensor) -> torch.Tensor:
        """Scaled similarities, the logits of a multi-label concept loss (words parsed from captions)."""
        return self.similarities(grid) * self.logit_scale.exp()

    def forward(self, grid: torch.Tensor) -> Concepts:
        scores, indices = self.similarities(grid).topk(self.top_k, dim=-1)
        return Concepts(indices, scores)


def concept_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label binary cross-entropy between concept logits [B, V] and 0/1 labels [B, V]."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
