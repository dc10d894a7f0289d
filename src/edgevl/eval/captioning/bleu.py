"""Corpus BLEU-1..4 with the exact conventions of coco-caption's `bleu_scorer.py`.

Effective reference length is the "closest" one (ties go to the shorter reference); the only smoothing is the
constants TINY (numerator) and SMALL (denominator); the brevity penalty applies when hypotheses are shorter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgevl.eval.captioning.inputs import Hypotheses, References, pair_up
from edgevl.eval.captioning.ngrams import ngram_counts

TINY = 1e-15
SMALL = 1e-9


def bleu(gts: References, res: Hypotheses, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """BLEU-1..n over tokenized captions: (corpus scores, per-image scores per order, in `gts` order)."""
    _, refs, hyps = pair_up(gts, res)
    total_correct, total_guess = [0] * n, [0] * n
    total_hyp_len, total_ref_len = 0, 0
    per_image: list[list[float]] = [[] for _ in range(n)]
    for hyp, hyp_refs in zip(hyps, refs):
        hyp_len, ref_len, correct, guess = _sentence_stats(hyp, hyp_refs, n)
        total_hyp_len += hyp_len
        total_ref_len += ref_len
        for k in range(n):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
        for k, score in enumerate(_bleu_from_stats(correct, guess, hyp_len, ref_len)):
            per_image[k].append(score)
    corpus = _bleu_from_stats(total_correct, total_guess, total_hyp_len, total_ref_len)
    return corpus, per_image


def _sentence_stats(hyp: str, refs: Sequence[str], n: int) -> tuple[int, int, list[int], list[int]]:
    """Hypothesis length, closest reference length, clipped n-gram matches and n-gram totals per order."""
    ref_max_counts: dict[tuple, int] = {}
    ref_lens = []
    for ref in refs:
        words = ref.split()
        ref_lens.append(len(words))
        for gram, count in ngram_counts(words, n).items():
            ref_max_counts[gram] = max(ref_max_counts.get(gram, 0), count)
    words = hyp.split()
    hyp_len = len(words)
    closest_ref_len = min((abs(length - hyp_len), length) for length in ref_lens)[1]
    correct = [0] * n
    for gram, count in ngram_counts(words, n).items():
        correct[len(gram) - 1] += min(ref_max_counts.get(gram, 0), count)
    guess = [max(0, hyp_len - k + 1) for k in range(1, n + 1)]
    return hyp_len, closest_ref_len, correct, guess


def _bleu_from_stats(correct: list[int], guess: list[int], hyp_len: int, ref_len: int) -> list[float]:
    scores = []
    product = 1.0
    for k in range(len(correct)):
        product *= (float(correct[k]) + TINY) / (float(guess[k]) + SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + TINY) / (ref_len + SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores
