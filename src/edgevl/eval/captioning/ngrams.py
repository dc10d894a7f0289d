"""n-gram counting shared by BLEU and CIDEr-D (same order of n-grams as coco-caption's `precook`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import chain


def ngram_counts(words: Sequence[Hashable], n: int = 4) -> Counter[tuple]:
    """Raw counts of every 1..n-gram of `words` (a list or tuple), unigrams first, each order left to right."""
    return Counter(chain.from_iterable(zip(*(words[i:] for i in range(k))) for k in range(1, n + 1)))
