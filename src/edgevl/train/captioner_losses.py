"""LightCap training losses: caption cross-entropy, TinyBERT-style distillation terms and SCST rewards.

Shapes: caption logits are [heads, B, T, V]; hidden states [B, L, D] over the whole [prefix | caption] sequence;
`mask` [B, T] is True on real (non-PAD) caption targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edgevl.errors import ConfigError
from edgevl.models.lightcap.fusion import FusionLayer, seq2seq_mask


def caption_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over heads and real caption targets (every head learns the captions)."""
    heads = logits.shape[0]
    per_token = F.cross_entropy(logits.flatten(0, 2), targets.expand(heads, -1, -1).flatten(), reduction="none")
    weights = mask.expand(heads, -1, -1).flatten().to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1)


def softened_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """[H, ..., V] per-head logits -> log of the heads' mean softmax(logits / T): the ensemble's soft target."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return torch.logsumexp(logp, dim=0) - math.log(logits.shape[0])


def kd_logits(student: torch.Tensor, teacher_log_probs: torch.Tensor, mask: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """T² · KL(teacher_T ‖ student_T) per student head, mean over heads and real caption tokens.

    `student` [H, B, T, V] logits; `teacher_log_probs` [B, T, V], already softened (`softened_log_probs`).
    """
    if temperature <= 0:
        raise ConfigError(f"--kd-temperature must be positive, got {temperature}")
    s_logp = F.log_softmax(student.float() / temperature, dim=-1)
    per_token = (teacher_log_probs.exp() * (teacher_log_probs - s_logp)).sum(-1)  # [H, B, T]
    weights = mask.to(per_token.dtype).expand_as(per_token)
    return per_token.mul(weights).sum() / weights.sum().clamp_min(1) * temperature**2


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """TinyBERT's uniform mapping of hidden-state indices: student state i ↔ teacher state i·L_t/L_s.

    State 0 is the embedding output (input of layer 1), state L the last layer's output.
    """
    if teacher_layers < student_layers:
        raise ConfigError(f"the teacher has {teacher_layers} layers, fewer than the student's {student_layers}")
    return [(i, i * teacher_layers // student_layers) for i in range(student_layers + 1)]


def kd_hidden(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], projection: torch.nn.Module,
              pairs: Sequence[tuple[int, int]], prefix: tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
    """Mean over `pairs` of MSE(projection(student caption states), teacher caption states) on real tokens.

    `prefix` = (student, teacher) prefix lengths; only caption positions are compared, since the prefixes may
    differ in length (different grids or concept counts).
    """
    weights = mask.unsqueeze(-1).float()
    total = 0.0
    for s, t in pairs:
        s_cap = projection(student[s][:, prefix[0]:])
        t_cap = teacher[t][:, prefix[1]:].float()
        total = total + ((s_cap - t_cap) ** 2 * weights).sum() / (weights.sum() * t_cap.shape[-1]).clamp_min(1)
    return total / len(pairs)


def attention_maps(layer: FusionLayer, x: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """Head-averaged attention probabilities [B, T, L] of the caption queries of `layer` on its input x [B, L, D]."""
    attn = layer.attention
    b, n, _ = x.shape
    q = attn.query(x[:, prefix_len:]).view(b, n - prefix_len, attn.heads, attn.head_dim).transpose(1, 2)
    k = attn.key(x).view(b, n, attn.heads, attn.head_dim).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    allowed = seq2seq_mask(prefix_len, n - prefix_len, x.device)[prefix_len:]
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1).mean(1)


def kd_attention(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor],
                 mask: torch.Tensor) -> torch.Tensor:
    """Mean MSE between paired attention maps [B, T, L] over the rows of real caption tokens."""
    weights = mask.unsqueeze(-1).float()
    total = 0.0
    for s, t in zip(student_maps, teacher_maps):
        if s.shape != t.shape:
            raise ConfigError(f"attention distillation needs equal sequence lengths; student maps {tuple(s.shape)}, "
                              f"teacher maps {tuple(t.shape)} (give both the same image size and concept top-k)")
        total = total + ((s - t.float()) ** 2 * weights).sum() / (weights.sum() * s.shape[-1]).clamp_min(1)
    return total / len(student_maps)


def mean_of_others_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """[B, n] rewards of n samples per image -> per-sample baseline: the mean reward of the other n-1 samples."""
    n = rewards.shape[-1]
    if n < 2:
        raise ConfigError("the mean-of-others SCST baseline needs at least 2 samples per image")
    return (rewards.sum(-1, keepdim=True) - rewards) / (n - 1)


def scst_loss(log_probs: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Self-critical policy gradient: -mean((r - b) · Σ_t log p(w_t)) with the mean-of-others baseline b.

    `log_probs` [B·n, T] of the sampled tokens (EOS included), `mask` [B·n, T], `rewards` [B, n].
    """
    advantage = (rewards - mean_of_others_baseline(rewards)).reshape(-1).to(log_probs.dtype)
    return -(advantage * (log_probs * mask).sum(-1)).mean()


def cider_rewards(scorer, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """CIDEr-D of each hypothesis, PTB-tokenized here, against its already tokenized references, with the
    scorer's fixed (training-set) document frequencies."""
    from edgevl.eval.captioning import ptb_tokenize

    return scorer([ptb_tokenize(h) for h in hypotheses], references)
