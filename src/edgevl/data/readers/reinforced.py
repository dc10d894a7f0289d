"""Reinforced shards in the DataCompDR / DFNDR layout, joined with the images and real captions.

A DataCompDR shard holds, per key, `paug.json` (augmentation records), `syn.json` (synthetic captions),
`npz` or `pth.gz` (teacher embeddings), `json` (`uid`, ...) and `url.txt`, but no image or caption: those
come from a companion webdataset with the same shard and key assignment (DataComp). Shard i of the
companion is streamed next to shard i of the reinforcement data and joined by key (or by `uid`).

Per sample and epoch one augmentation is replayed on the image at the student's size, and one synthetic
caption is drawn; both choices depend only on (seed, epoch, key), so they are reproducible in any worker.
Teacher-only data (its `manifest.json` records `"num_syn_captions": 0`) has no synthetic caption to draw: its
samples carry the real caption and the image and real-caption embeddings only.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevl.data.readers.base import Sample, SkipSample, decode_caption, fill_captions, open_image, sample_rng
from edgevl.data.readers.reinforced_manifest import ReinforcedManifest
from edgevl.data.readers.webdataset import (
    IMAGE_EXTS,
    RawSample,
    ShardedTarReader,
    expand_urls,
    parse_json_member,
    read_shard,
)
from edgevl.errors import ConfigError, EdgevlError
from edgevl.run_layout import REINFORCED_MANIFEST
from edgevl.tensor_files import check_finite, read_torch

JOIN_MODES = ("key", "uid")
DEFAULT_SYN_KEY_REGEX = r"^syn_text.*$"


@dataclass
class ReinforcedSample(Sample):
    """A `Sample` plus one synthetic caption and the matching float32 teacher embeddings.

    `image` is augmentation `aug_index` replayed at the student size; `image_emb` = `image_emb[aug_index]`,
    `text_emb` the real caption's row, `syn_text_emb` the synthetic caption's row (the `syn_*` fields stay None
    for teacher-only data).
    """

    syn_caption: str | None = None
    syn_tokens: torch.Tensor | None = None
    image_emb: torch.Tensor | None = None
    text_emb: torch.Tensor | None = None
    syn_text_emb: torch.Tensor | None = None
    aug_index: int | None = None


def load_embeddings(raw: RawSample) -> dict[str, torch.Tensor]:
    """Teacher embeddings of a sample from its `npz` member (preferred) or `pth.gz` (bf16 torch dict)."""
    try:
        if "npz" in raw:
            with np.load(io.BytesIO(raw["npz"]), allow_pickle=False) as npz:
                blob = {name: torch.from_numpy(np.array(npz[name])) for name in npz.files}
        elif "pth.gz" in raw:
            blob = read_torch(gzip.decompress(raw["pth.gz"]), "pth.gz member")
        else:
            raise SkipSample("incomplete_sample", "no npz or pth.gz member")
        if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
            raise ValueError("not a dict of tensors")
        check_finite(blob, "embeddings")
    except SkipSample:
        raise
    except Exception as exc:  # zip/gzip/pickle damage, refused payloads, non-finite values: all "bad_embeddings"
        raise SkipSample("bad_embeddings", f"unreadable embeddings ({type(exc).__name__}: {exc})") from None
    return blob


def stores_synthetic_captions(shard: str) -> bool:
    """False when the `manifest.json` next to `shard` records teacher-only data (`"num_syn_captions": 0`); True
    without a manifest (DataCompDR's own shards). A manifest that is there but invalid fails naming the file."""
    folder = Path(shard).parent
    if not (folder / REINFORCED_MANIFEST).is_file():
        return True
    return ReinforcedManifest.read(folder).stores_synthetic_captions


def parse_param_aug(raw: RawSample) -> list:
    """The augmentation records of `paug.json` (`param_aug` as a list or as a JSON string), validated."""
    from edgevl.data.augment import decode_paug

    if "paug.json" not in raw:
        raise SkipSample("incomplete_sample", "no paug.json member")
    try:
        records = decode_paug(raw["paug.json"])
    except EdgevlError as exc:
        raise SkipSample("bad_metadata", str(exc)) from None
    if not records:
        raise SkipSample("bad_metadata", "paug.json holds no augmentation records")
    return records


class ReinforcedReader(ShardedTarReader):
    """Streams DataCompDR-layout shards joined with a companion image+caption webdataset.

    `images`: companion shard pattern/list, aligned with `urls` shard by shard (None if the shards already
    contain the image and `txt`). `join`: 'key' (member basename) or 'uid' (from each side's `json`).
    `size`/`interpolation`: the student's resolution for the replay; `transform` then maps the replayed
    PIL image to a tensor (e.g. to_tensor + the student's normalization). `sequential`: augmentation
    `epoch mod n` instead of a seeded random one.
    """

    def __init__(
        self,
        urls: str | os.PathLike | Sequence[str],
        *,
        images: str | os.PathLike | Sequence[str] | None = None,
        join: str = "key",
        size: int = 224,
        interpolation: str = "bicubic",
        sequential: bool = False,
        syn_key_regex: str = DEFAULT_SYN_KEY_REGEX,
        **kwargs: Any,
    ) -> None:
        super().__init__(urls, **kwargs)
        self.images = expand_urls(images) if images is not None else None
        if self.images is not None and len(self.images) != len(self.urls):
            raise ConfigError(
                f"{len(self.urls)} reinforcement shards but {len(self.images)} image shards; they must pair up"
            )
        if join not in JOIN_MODES:
            raise ConfigError(f"unknown join {join!r}; choose from {JOIN_MODES}")
        self.join, self.size, self.interpolation = join, size, interpolation
        self.sequential = sequential
        self.syn_key = re.compile(syn_key_regex)
        self.synthetic = stores_synthetic_captions(self.urls[0])

    def shard_samples(self, shard: int) -> Iterator[RawSample]:
        """Reinforcement samples of one shard with the companion's members merged in."""
        samples = read_shard(self.urls[shard], self.skip_log)
        if self.images is None:
            yield from samples
            return
        companion = read_shard(self.images[shard], self.skip_log)
        pending: dict[str, RawSample] = {}
        for raw in samples:
            wanted = self._join_id(raw)
            while wanted not in pending:
                other = next(companion, None)
                if other is None:
                    break
                pending[self._join_id(other)] = other
            match = pending.pop(wanted, None)
            if match is None:
                raw["__unjoined__"] = self.images[shard]
            else:
                raw.update({k: v for k, v in match.items() if not k.startswith("__") and k not in raw})
            yield raw

    def _join_id(self, raw: RawSample) -> str:
        if self.join == "key":
            return raw["__key__"]
        try:
            return str(json.loads(raw["json"].decode("utf-8"))["uid"])
        except (KeyError, TypeError, UnicodeDecodeError, ValueError):
            return f"<no uid: {raw['__key__']}>"

    def decode(self, raw: RawSample) -> ReinforcedSample:
        key, url = raw["__key__"], raw["__url__"]
        if "__unjoined__" in raw:
            raise SkipSample("join_miss", f"no image sample with this {self.join} in {raw['__unjoined__']}")
        ext = next((e for e in IMAGE_EXTS if e in raw), None)
        if ext is None:
            raise SkipSample("incomplete_sample", "no image member (jpg/jpeg/png/webp)")
        records = parse_param_aug(raw)
        emb = load_embeddings(raw)
        image_emb, text_emb = emb.get("image_emb"), emb.get("text_emb")
        if image_emb is None or text_emb is None or image_emb.ndim != 2 or text_emb.ndim != 2:
            raise SkipSample("bad_embeddings", "need 2-D image_emb and text_emb")
        if image_emb.shape[0] != len(records):
            raise SkipSample(
                "bad_embeddings", f"{image_emb.shape[0]} image embeddings for {len(records)} augmentations"
            )
        rng = sample_rng(self.seed, self.epoch, key)
        aug = self.epoch % len(records) if self.sequential else rng.randrange(len(records))

        sample = ReinforcedSample(key=key, meta={"url": url}, aug_index=aug)
        fill_captions(sample, [raw.get("txt")], self.caption_mode, self.seed, self.epoch)
        if self.synthetic:
            sample.syn_caption, sample.syn_text_emb = self._synthetic(raw, emb, rng)
        sample.image_emb = image_emb[aug].float()
        sample.text_emb = text_emb[0].float()
        if "json" in raw:
            sample.meta.update(parse_json_member(raw["json"], "json"))
        if "url.txt" in raw:
            sample.meta["source_url"] = raw["url.txt"].decode("utf-8", errors="replace").strip()

        from edgevl.data.augment import replay

        image = open_image(raw[ext], f"{url}:{key}.{ext}", self.alpha)
        try:
            sample.image = replay(image, records[aug], size=self.size, interpolation=self.interpolation)
        except EdgevlError as exc:
            raise SkipSample("bad_metadata", f"cannot replay augmentation {aug}: {exc}") from None
        return sample

    def _synthetic(self, raw: RawSample, emb: dict[str, torch.Tensor], rng: Any) -> tuple[str, torch.Tensor]:
        """One synthetic caption (random key matching the regex, then random caption) and its embedding.

        Embeddings are `<syn_key>_emb[s]` (RayGen layout) or else row `1 + offset + s` of `text_emb`, where
        offset counts the captions of the earlier `syn_text*` keys in `syn.json` order (DataCompDR layout).
        """
        if "syn.json" not in raw:
            raise SkipSample("incomplete_sample", "no syn.json member")
        syn = parse_json_member(raw["syn.json"], "syn.json")
        offsets, total = {}, 1
        for name, values in syn.items():
            if name.startswith("syn_text") and isinstance(values, list):
                offsets[name], total = total, total + len(values)
        lists = [(k, syn[k]) for k in offsets if self.syn_key.match(k) and syn[k]]
        if not lists:
            raise SkipSample("missing_caption", f"no synthetic captions matching {self.syn_key.pattern!r}")
        name, values = rng.choice(lists)
        s = rng.randrange(len(values))
        text = decode_caption(values[s] if isinstance(values[s], str) else None)
        table, row = (emb[f"{name}_emb"], s) if f"{name}_emb" in emb else (emb["text_emb"], offsets[name] + s)
        if row >= table.shape[0]:
            raise SkipSample("bad_embeddings", f"no embedding row {row} for synthetic caption {name}[{s}]")
        return text, table[row].float()

    def prepare(self, sample: Sample) -> Sample:
        """Transform the replayed image and tokenize both the real and the synthetic caption."""
        sample = super().prepare(sample)
        if self.tokenizer is not None and isinstance(sample, ReinforcedSample) and sample.syn_caption:
            sample.syn_tokens = self.tokenizer(sample.syn_caption)[0]
        return sample

