"""Prompt template sets for zero-shot classification, and loading of user template files."""

from __future__ import annotations

import json
from pathlib import Path

from edgevl.errors import ConfigError

DEFAULT_TEMPLATES = "photo"
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    # The bare class name: the fastest classifier, one text per class.
    "name": ("{}",),
    # One caption-like prompt, the usual CLIP default.
    "photo": ("a photo of a {}.",),
    # A small ensemble of generic photo prompts (averaged per class, then re-normalized).
    "photo-ensemble": (
        "a photo of a {}.",
        "a picture of a {}.",
        "an image showing a {}.",
        "a close-up photo of the {}.",
        "a blurry photo of a {}.",
        "a low resolution photo of the {}.",
        "a bright photo of a {}.",
        "a cropped photo of a {}.",
        "a drawing of a {}.",
        "a rendering of a {}.",
    ),
    # Prompts for the procedural world's rendered scenes.
    "world": (
        "a {}.",
        "a picture of a {}.",
        "a rendered scene with a {}.",
        "an image containing a {}.",
    ),
}


def get_templates(name_or_path: str) -> list[str]:
    """A named template set, or a file: `.json` (a list, or a dict whose first value is a list) or one per line.

    Every template must contain `{}` (or `{c}`), the place of the class name.
    """
    if name_or_path in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"unknown template set {name_or_path!r}: not one of {sorted(TEMPLATE_SETS)} nor a file")
    templates = _read_list(path)
    bad = [t for t in templates if "{}" not in t and "{c}" not in t]
    if bad or not templates:
        raise ConfigError(f"{path}: every template needs a '{{}}' placeholder (bad: {bad[:3]}) and at least one")
    return [t.replace("{c}", "{}") for t in templates]


def _read_list(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            data = next(iter(data.values()), [])
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ConfigError(f"{path}: expected a JSON list of strings")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]
