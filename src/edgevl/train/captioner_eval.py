"""A captioner's validation scores: CIDEr-D and BLEU-4 against the references, and beside them the share of
captions that name what the image shows (class, colour, shape), so a CIDEr earned by fluent templated captions
cannot hide captions about the wrong object.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgevl.models.lightcap.model import LightCap
from edgevl.train.captioner_data import CaptionData, caption_words


@torch.no_grad()
def decode_cached(model: LightCap, grids: torch.Tensor, beam: int = 1, max_words: int = 20,
                  batch_size: int = 64) -> list[str]:
    """Captions of cached grids: greedy (beam 1) or beam search, at most `max_words` tokens."""
    from edgevl.models.lightcap.decoding import beam_search, greedy_decode

    was_training = model.training
    model.eval()
    max_new = min(max_words, model.config.max_caption_tokens)
    texts: list[str] = []
    for i in range(0, len(grids), batch_size):
        grid = grids[i:i + batch_size]
        state = model.start_grid(grid)
        hyps = (greedy_decode(model, state, len(grid), max_new) if beam == 1
                else beam_search(model, state, len(grid), beam, max_new))
        texts += [model.vocab.decode(h.tokens) for h in hyps]
    model.train(was_training)
    return texts


def names(text: str, phrase: str) -> bool:
    """Whether `text` contains `phrase` as whole words (case and punctuation ignored): 'a red star.' names
    'red star' and 'star', not 'tar'."""
    return f" {' '.join(caption_words(phrase))} " in f" {' '.join(caption_words(text))} "


def label_accuracy(texts: Sequence[str], labels: Sequence[dict[str, str]]) -> dict[str, float]:
    """`<kind>_accuracy` per label kind: the share of the images with that label whose caption names it."""
    kinds = sorted({kind for named in labels for kind in named})
    scores = {}
    for kind in kinds:
        hits = [names(text, named[kind]) for text, named in zip(texts, labels) if kind in named]
        scores[f"{kind}_accuracy"] = sum(hits) / len(hits)
    return scores


def caption_scores(model: LightCap, data: CaptionData, beam: int = 1, max_words: int = 20) -> dict[str, float]:
    """CIDEr-D and BLEU-4 (coco-caption definitions, PTB-tokenized) of the model's captions on the images of
    `data` with references, and `label_accuracy` on those with labels."""
    from edgevl.eval.captioning import evaluate_captions

    texts = decode_cached(model, data.grids, beam, max_words)
    scores: dict[str, float] = {}
    rows = [i for i, r in enumerate(data.references) if r]
    if rows:
        refs = {f"{i}:{data.keys[i]}": data.references[i] for i in rows}
        hyps = {f"{i}:{data.keys[i]}": texts[i] for i in rows}
        found = evaluate_captions(refs, hyps, use_meteor=False)
        scores = {"CIDEr": found["CIDEr"], "Bleu_4": found["Bleu_4"]}
    if data.labels:
        scores.update(label_accuracy(texts, data.labels))
    return scores
