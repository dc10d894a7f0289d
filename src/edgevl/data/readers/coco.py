"""COCO caption annotations (`captions_*.json`) and Karpathy split files (`dataset_{coco,flickr8k,flickr30k}.json`).

Both give one sample per image with all its captions (`captions`), the selected one in `caption`; this is
the layout retrieval evaluation wants, and training picks one caption per image and epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgevl.data.readers.base import MapReader, Sample, fill_captions, open_image
from edgevl.errors import ConfigError, DataError

KARPATHY_SPLITS = ("train", "val", "test", "restval", "all")


def read_json(path: Path) -> Any:
    """Parse a JSON annotation file, with a `DataError` naming it when that fails."""
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc


class CaptionedImages(MapReader):
    """Images with a list of captions each; `items` holds (key, image path, captions, meta)."""

    def key(self, index: int) -> str:
        return self.items[index][0]

    def load(self, index: int) -> Sample:
        key, path, captions, meta = self.items[index]
        sample = Sample(key=key, meta={**meta, "path": str(path)})
        fill_captions(sample, captions, self.caption_mode, self.seed, self.epoch)
        sample.image = open_image(path, str(path), self.alpha)
        return sample


class CocoCaptions(CaptionedImages):
    """`captions_{train,val}2014.json`: `images[{id, file_name}]` + `annotations[{image_id, caption}]`.

    Images are `images/<file_name>` (default: the annotation file's folder), in the file's image order;
    images without any annotation are left out.
    """

    def __init__(self, path: str | os.PathLike, *, images: str | os.PathLike | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        path = Path(path)
        self.source = str(path)
        data = read_json(path)
        if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
            raise DataError(f"{path} is not a COCO captions file (needs 'images' and 'annotations')")
        root = Path(images) if images is not None else path.parent
        captions: dict[Any, list] = {}
        for ann in data["annotations"]:
            captions.setdefault(ann.get("image_id"), []).append(ann.get("caption"))
        for img in data["images"]:
            if img.get("id") in captions:
                meta = {"image_id": img["id"]}
                self.items.append((str(img["id"]), root / img["file_name"], captions[img["id"]], meta))


class KarpathySplit(CaptionedImages):
    """Karpathy split file: `images[{filepath?, filename, split, sentences[{raw}]}]`, one split of it.

    `split='train'` includes `restval` (the usual 113k-image COCO train set); `'restval'` alone and
    `'all'` are also accepted. Images are `images/<filepath>/<filename>` (Flickr files have no filepath).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        images: str | os.PathLike | None = None,
        split: str = "test",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if split not in KARPATHY_SPLITS:
            raise ConfigError(f"unknown Karpathy split {split!r}; choose from {KARPATHY_SPLITS}")
        path = Path(path)
        self.source = str(path)
        data = read_json(path)
        if not isinstance(data, dict) or "images" not in data:
            raise DataError(f"{path} is not a Karpathy split file (needs 'images')")
        wanted = {"train", "restval"} if split == "train" else {split}
        root = Path(images) if images is not None else path.parent
        for img in data["images"]:
            if split != "all" and img.get("split") not in wanted:
                continue
            file = root / img.get("filepath", "") / img["filename"]
            key = str(img.get("cocoid", img.get("imgid", img["filename"])))
            meta = {"imgid": img.get("imgid"), "split": img.get("split"), "filename": img["filename"]}
            self.items.append((key, file, [s.get("raw") for s in img.get("sentences", [])], meta))
