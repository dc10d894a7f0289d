"""Cross-modal modulator: concept word embeddings -> SE-style channel attention multiplied into the grid."""

from __future__ import annotations

import torch
from torch import nn

from edgevl.errors import ConfigError

COMBINE_MODES = ("mean_attention", "mean_embedding")


class CrossModalModulator(nn.Module):
    """a_k = sigmoid(W2 ReLU(W1 e_k)) per concept (312 -> 39 -> C); the K attentions are merged and scale V.

    How the paper merges the K attentions is not known; `combine` picks averaging the attentions (default) or
    averaging the embeddings first (cheaper). Both keep the number of visual tokens.
    """

    def __init__(self, embed_dim: int, channels: int, reduction: int = 8, combine: str = "mean_attention") -> None:
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ConfigError(f"unknown modulator combine mode {combine!r}; choose from {COMBINE_MODES}")
        self.combine = combine
        self.fc1 = nn.Linear(embed_dim, max(1, embed_dim // reduction))
        self.fc2 = nn.Linear(max(1, embed_dim // reduction), channels)
        self.relu = nn.ReLU(inplace=True)

    def attention(self, concept_embeddings: torch.Tensor) -> torch.Tensor:
        """[B, K, D] concept embeddings -> [B, C] channel attention in (0, 1)."""
        if self.combine == "mean_embedding":
            concept_embeddings = concept_embeddings.mean(dim=1, keepdim=True)
        return torch.sigmoid(self.fc2(self.relu(self.fc1(concept_embeddings)))).mean(dim=1)

    def forward(self, grid: torch.Tensor, concept_embeddings: torch.Tensor) -> torch.Tensor:
        return grid * self.attention(concept_embeddings)[:, :, None, None]
