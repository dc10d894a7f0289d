"""Batched inference helpers behind `edgevl embed` and `edgevl classify`: embed images or texts, classify images.

Unreadable images are skipped and reported, never fatal; non-finite outputs are an error (a model that
makes NaN would otherwise print `nan` scores with exit 0); outputs are written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgevl.data.transforms import load_image
from edgevl.errors import EdgevlError, ImageLoadError
from edgevl.eval.zeroshot import build_zero_shot_classifier
from edgevl.io import atomic_write, atomic_write_text
from edgevl.progress import track


def finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """`t` itself; raises `EdgevlError` when it holds NaN or infinity."""
    if not bool(torch.isfinite(t).all()):
        raise EdgevlError(f"the model produced non-finite {what} (NaN or infinity); its weights or precision are "
                          "broken")
    return t


@dataclass
class Embeddings:
    """Embeddings of the items that could be read, in input order, and the items that were skipped."""

    vectors: torch.Tensor
    keys: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.inference_mode()
def embed_images(
    model: nn.Module,
    preprocess: Callable,
    images: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    normalize: bool = True,
    progress: bool = False,
) -> Embeddings:
    """Encode image files in batches; unreadable files are skipped and listed with the reason."""
    vectors, keys, skipped = [], [], []
    batch: list[torch.Tensor] = []
    batch_keys: list[str] = []

    def flush() -> None:
        if batch:
            vectors.append(finite(model.encode_image(torch.stack(batch), normalize=normalize).float(),
                                  "image embeddings"))
            keys.extend(batch_keys)
            batch.clear()
            batch_keys.clear()

    for path in track(images, desc="images", unit="image", enabled=progress):
        try:
            batch.append(preprocess(load_image(path)))
            batch_keys.append(str(path))
        except ImageLoadError as exc:
            skipped.append((str(path), exc.reason))
        if len(batch) == batch_size:
            flush()
    flush()
    dim = vectors[0].shape[1] if vectors else 0
    return Embeddings(torch.cat(vectors) if vectors else torch.empty(0, dim), keys, skipped)


@torch.inference_mode()
def embed_texts(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    normalize: bool = True,
    progress: bool = False,
) -> Embeddings:
    """Encode texts in batches."""
    if not texts:
        raise EdgevlError("no texts given")
    chunks = []
    for start in track(range(0, len(texts), batch_size), desc="texts", unit="batch", enabled=progress):
        ids = tokenizer(list(texts[start : start + batch_size]))
        chunks.append(finite(model.encode_text(ids, normalize=normalize).float(), "text embeddings"))
    return Embeddings(torch.cat(chunks), list(texts))


@dataclass
class Prediction:
    key: str
    labels: list[str]
    probs: list[float]


@torch.inference_mode()
def classify_images(
    model: nn.Module,
    preprocess: Callable,
    tokenizer: Callable[[list[str]], torch.Tensor],
    images: Sequence[str | os.PathLike],
    labels: Sequence[str],
    templates: Sequence[str],
    *,
    top_k: int = 3,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Zero-shot top-k labels with softmax probabilities (at the model's logit scale) for each readable image."""
    classifier = finite(build_zero_shot_classifier(model, tokenizer, labels, templates), "label embeddings")
    emb = embed_images(model, preprocess, images, batch_size=batch_size, progress=progress)
    if not emb.keys:
        return [], emb.skipped
    scale = model.logit_scale.exp().clamp(max=100).item() if hasattr(model, "logit_scale") else 100.0
    probs = (scale * emb.vectors @ classifier).softmax(dim=-1)
    k = min(top_k, len(labels))
    top = probs.topk(k, dim=-1)
    preds = [
        Prediction(key, [labels[j] for j in idx.tolist()], [round(p, 6) for p in val.tolist()])
        for key, idx, val in zip(emb.keys, top.indices, top.values)
    ]
    return preds, emb.skipped


def embeddings_suffix(out: str | os.PathLike) -> str:
    """'.npy' or '.safetensors' for an embeddings output path; checked before any work so a typo fails fast."""
    suffix = Path(out).suffix.lower()
    if suffix not in (".npy", ".safetensors"):
        raise EdgevlError(f"output {out} must end in .npy or .safetensors")
    return suffix


def save_embeddings(emb: Embeddings, out: str | os.PathLike) -> Path:
    """Write vectors to `.npy` or `.safetensors` (by suffix) plus `<out>.keys.json`, each atomically."""
    suffix = embeddings_suffix(out)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    if suffix == ".npy":
        def write_npy(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, emb.vectors.numpy())

        atomic_write(out, write_npy)
    else:
        from safetensors.torch import save_file

        atomic_write(out, lambda tmp: save_file({"embeddings": emb.vectors.contiguous()}, tmp))
    meta = {"keys": emb.keys, "skipped": [{"key": k, "reason": r} for k, r in emb.skipped]}
    keys_path = out.with_name(out.name + ".keys.json")
    atomic_write_text(keys_path, json.dumps(meta, ensure_ascii=False, indent=1))
    return out
