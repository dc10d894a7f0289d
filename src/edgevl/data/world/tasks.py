"""Ready-made zero-shot classification tasks over world samples (class names, prompt templates, labels).

The headline task is `color_shape`: name the colour and shape of the dominant object (always clearly the
largest, docs/world.md) among all 80 combinations, held-out ones included, so the `heldout` split measures
compositional generalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgevl.data.world.vocab import COLOR_NAMES, COUNT_WORDS, SHAPES
from edgevl.errors import ConfigError

Labels = dict[str, Any]
HEADLINE_TASK = "color_shape"


@dataclass(frozen=True)
class ZeroShotTask:
    """A zero-shot classification task: prompts are `template.format(c=classname)`."""

    name: str
    description: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    label: Callable[[Labels], int]

    def prompts(self, classname: str) -> list[str]:
        """Every template filled with one class name."""
        return [t.format(c=classname) for t in self.templates]


def _dominant(labels: Labels) -> dict[str, Any]:
    return labels["objects"][0]


_COLOR_SHAPE = tuple(f"{c} {s}" for c in COLOR_NAMES for s in SHAPES)
_COUNTS = tuple(f"{w} shape" if i == 0 else f"{w} shapes" for i, w in enumerate(COUNT_WORDS))

_TASKS = (
    ZeroShotTask(
        name="color_shape",
        description="colour and shape of the dominant object (>= 3x the area of any other); the headline task",
        classnames=_COLOR_SHAPE,
        templates=("the {c}.", "a picture of the {c}.", "an image of the {c}.", "a drawing of the {c}."),
        label=lambda lab: _COLOR_SHAPE.index(f"{_dominant(lab)['color']} {_dominant(lab)['shape']}"),
    ),
    ZeroShotTask(
        name="shape",
        description="shape of the dominant object",
        classnames=SHAPES,
        templates=("a {c}.", "a picture of a {c}.", "the {c} shape.", "a drawing of a {c}."),
        label=lambda lab: SHAPES.index(_dominant(lab)["shape"]),
    ),
    ZeroShotTask(
        name="color",
        description="colour of the dominant object",
        classnames=COLOR_NAMES,
        templates=("the {c} shape.", "a picture of the {c} shape.", "the shape is {c}.", "something {c}."),
        label=lambda lab: COLOR_NAMES.index(_dominant(lab)["color"]),
    ),
    ZeroShotTask(
        name="count",
        description="number of objects in the scene (1-4)",
        classnames=_COUNTS,
        templates=("{c}.", "a picture of {c}.", "an image with {c}.", "a scene with {c}."),
        label=lambda lab: lab["n_objects"] - 1,
    ),
)


def tasks() -> dict[str, ZeroShotTask]:
    """All zero-shot tasks by name; the headline is `color_shape`."""
    return {t.name: t for t in _TASKS}


def get_task(name: str) -> ZeroShotTask:
    """One task by name, or ConfigError listing the known names."""
    known = tasks()
    if name not in known:
        raise ConfigError(f"unknown world task {name!r}; choose from {sorted(known)}")
    return known[name]
