"""Caption attribute accuracy on the procedural world: the colour, shape and object count a caption states,
compared with the scene's labels, so that fluent templated captions (a high CIDEr) cannot hide captions about
the wrong object.

The first object a caption mentions is the one it describes: the world's clean captions always name the
dominant object first (docs/world.md). Colour and shape words may be the world's names, their plurals
('stars', 'crosses') or the synonyms of `edgevl.data.world.vocab` ('violet', 'rhombus').
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgevl.data.world.vocab import COLOR_NAMES, COLOR_SYNONYMS, COUNT_WORDS, SHAPE_SYNONYMS, SHAPES
from edgevl.errors import DataError

ATTRIBUTE_KEYS = ("color_acc", "shape_acc", "color_shape_acc", "count_acc", "count_stated")


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


_COLOR_WORDS = {**{c: c for c in COLOR_NAMES}, **COLOR_SYNONYMS}
_SHAPE_NAMES = {**{s: s for s in SHAPES}, **SHAPE_SYNONYMS}
_SHAPE_WORDS = {**_SHAPE_NAMES, **{_plural(w): s for w, s in _SHAPE_NAMES.items()}}
_NUMBERS = {**{w: n for n, w in enumerate(COUNT_WORDS, 1)}, **{str(n): n for n in range(1, 10)}}
_COUNTED_NOUNS = frozenset("shape shapes object objects thing things item items figure figures".split())
_ONLY_ONE = frozenset(("single", "alone", "lone"))
_COUNT_WINDOW = 3  # "three shapes", "two small objects", "four coloured geometric shapes"
_WORD = re.compile(r"[a-z]+|[0-9]+")


@dataclass(frozen=True)
class CaptionAttributes:
    """What a caption states: its first-mentioned object's colour and shape, and the number of objects (None
    where the caption does not say)."""

    color: str | None
    shape: str | None
    count: int | None


def _first(words: Sequence[str], vocab: Mapping[str, str]) -> int | None:
    return next((i for i, w in enumerate(words) if w in vocab), None)


def _stated_count(words: Sequence[str]) -> int | None:
    """The first count a caption states: a number before a word like 'shapes' ('the biggest of three shapes'),
    or 'single' / 'alone' for one object."""
    for i, word in enumerate(words):
        if word in _ONLY_ONE:
            return 1
        if word in _NUMBERS and any(w in _COUNTED_NOUNS for w in words[i + 1:i + 1 + _COUNT_WINDOW]):
            return _NUMBERS[word]
    return None


def parse_caption(text: str) -> CaptionAttributes:
    """The colour and shape of the first object `text` mentions and the object count it states.

    The shape is the first shape word; the colour is the last colour word before it ('a large red star'),
    else the first one between it and the next shape word ('a star, red'); without any shape word, the first
    colour word."""
    words = _WORD.findall(text.lower())
    at = _first(words, _SHAPE_WORDS)
    if at is None:
        colour_at = _first(words, _COLOR_WORDS)
        return CaptionAttributes(None if colour_at is None else _COLOR_WORDS[words[colour_at]], None,
                                 _stated_count(words))
    before = [w for w in words[:at] if w in _COLOR_WORDS]
    if before:
        color: str | None = _COLOR_WORDS[before[-1]]
    else:
        rest = words[at + 1:]
        end = _first(rest, _SHAPE_WORDS)
        after = [w for w in rest[:end] if w in _COLOR_WORDS]
        color = _COLOR_WORDS[after[0]] if after else None
    return CaptionAttributes(color, _SHAPE_WORDS[words[at]], _stated_count(words))


def attribute_accuracy(captions: Sequence[str], scenes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Shares of `captions` whose first object has the colour (`color_acc`), shape (`shape_acc`) and both
    (`color_shape_acc`) of its scene's dominant object (`labels['objects'][0]`); `count_stated` is the share
    that states an object count and `count_acc` the share of those that state `n_objects` (left out when no
    caption states a count)."""
    if len(captions) != len(scenes) or not captions:
        raise DataError(f"attribute accuracy needs one scene per caption and at least one: got {len(captions)} "
                        f"captions and {len(scenes)} scenes")
    color = shape = both = stated = counted = 0
    for text, scene in zip(captions, scenes):
        try:
            dominant, n_objects = scene["objects"][0], scene["n_objects"]
            truth = (dominant["color"], dominant["shape"])
        except (KeyError, IndexError, TypeError) as err:
            raise DataError(f"not a world scene's labels (objects[0].color/shape, n_objects): {scene!r:.80}") from err
        found = parse_caption(text)
        color += found.color == truth[0]
        shape += found.shape == truth[1]
        both += (found.color, found.shape) == truth
        if found.count is not None:
            stated += 1
            counted += found.count == n_objects
    n = len(captions)
    scores = {"color_acc": color / n, "shape_acc": shape / n, "color_shape_acc": both / n, "count_stated": stated / n}
    if stated:
        scores["count_acc"] = counted / stated
    return scores
