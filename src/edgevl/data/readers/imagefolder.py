"""An image folder with one sub-folder per class (`root/<class>/<image>`), for zero-shot classification.

Classes are the sub-folder names sorted alphabetically (label = position), like torchvision's ImageFolder;
files are listed recursively and sorted, and only known image suffixes are taken.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgevl.data.files import IMAGE_SUFFIXES, list_image_files
from edgevl.data.readers.base import MapReader, Sample, open_image
from edgevl.errors import DataError


class ImageFolder(MapReader):
    """Map-style (image, label) samples; `classes[label]` is the folder name of a label."""

    def __init__(self, root: str | os.PathLike, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.source = str(self.root)
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise DataError(f"{self.root} has no class sub-folders")
        for label, name in enumerate(self.classes):
            self.items += [(file, label) for file in list_image_files(self.root / name)]
        if not self.items:
            raise DataError(f"{self.root} has no images (suffixes {sorted(IMAGE_SUFFIXES)})")

    def key(self, index: int) -> str:
        return self.items[index][0].relative_to(self.root).as_posix()

    def load(self, index: int) -> Sample:
        file, label = self.items[index]
        key = self.key(index)
        image = open_image(file, str(file))
        return Sample(key=key, image=image, label=label, meta={"path": str(file), "class": self.classes[label]})
