"""Minimal LightCap training: teacher-forced cross-entropy of every ensemble head plus the concept loss.

Only the trainable parts learn (the grid backbone is frozen by the model); the concept extractor learns which
concept words a caption mentions (multi-label, words parsed from the reference captions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from edgevl.models.lightcap.concepts import concept_loss
from edgevl.models.lightcap.model import LightCap
from edgevl.models.lightcap.vocab import WordVocab, split_words


def caption_ids(vocab: WordVocab, captions: Sequence[str], length: int) -> torch.Tensor:
    """[B, length + 1] ids `BOS words EOS PAD..`; captions longer than `length - 1` words are cut (no EOS)."""
    out = torch.full((len(captions), length + 1), vocab.pad_id, dtype=torch.long)
    for row, text in enumerate(captions):
        ids = [vocab.bos_id, *vocab.encode(text)[: length - 1], vocab.eos_id][: length + 1]
        out[row, : len(ids)] = torch.tensor(ids)
    return out


def concept_targets(concept_names: Sequence[str], captions: Sequence[Sequence[str]]) -> torch.Tensor:
    """[B, V] 0/1: concept v is on for image b when every word of its name occurs in one of b's captions."""
    words = [set(w for text in texts for w in split_words(text)) for texts in captions]
    names = [set(split_words(n)) for n in concept_names]
    return torch.tensor([[float(name <= seen) for name in names] for seen in words])


def captioner_loss(model: LightCap, pixels: torch.Tensor, ids: torch.Tensor,
                   concepts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Mean next-token cross-entropy over the heads (PAD targets ignored), plus the concept BCE when given.

    `ids` [B, T + 1] from `caption_ids`: the model reads ids[:, :-1] and predicts ids[:, 1:].
    """
    logits = model(pixels, ids[:, :-1])  # [heads, B, T, V]
    target = ids[:, 1:].expand(logits.shape[0], -1, -1)
    ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), ignore_index=model.vocab.pad_id)
    out = {"caption": ce, "loss": ce}
    if concepts is not None:
        bce = concept_loss(model.concepts.concept_logits(model.grid_features(pixels)), concepts)
        out.update(concept=bce, loss=ce + bce)
    return out
