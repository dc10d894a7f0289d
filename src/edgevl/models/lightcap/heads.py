"""Ensemble of parallel token-prediction heads tied to the word embeddings; distributions averaged at inference."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PredictionHead(nn.Module):
    """BERT LM head transform (dense + GELU + LayerNorm) and a private output bias; the output matrix is the
    tied word-embedding table, applied by `EnsembleHead` to all heads at once."""

    def __init__(self, hidden: int, vocab_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))


class EnsembleHead(nn.Module):
    """`num_heads` parallel heads on the same position; `log_probs` averages their probabilities."""

    def __init__(self, hidden: int, vocab_size: int, num_heads: int = 3) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"the ensemble head needs at least one head, got {num_heads}")
        self.heads = nn.ModuleList(PredictionHead(hidden, vocab_size) for _ in range(num_heads))
        self.output: nn.Module | None = None  # an int8 copy of the tied table, set by `quantize`

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Every head's transform of [..., D] hidden states: [num_heads, ..., D]."""
        return torch.stack([head(x) for head in self.heads])

    def biases(self) -> torch.Tensor:
        """The heads' output biases, [num_heads, vocab]."""
        return torch.stack([head.bias for head in self.heads])

    def quantize(self, word_embeddings: torch.Tensor) -> None:
        """Use an int8 dynamic-quantized copy of the tied output table (inference). The small head transforms stay
        float: quantizing them changed far more greedy captions of the world captioner than the table did."""
        from edgevl.models.lightcap.quantize import quantize_linears

        table = nn.Linear(word_embeddings.shape[1], word_embeddings.shape[0], bias=False)
        table.weight = nn.Parameter(word_embeddings.detach().clone(), requires_grad=False)
        self.output = quantize_linears(nn.Sequential(table))[0]

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """Per-head logits [num_heads, ..., vocab] (the training loss / distillation targets use each head).

        One matrix product for all heads, so the (large) tied table is read once per step.
        """
        hidden = self.transform(x)
        logits = self.output(hidden) if self.output is not None else F.linear(hidden, word_embeddings)
        return logits + self.biases().view(len(self.heads), *([1] * (x.dim() - 1)), -1)

    def log_probs(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """log of the mean of the heads' softmax distributions: [..., vocab] (in log space, so a token far below
        float32's smallest probability still gets its finite log-prob)."""
        log_probs = F.log_softmax(self(x, word_embeddings), dim=-1)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # ONNX has no logaddexp
            return torch.logsumexp(log_probs, dim=0) - math.log(len(self.heads))
        total = log_probs[0]
        for head in log_probs[1:]:  # elementwise, faster than logsumexp over the (outer) head axis
            total = torch.logaddexp(total, head)
        return total - math.log(len(self.heads))
