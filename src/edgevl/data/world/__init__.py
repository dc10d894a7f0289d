"""The procedural image-caption world: deterministic, seedable scenes of coloured shapes with captions.

No download needed: sample i of (split, seed) is regenerated from its own RNG. See docs/world.md for the
grammar, the tasks, the splits and the noise model.
"""

from edgevl.data.world.captions import N_CLEAN_CAPTIONS, clean_captions, noisy_caption
from edgevl.data.world.sample import DEFAULT_NOISE, DEFAULT_SIZE, WorldSample, generate, sample_id, samples
from edgevl.data.world.scene import is_heldout, render
from edgevl.data.world.sheet import contact_sheet
from edgevl.data.world.tasks import HEADLINE_TASK, ZeroShotTask, get_task, tasks
from edgevl.data.world.vocab import (
    BACKGROUNDS,
    COLOR_NAMES,
    COLORS,
    HELDOUT_COMBOS,
    POSITION_NAMES,
    RELATIONS,
    SHAPES,
    SIZE_NAMES,
    SPLITS,
    TEXTURES,
)
from edgevl.data.world.writers import CAPTION_KINDS, FORMATS, encode_png, make

__all__ = [
    "BACKGROUNDS",
    "CAPTION_KINDS",
    "COLORS",
    "COLOR_NAMES",
    "DEFAULT_NOISE",
    "DEFAULT_SIZE",
    "FORMATS",
    "HEADLINE_TASK",
    "HELDOUT_COMBOS",
    "N_CLEAN_CAPTIONS",
    "POSITION_NAMES",
    "RELATIONS",
    "SHAPES",
    "SIZE_NAMES",
    "SPLITS",
    "TEXTURES",
    "WorldSample",
    "ZeroShotTask",
    "clean_captions",
    "contact_sheet",
    "encode_png",
    "generate",
    "get_task",
    "is_heldout",
    "make",
    "noisy_caption",
    "render",
    "sample_id",
    "samples",
    "tasks",
]
