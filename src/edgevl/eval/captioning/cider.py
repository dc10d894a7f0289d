"""CIDEr-D exactly as coco-caption's `cider_scorer.py` computes it, plus a vectorised scorer for SCST rewards.

`cider_d` is the readable reference: document frequencies come from the evaluated set's references.
`CiderD` fixes the document frequencies once from a reference corpus (e.g. the training captions) and scores a
batch of sampled captions with numpy; with the evaluated set as corpus it gives the same numbers as `cider_d`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from edgevl.errors import DataError
from edgevl.eval.captioning.inputs import Hypotheses, References, pair_up
from edgevl.eval.captioning.ngrams import ngram_counts

Sentence = str | Sequence[Hashable]  # a tokenized caption: space-separated string or a token sequence


def cider_d(gts: References, res: Hypotheses, n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """CIDEr-D over tokenized captions: (mean over images, per-image scores in `gts` order), range 0..10."""
    _, refs, hyps = pair_up(gts, res)
    ref_counts = [[ngram_counts(r.split(), n) for r in image_refs] for image_refs in refs]
    doc_freq, num_images = document_frequencies(ref_counts)
    log_docs = math.log(num_images)
    per_image = []
    for hyp, image_ref_counts in zip(hyps, ref_counts):
        hyp_vec = _tfidf(ngram_counts(hyp.split(), n), doc_freq, log_docs, n)
        totals = [0.0] * n
        for counts in image_ref_counts:
            sims = _similarity(hyp_vec, _tfidf(counts, doc_freq, log_docs, n), sigma)
            totals = [t + s for t, s in zip(totals, sims)]
        per_image.append(sum(totals) / n / len(image_ref_counts) * 10.0)
    return sum(per_image) / len(per_image), per_image


def document_frequencies(ref_counts: Iterable[Iterable[dict[tuple, int]]]) -> tuple[dict[tuple, int], int]:
    """Per n-gram, the number of images whose reference set contains it; and the number of images."""
    doc_freq: dict[tuple, int] = {}
    num_images = 0
    for image_refs in ref_counts:
        num_images += 1
        for gram in {g for counts in image_refs for g in counts}:
            doc_freq[gram] = doc_freq.get(gram, 0) + 1
    return doc_freq, num_images


def _tfidf(
    counts: dict[tuple, int], doc_freq: dict[tuple, int], log_docs: float, n: int
) -> tuple[list[dict[tuple, float]], list[float], int]:
    """Per-order tf-idf vectors, their L2 norms, and the caption length counted as bigrams (coco quirk)."""
    vecs: list[dict[tuple, float]] = [{} for _ in range(n)]
    squares = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        order = len(gram) - 1
        value = float(tf) * (log_docs - math.log(max(1.0, doc_freq.get(gram, 0))))
        vecs[order][gram] = value
        squares[order] += value**2
        if order == 1:
            length += tf
    return vecs, [math.sqrt(s) for s in squares], length


def _similarity(hyp, ref, sigma: float) -> list[float]:
    """Per-order clipped cosine similarity times the Gaussian length penalty."""
    (hyp_vecs, hyp_norms, hyp_len), (ref_vecs, ref_norms, ref_len) = hyp, ref
    penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2))
    sims = []
    for hv, rv, hn, rn in zip(hyp_vecs, ref_vecs, hyp_norms, ref_norms):
        dot = sum(min(value, rv.get(gram, 0.0)) * rv.get(gram, 0.0) for gram, value in hv.items())
        if hn != 0 and rn != 0:
            dot /= hn * rn
        sims.append(dot * penalty)
    return sims


class CiderD:
    """CIDEr-D with document frequencies precomputed from a reference corpus, vectorised over a batch.

    `corpus` yields one reference set per image (tokenized strings or token sequences such as lists of ids).
    Calling the scorer with hypotheses and their reference sets returns one CIDEr-D score per hypothesis (the
    SCST reward). Words become integer ids and every n-gram one int64 key (base-`key_base` digits), so counting,
    document-frequency lookup and the clipped dot products all run in numpy.
    """

    def __init__(self, corpus: Iterable[Sequence[Sentence]], n: int = 4, sigma: float = 6.0) -> None:
        self.n, self.sigma = n, sigma
        self.key_base = _integer_root(2**63 - 1, n)  # word ids must stay below it so n-gram keys fit int64
        self._vocab: dict[Hashable, int] = {}
        sentences, images = [], []
        num_docs = 0
        for image_refs in corpus:
            for ref in image_refs:
                sentences.append(_words(ref))
                images.append(num_docs)
            num_docs += 1
        if num_docs == 0:
            raise DataError("CiderD needs a non-empty reference corpus to compute document frequencies")
        self.num_documents = num_docs
        self.log_docs = math.log(num_docs)
        sent, keys, _ = self._ngram_keys(*self._encode(sentences, self._vocab))
        image = np.asarray(images, dtype=np.int64)[sent]
        order = np.lexsort((keys, image))
        image, keys = image[order], keys[order]
        first_in_image = np.ones(len(keys), dtype=bool)
        first_in_image[1:] = (image[1:] != image[:-1]) | (keys[1:] != keys[:-1])
        corpus_keys, doc_freq = np.unique(keys[first_in_image], return_counts=True)
        # a sentinel above every possible key keeps searchsorted positions in range
        self._corpus_keys = np.append(corpus_keys, np.iinfo(np.int64).max)
        self._idf = np.append(self.log_docs - np.log(doc_freq.astype(np.float64)), self.log_docs)

    def __call__(self, hypotheses: Sequence[Sentence], references: Sequence[Sequence[Sentence]]) -> np.ndarray:
        """CIDEr-D of each hypothesis against its own reference set (float64 array, one per hypothesis)."""
        if len(hypotheses) != len(references):
            raise DataError(f"CiderD got {len(hypotheses)} hypotheses but {len(references)} reference sets")
        if not hypotheses:
            return np.zeros(0)
        hyp_ids, hyp_sentences = _dedupe(hypotheses)
        ref_ids, ref_sentences = _reference_table(references)
        new_words: dict[Hashable, int] = {}  # words outside the corpus get ids for this call only
        tab = self._tfidf(*self._encode(ref_sentences + hyp_sentences, new_words))
        num_refs = len(ref_sentences)
        dots = self._clipped_dots(hyp_ids, ref_ids, tab, num_refs)

        valid = ref_ids >= 0
        safe_ref = np.where(valid, ref_ids, 0)
        hyp_rows = hyp_ids + num_refs
        norms = tab.norms[hyp_rows][:, None, :] * tab.norms[safe_ref]
        sims = dots / np.where(norms != 0, norms, 1.0)
        delta = (tab.lengths[hyp_rows][:, None] - tab.lengths[safe_ref]).astype(np.float64)
        penalty = np.exp(-(delta**2) / (2 * self.sigma**2))
        per_ref = sims.sum(axis=2) / self.n * penalty * valid
        return per_ref.sum(axis=1) / valid.sum(axis=1) * 10.0

    def _encode(self, sentences: list[tuple], new_words: dict[Hashable, int]) -> tuple[np.ndarray, np.ndarray]:
        """Word ids (>= 1) of all sentences concatenated, and the sentence lengths. Unknown words are added to
        `new_words` (the vocabulary itself while the corpus is read, a per-call dict afterwards) with ids after
        every existing one."""
        vocab = self._vocab
        get, first_new = vocab.get, 1 if new_words is vocab else len(vocab) + 1
        ids = [get(w) or new_words.setdefault(w, first_new + len(new_words)) for words in sentences for w in words]
        if len(vocab) + len(new_words) >= self.key_base:
            raise DataError(f"CiderD supports at most {self.key_base - 1} distinct words for n={self.n}")
        lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
        return np.array(ids, dtype=np.int64), lengths

    def _ngram_keys(self, words: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sentence index, n-gram key, 0-based order) of every n-gram occurrence, orders 1..n."""
        sent = np.repeat(np.arange(len(lengths)), lengths)
        keys = words.copy()
        out_sent, out_keys, out_order = [], [], []
        for k in range(1, self.n + 1):
            if k > 1:  # extend every (k-1)-gram key by the next word; spans across sentences are masked below
                keys = keys[:-1] * self.key_base + words[k - 1 :]
            inside = sent[: len(keys)] == sent[k - 1 :]
            out_sent.append(sent[: len(keys)][inside])
            out_keys.append(keys[inside])
            out_order.append(np.full(int(inside.sum()), k - 1, dtype=np.int64))
        return np.concatenate(out_sent), np.concatenate(out_keys), np.concatenate(out_order)

    def _tfidf(self, words: np.ndarray, lengths: np.ndarray) -> _Table:
        """Sparse tf-idf entries sorted by (sentence, n-gram) with per-sentence norms and bigram lengths."""
        n, num_sentences = self.n, len(lengths)
        sent, keys, orders = self._ngram_keys(words, lengths)
        grams, gram_of = np.unique(keys, return_inverse=True)
        pair_keys, first, tf = np.unique(sent * len(grams) + gram_of, return_index=True, return_counts=True)
        rows, gram = pair_keys // max(len(grams), 1), pair_keys % max(len(grams), 1)
        pos = np.searchsorted(self._corpus_keys, grams)
        idf = np.where(self._corpus_keys[pos] == grams, self._idf[pos], self.log_docs)
        vals = tf * idf[gram]
        squares = np.bincount(rows * n + orders[first], weights=vals**2, minlength=num_sentences * n)
        norms = np.sqrt(squares).reshape(num_sentences, n)
        return _Table(rows, gram, len(grams), vals, orders[first], norms, np.maximum(lengths - 1, 0))

    def _clipped_dots(self, hyp_ids: np.ndarray, ref_ids: np.ndarray, tab: _Table, num_refs: int) -> np.ndarray:
        """Sum over shared n-grams of min(v_hyp, v_ref) * v_ref, per (hypothesis, reference slot, order)."""
        batch, width, n, num_grams = len(hyp_ids), ref_ids.shape[1], self.n, tab.num_grams
        is_ref = tab.rows < num_refs
        ref_keys = tab.rows[is_ref] * num_grams + tab.grams[is_ref]  # sorted, as the table is
        ref_vals = tab.vals[is_ref]
        if len(ref_keys) == 0:  # every reference is empty
            return np.zeros((batch, width, n))
        in_refs = np.zeros(num_grams, dtype=bool)
        in_refs[tab.grams[is_ref]] = True
        shared = ~is_ref & in_refs[tab.grams]  # hypothesis n-grams that some reference has
        h_rows, h_grams = tab.rows[shared] - num_refs, tab.grams[shared]
        h_vals, h_orders = tab.vals[shared], tab.orders[shared]
        # expand each unique hypothesis' entries to every batch position that uses it
        num_unique = int(hyp_ids.max()) + 1
        starts = np.searchsorted(h_rows, np.arange(num_unique))
        per_item = np.bincount(h_rows, minlength=num_unique)[hyp_ids]
        owner = np.repeat(np.arange(batch), per_item)
        entry = np.repeat(starts[hyp_ids] - (np.cumsum(per_item) - per_item), per_item) + np.arange(per_item.sum())

        slots = ref_ids[owner]  # [entries, width]
        keys = slots * num_grams + h_grams[entry][:, None]
        pos = np.minimum(np.searchsorted(ref_keys, keys), len(ref_keys) - 1)
        hit = (slots >= 0) & (ref_keys[pos] == keys)
        v_ref = np.where(hit, ref_vals[pos], 0.0)
        contrib = np.minimum(h_vals[entry][:, None], v_ref) * v_ref
        flat = (owner[:, None] * width + np.arange(width)[None, :]) * n + h_orders[entry][:, None]
        dots = np.bincount(flat.ravel(), weights=contrib.ravel(), minlength=batch * width * n)
        return dots.reshape(batch, width, n)


class _Table(NamedTuple):
    """Sparse tf-idf of several sentences: per entry the sentence (`rows`), n-gram index into the call's
    `num_grams` distinct n-grams, value and 0-based order; per sentence the per-order norms and bigram length."""

    rows: np.ndarray
    grams: np.ndarray
    num_grams: int
    vals: np.ndarray
    orders: np.ndarray
    norms: np.ndarray
    lengths: np.ndarray


def _integer_root(value: int, n: int) -> int:
    """Largest b with b**n <= value."""
    b = int(round(value ** (1.0 / n)))
    while b**n > value:
        b -= 1
    while (b + 1) ** n <= value:
        b += 1
    return b


def _reference_table(references: Sequence[Sequence[Sentence]]) -> tuple[np.ndarray, list[tuple]]:
    """Unique reference sentences and, per hypothesis, the ids of its references ([batch, max refs], -1 pad)."""
    index: dict[tuple, int] = {}
    # id() of a reference list already indexed -> (its row, the list kept alive so the id stays unique);
    # SCST passes the same list for the samples of one image
    done: dict[int, tuple[int, Sequence[Sentence]]] = {}
    width = max(len(refs) for refs in references)
    ids = np.full((len(references), width), -1, dtype=np.int64)
    for i, refs in enumerate(references):
        if id(refs) in done:
            ids[i] = ids[done[id(refs)][0]]
            continue
        if len(refs) == 0:
            raise DataError(f"CiderD: hypothesis {i} has an empty reference set")
        ids[i, : len(refs)] = [index.setdefault(_words(ref), len(index)) for ref in refs]
        done[id(refs)] = (i, refs)
    return ids, list(index)


def _words(sentence: Sentence) -> tuple:
    return tuple(sentence.split()) if isinstance(sentence, str) else tuple(sentence)


def _dedupe(sentences: Sequence[Sentence]) -> tuple[np.ndarray, list[tuple]]:
    index: dict[tuple, int] = {}
    ids = np.fromiter((index.setdefault(_words(s), len(index)) for s in sentences), dtype=np.int64)
    return ids, list(index)
