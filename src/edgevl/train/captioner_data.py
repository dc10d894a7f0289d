"""Caption training data: reference captions from any reader spec, frozen-backbone grid cache, token targets.

The backbone of a LightCap is frozen and training uses no augmentation, so every image's grid features are
computed once and kept in memory; a training step then runs only the trainable parts. Each image also keeps
the labels its caption should name (class, and a world object's colour and shape) for the accuracy check.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from edgevl.data.classnames import normalize_name
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
    """Images (as frozen-backbone grids [N, C, H, W]) with their reference captions and keys, and optionally
    what a caption of each should name (`sample_labels`; an image may have references, labels or both)."""

    keys: list[str]
    grids: torch.Tensor
    references: list[list[str]]
    labels: list[dict[str, str]] | None = None

    def __len__(self) -> int:
        return len(self.keys)


def class_phrase(name: str) -> str:
    """A class folder name as the words a caption would use: '003_red_triangle' -> 'red triangle' (the folder
    normalization of `edgevl.data.classnames.normalize_name`)."""
    return " ".join(caption_words(normalize_name(name)))


def caption_words(text: str) -> list[str]:
    """Lower-case alphanumeric words of a caption or label, for whole-word matching."""
    return re.findall(r"[a-z0-9]+", text.lower())


def world_labels(scene: Any) -> dict[str, str]:
    """What a caption of a world scene (its `labels` dict) should name: the dominant object's `color`, `shape` and
    `class` ('red star', the world's headline classification task); {} for anything else."""
    dominant = scene.get("objects", [None])[0] if isinstance(scene, dict) and scene.get("objects") else None
    if isinstance(dominant, dict) and isinstance(dominant.get("color"), str) and isinstance(dominant.get("shape"), str):
        return {"class": f"{dominant['color']} {dominant['shape']}", "color": dominant["color"],
                "shape": dominant["shape"]}
    return {}


def sample_labels(sample: Sample, class_names: Sequence[str] | None = None) -> dict[str, str]:
    """What a caption of `sample` should name: `class` for a labelled image (`class_names[label]`, else the image
    folder reader's class folder `meta['class']`), and for a world image the dominant object's `color`, `shape` and
    `class` ('red star', the world's headline classification task)."""
    labels = world_labels(sample.meta.get("labels"))
    name = sample.meta.get("class")
    if class_names is not None and sample.label is not None and 0 <= sample.label < len(class_names):
        name = class_names[sample.label]
    if isinstance(name, str) and class_phrase(name):
        labels["class"] = class_phrase(name)
    return labels


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
                      progress: bool = False, require_captions: bool = True,
                      references: Mapping[str, list[str]] | None = None) -> CaptionData:
    """Read up to `limit` samples of a reader spec, preprocess them for `model` and cache its backbone grids.

    Images without a caption are left out, unless `require_captions` is False and they carry labels (an image
    folder as validation data: class accuracy without CIDEr). `references` (sample key -> captions, e.g. a
    teacher's) replaces the data's own captions."""
    from tqdm import tqdm

    from edgevl.data.readers import open_dataset
    from edgevl.data.transforms import ImageTransform

    dataset = open_dataset(spec, transform=ImageTransform(model.config.preprocess), caption="all")
    class_names = getattr(getattr(dataset, "zeroshot", None), "names", None)  # an image folder's class names
    keys: list[str] = []
    refs: list[list[str]] = []
    labels: list[dict[str, str]] = []
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
        captions = reference_captions(sample) if references is None else list(references.get(sample.key, ()))
        named = sample_labels(sample, class_names)
        if not captions and (require_captions or not named):
            continue
        keys.append(sample.key)
        refs.append(captions)
        labels.append(named)
        pending.append(sample.image)
        bar.update(1)
        if len(pending) == batch_size:
            flush()
        if limit is not None and len(keys) >= limit:
            break
    flush()
    bar.close()
    if not keys:
        raise DataError(f"no image with a caption{'' if require_captions else ' or a class label'} in {spec!r}")
    return CaptionData(keys, torch.cat(grids), refs, labels if any(labels) else None)


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
