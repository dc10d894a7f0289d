"""Sequence-level distillation from a CoCa (`train-captioner --teacher coca_ViT-L-14:TAG`): the teacher captions
every training image once and its captions are the student's references, so images without captions (a photo
folder, an unlabelled shard set) train a LightCap.

The captions are cached in the run folder (`teacher_captions.jsonl`, one line per batch of `TEACHER_BATCH` images
in reading order, flushed as written), so a killed run resumes without captioning again and gives the same captions
as an uninterrupted one: a batch's content and seed depend only on its position in the data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from edgevl.errors import ConfigError
from edgevl.io import sha256_file
from edgevl.progress import Progress

CACHE_FILE = "teacher_captions.jsonl"
TEACHER_BATCH = 16


@dataclass(frozen=True)
class TeacherRecipe:
    """How the teacher captions each image: one beam-search caption (`beam` 1 = greedy), then `samples` top-p
    captions (DataCompDR's recipe, cut at the first period); `max_tokens` ids after the start token (at most the
    teacher's text context)."""

    beam: int = 3
    samples: int = 0
    top_p: float = 0.9
    max_tokens: int = 29


def is_caption_teacher(spec: str | None) -> bool:
    """True when `--teacher` names a CoCa (sequence-level KD) rather than a LightCap (feature and logit KD)."""
    from edgevl.captioning import is_coca_spec
    from edgevl.models.factory import parse_model_spec

    if not spec:
        return False
    name, _ = parse_model_spec(spec, "teacher", require_weights=False, named_weights=True)
    return is_coca_spec(name)


def _batches(data_spec: str, transform: Any, limit: int | None) -> Iterator[tuple[int, list[str], torch.Tensor]]:
    """(index, keys, pixels) of consecutive batches of readable images in reading order (at most `limit` images)."""
    from edgevl.data.readers import open_dataset

    keys: list[str] = []
    pixels: list[torch.Tensor] = []
    index = seen = 0
    for sample in open_dataset(data_spec, transform=transform):
        if sample is None:
            continue
        keys.append(sample.key)
        pixels.append(sample.image)
        seen += 1
        if len(keys) == TEACHER_BATCH or seen == limit:
            yield index, keys, torch.stack(pixels)
            index, keys, pixels = index + 1, [], []
        if seen == limit:
            return
    if keys:
        yield index, keys, torch.stack(pixels)


def _read_cache(path: Path, header: dict[str, Any]) -> dict[int, dict[str, list[str]]]:
    """Batches already captioned with the same teacher and recipe ({} when the file is absent or from another
    teacher); a line cut short by a kill is dropped."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        if not lines or json.loads(lines[0]) != header:
            print(f"[train-captioner] {path} was made by another teacher or recipe; captioning again", flush=True)
            return {}
    except ValueError:
        return {}
    done: dict[int, dict[str, list[str]]] = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            break
        done[int(record["batch"])] = dict(zip(record["keys"], record["captions"]))
    return done


def teacher_captions(spec: str, data_spec: str, run_dir: str | Path, *, recipe: TeacherRecipe = TeacherRecipe(),
                     limit: int | None = None, seed: int = 0, progress: bool = False) -> dict[str, list[str]]:
    """{sample key: the teacher's captions} for up to `limit` images of `data_spec`, cached in `run_dir`."""
    from edgevl.captioning import load_coca
    from edgevl.models.checkpoint import weights_file
    from edgevl.models.factory import parse_model_spec

    name, weights = parse_model_spec(spec, "teacher", named_weights=True)
    model, transform = load_coca(name, weights)
    recipe = replace(recipe, max_tokens=min(recipe.max_tokens, model.context_length))
    header = {"teacher": spec, "weights_sha256": sha256_file(weights_file(model.pretrained_path)),
              "recipe": asdict(recipe), "seed": seed}
    path = Path(run_dir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_cache(path, header)
    if not done:
        path.write_text(json.dumps(header) + "\n", encoding="utf-8")
    out: dict[str, list[str]] = {}
    with path.open("a", encoding="utf-8") as cache, Progress(limit, desc="teacher captions", unit="img",
                                                               enabled=progress) as bar:
        for index, keys, pixels in _batches(data_spec, transform, limit):
            if index not in done or list(done[index]) != keys:
                done[index] = _caption_batch(model, pixels, keys, recipe, seed * 1_000_003 + index)
                cache.write(json.dumps({"batch": index, "keys": keys, "captions": list(done[index].values())}) + "\n")
                cache.flush()
                os.fsync(cache.fileno())
            out.update(done[index])
            bar.update(len(keys))
    if not out:
        raise ConfigError(f"no readable image in {data_spec!r} for the teacher to caption")
    return out


def _caption_batch(model: torch.nn.Module, pixels: torch.Tensor, keys: list[str], recipe: TeacherRecipe,
                   seed: int) -> dict[str, list[str]]:
    """One batch's captions: the beam-search caption, then the top-p samples, per key (empty ones dropped)."""
    from edgevl.captioning import caption_pixels

    rows = [[text] for text in caption_pixels(model, pixels, beam=recipe.beam, max_tokens=recipe.max_tokens)]
    if recipe.samples:
        sampled = caption_pixels(model, pixels, num_samples=recipe.samples, top_p=recipe.top_p,
                                 max_tokens=recipe.max_tokens, seed=seed)
        rows = [row + list(extra) for row, extra in zip(rows, sampled)]
    return {key: [t.strip() for t in row if t.strip()] for key, row in zip(keys, rows)}
