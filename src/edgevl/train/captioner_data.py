"""Caption training data: reference captions from any reader spec, frozen-backbone grid cache, token targets.

The backbone of a LightCap is frozen and training uses no augmentation, so every image's grid features are
computed once and kept in memory; a training step then runs only the trainable parts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edgevl.data.readers.base import Sample
from edgevl.errors import DataError
from edgevl.models.lightcap.vocab import WordVocab, split_words

# words never used as concepts: function words, numbers, punctuation
STOPWORDS = frozenset(
    "a an the of on in at to and or with is are there it its this that some one two three four five of by for "
    "from as into near next left right above below top bottom center corner image picture photo drawing".split()
)


@dataclass
class CaptionData:
    """Images (as frozen-backbone grids [N, C, H, W]) with their reference captions and keys."""

    keys: list[str]
    grids: torch.Tensor
    references: list[list[str]]

    def __len__(self) -> int:
        return len(self.keys)


def reference_captions(sample: Sample) -> list[str]:
    """All reference captions of a sample: the `captions` list of a world `.json` member, else the reader's
    captions; a caption that is a JSON list of strings (the `captions` column of a world table) is expanded."""
    found = sample.meta.get("captions") or sample.captions or ([sample.caption] if sample.caption else [])
    out: list[str] = []
    for text in found:
        if isinstance(text, str) and text.lstrip().startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                items = None
            if isinstance(items, list) and all(isinstance(t, str) for t in items):
                out += [t for t in items if t.strip()]
                continue
        if isinstance(text, str) and text.strip():
            out.append(text.strip())
    return out


def load_caption_data(spec: str, model: torch.nn.Module, *, limit: int | None = None, batch_size: int = 64,
                      progress: bool = False) -> CaptionData:
    """Read up to `limit` samples of a reader spec, preprocess them for `model` and cache its backbone grids."""
    from tqdm import tqdm

    from edgevl.data.readers import open_dataset
    from edgevl.data.transforms import ImageTransform

    dataset = open_dataset(spec, transform=ImageTransform(model.config.preprocess), caption="all")
    keys: list[str] = []
    refs: list[list[str]] = []
    grids: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            grids.append(model.grid_features(torch.stack(pending)).float())
            pending.clear()

    bar = tqdm(desc=f"cache {spec}", unit="img", disable=not progress, total=limit)
    for sample in dataset:
        if sample is None:
            continue
        captions = reference_captions(sample)
        if not captions:
            continue
        keys.append(sample.key)
        refs.append(captions)
        pending.append(sample.image)
        bar.update(1)
        if len(pending) == batch_size:
            flush()
        if limit is not None and len(keys) >= limit:
            break
    flush()
    bar.close()
    if not keys:
        raise DataError(f"no image with a caption in {spec!r}")
    return CaptionData(keys, torch.cat(grids), refs)


def concept_vocabulary(captions: Sequence[str], size: int) -> list[str]:
    """The `size` most frequent content words of the captions (the concept vocabulary when none is given)."""
    counts = Counter(w for text in captions for w in split_words(text) if w.isalpha() and w not in STOPWORDS)
    words = sorted(counts, key=lambda w: (-counts[w], w))[:size]
    if not words:
        raise DataError("the training captions contain no content word to use as a concept")
    return words


def caption_ids(vocab: WordVocab, captions: Sequence[str], length: int) -> torch.Tensor:
    """[B, length + 1] ids `BOS words EOS PAD..`; captions longer than `length - 1` words are cut before EOS.

    The model reads ids[:, :-1] (at most `length` = max_caption_tokens positions) and predicts ids[:, 1:].
    """
    out = torch.full((len(captions), length + 1), vocab.pad_id, dtype=torch.long)
    for row, text in enumerate(captions):
        ids = [vocab.bos_id, *vocab.encode(text)[: length - 1], vocab.eos_id]
        out[row, : len(ids)] = torch.tensor(ids)
    return out


def concept_targets(concept_names: Sequence[str], references: Sequence[Sequence[str]]) -> torch.Tensor:
    """[B, V] 0/1 labels: concept v is on for image b when every word of its name occurs in b's captions."""
    seen = [{w for text in texts for w in split_words(text)} for texts in references]
    names = [set(split_words(n)) for n in concept_names]
    return torch.tensor([[float(name <= words) for name in names] for words in seen])
