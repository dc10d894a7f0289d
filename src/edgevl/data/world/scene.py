"""Scene sampling and rendering: structured labels from a per-sample RNG, then a PIL drawing of them.

Labels are plain JSON-able dicts. objects[0] is the dominant object: medium or large, at least MIN_AREA_RATIO
times the drawn area of every other (small) object, which all stand apart from it and from each other, so a
person can always tell which object the headline task asks about. Rendering pastes precomputed colour/texture
tiles through a cached shape mask onto a precomputed background, which keeps a 64x64 image under a millisecond.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from edgevl.data.world.vocab import (
    BACKGROUNDS,
    COLOR_NAMES,
    COLORS,
    HELDOUT_COMBOS,
    MAX_OBJECTS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPLITS,
    TEXTURES,
)
from edgevl.errors import DataError

Labels = dict[str, Any]

# muted mid-tone backgrounds so black, white and every hue stay visible
_BACKGROUND_TINTS = (
    (128, 128, 128),
    (152, 142, 122),
    (110, 124, 140),
    (138, 150, 128),
    (100, 100, 112),
    (165, 160, 150),
    (122, 110, 128),
    (138, 122, 110),
)
_ALLOWED_COMBOS = tuple((c, s) for c in COLOR_NAMES for s in SHAPES if (c, s) not in HELDOUT_COMBOS)
_HELDOUT_SORTED = tuple(sorted(HELDOUT_COMBOS))
_PLACEMENT_TRIES = 12
DOMINANT_SIZES = ("medium", "large")  # the dominant object's sizes; every other object is small
MIN_AREA_RATIO = 3.0  # the dominant object covers at least 3x the pixels of any other object
MIN_DISTRACTOR = 0.1  # the smallest distractor diameter, as a fraction of the image side
OBJECT_GAP = 1 / 32  # the least gap between objects' boxes, as a fraction of the image side (2 px at 64)


def sample_rng(seed: int, split: str, index: int, stream: str) -> random.Random:
    """The RNG for one stream ('scene', 'captions', 'noisy') of sample `index` of (split, seed)."""
    key = f"edgevl-world/{seed}/{split}/{index}/{stream}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big"))


def check_split(split: str) -> None:
    """Raise DataError naming the split unless it is one of SPLITS."""
    if split not in SPLITS:
        raise DataError(f"unknown world split {split!r}; choose from {list(SPLITS)}")


def is_heldout(labels: Labels) -> bool:
    """True when any object of the scene has a held-out (color, shape) combination."""
    return any((o["color"], o["shape"]) in HELDOUT_COMBOS for o in labels["objects"])


def _relation(a: tuple[int, int], b: tuple[int, int]) -> str:
    """A true spatial relation of the object in cell `a` relative to the one in cell `b` (row, col)."""
    (ra, ca), (rb, cb) = a, b
    if ra == rb:
        return "left of" if ca < cb else "right of"
    if ca == cb:
        return "above" if ra < rb else "below"
    if abs(ra - rb) == 1 and abs(ca - cb) == 1:
        return "next to"
    return "left of" if ca < cb else "right of"


def _overlaps(a: list[int], b: list[int], gap: int = 0) -> bool:
    """Whether boxes `a` and `b` ([x0, y0, x1, y1)) come closer than `gap` pixels."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _box(rng: random.Random, cell: tuple[int, int], diameter: int, size: int, jitter: float) -> list[int]:
    """A square box of `diameter` whose centre is jittered by up to `jitter` cell sides inside `cell`, kept
    inside the image."""
    cell_side, half = size / 3, diameter / 2
    cx = (cell[1] + 0.5 + rng.uniform(-jitter, jitter)) * cell_side
    cy = (cell[0] + 0.5 + rng.uniform(-jitter, jitter)) * cell_side
    x0 = round(min(max(cx, half), size - half) - half)
    y0 = round(min(max(cy, half), size - half) - half)
    return [x0, y0, x0 + diameter, y0 + diameter]


def _distractor_diameter(rng: random.Random, shape: str, size: int, dominant_area: int) -> int | None:
    """A distractor's diameter near the small size whose drawn area is at most 1/MIN_AREA_RATIO of the dominant
    object's, or None when even the smallest legible one is too large (only at tiny image sizes)."""
    diameter = round(SIZES["small"] * size * rng.uniform(0.9, 1.1))
    smallest = max(3, round(MIN_DISTRACTOR * size))
    while diameter >= smallest:
        if MIN_AREA_RATIO * mask_area(shape, diameter) <= dominant_area:
            return diameter
        diameter -= 1
    return None


def _place_distractor(rng: random.Random, cells: list[tuple[int, int]], diameter: int, size: int,
                      taken: list[list[int]]) -> tuple[tuple[int, int], list[int]] | None:
    """The first (cell, box) of `cells`, in order, where a box fits at least OBJECT_GAP pixels away from every
    box in `taken`; None when no tried position fits."""
    gap = max(1, round(OBJECT_GAP * size))
    for cell in cells:
        for _ in range(_PLACEMENT_TRIES):
            box = _box(rng, cell, diameter, size, jitter=0.35)
            if not any(_overlaps(box, t, gap) for t in taken):
                return cell, box
    return None


def sample_labels(rng: random.Random, split: str, size: int, max_objects: int = MAX_OBJECTS) -> Labels:
    """Draw one scene: a dominant object (objects[0], medium or large) and up to `max_objects` - 1 small
    distractors, each in its own 3x3 cell, apart from one another and at most 1/MIN_AREA_RATIO of its area."""
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise DataError(f"max_objects must be in [1, {MAX_OBJECTS}], got {max_objects}")
    n = rng.randint(1, max_objects)
    cells = rng.sample(sorted(POSITIONS), len(POSITIONS))
    color, shape = rng.choice(_HELDOUT_SORTED if split == "heldout" else _ALLOWED_COMBOS)
    size_name = rng.choice(DOMINANT_SIZES)
    diameter = max(4, round(SIZES[size_name] * size * rng.uniform(0.95, 1.05)))
    dominant = _object(rng, color, shape, size_name, cells[0], _box(rng, cells[0], diameter, size, jitter=0.2))
    objects, free = [dominant], cells[1:]
    dominant_area = mask_area(shape, diameter)
    for _ in range(n - 1):
        color, shape = rng.choice(_ALLOWED_COMBOS)
        small = _distractor_diameter(rng, shape, size, dominant_area)
        placed = None if small is None else _place_distractor(rng, free, small, size, [o["bbox"] for o in objects])
        if placed is None:  # no room for a clearly smaller, separate object: the scene has one object fewer
            continue
        cell, box = placed
        free.remove(cell)
        objects.append(_object(rng, color, shape, "small", cell, box))
    relation = None
    if len(objects) >= 2:
        relation = {"subject": 0, "relation": _relation(tuple(objects[0]["cell"]), tuple(objects[1]["cell"])),
                    "object": 1}
    return {
        "n_objects": len(objects),
        "background": rng.choice(BACKGROUNDS),
        "background_tint": rng.randrange(len(_BACKGROUND_TINTS)),
        "objects": objects,
        "relation": relation,
    }


def _object(rng: random.Random, color: str, shape: str, size_name: str, cell: tuple[int, int],
            box: list[int]) -> dict[str, Any]:
    """One object's labels (its texture drawn here)."""
    return {"shape": shape, "color": color, "size": size_name, "texture": rng.choice(TEXTURES),
            "position": POSITIONS[cell], "cell": list(cell), "bbox": box}


# ------------------------------------------------------------------------------------------- drawing
def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Outline of `shape` inside the unit circle (y down), as (x, y) points."""

    def ring(k: int, start_deg: float, radius: float = 1.0) -> list[tuple[float, float]]:
        return [
            (radius * math.cos(math.radians(start_deg + 360 * i / k)),
             radius * math.sin(math.radians(start_deg + 360 * i / k)))
            for i in range(k)
        ]

    if shape == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if shape == "triangle":
        return [(x, y + 0.15) for x, y in ring(3, -90)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.65, 0.0), (0.0, 1.0), (-0.65, 0.0)]
    if shape == "pentagon":
        return ring(5, -90)
    if shape == "hexagon":
        return ring(6, 0)
    if shape == "star":
        outer, inner = ring(5, -90), ring(5, -54, 0.45)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a = 0.32
        return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
                (-1, -a), (-a, -a)]
    raise DataError(f"unknown shape {shape!r}; choose from {list(SHAPES)}")


_UNIT_POLYGONS = {s: _unit_polygon(s) for s in SHAPES if s != "circle"}


@functools.lru_cache(maxsize=4096)
def shape_mask(shape: str, diameter: int) -> Image.Image:
    """The 'L' mask (255 inside) of `shape` drawn in a `diameter` x `diameter` box; shared, do not modify."""
    mask = Image.new("L", (diameter, diameter), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((0, 0, diameter - 1, diameter - 1), fill=255)
    else:
        c, r = (diameter - 1) / 2, diameter / 2
        draw.polygon([(c + r * px, c + r * py) for px, py in _UNIT_POLYGONS[shape]], fill=255)
    return mask


@functools.lru_cache(maxsize=4096)
def mask_area(shape: str, diameter: int) -> int:
    """Pixels covered by `shape` drawn at `diameter`."""
    return int(np.count_nonzero(np.asarray(shape_mask(shape, diameter))))


def object_masks(labels: Labels, size: int) -> list[np.ndarray]:
    """Boolean [size, size] mask of the pixels each object shows in the rendered image (objects[0] is on top)."""
    covered = np.zeros((size, size), dtype=bool)
    masks = []
    for obj in labels["objects"]:  # front to back: an object shows where nothing in front of it is drawn
        x0, y0, x1, y1 = obj["bbox"]
        full = np.zeros((size, size), dtype=bool)
        full[y0:y1, x0:x1] = np.asarray(shape_mask(obj["shape"], x1 - x0)) > 0
        masks.append(full & ~covered)
        covered |= full
    return masks


def _pattern_shade(rgb: tuple[int, int, int]) -> np.ndarray:
    """Secondary texture colour: darker for light colours, lighter for very dark ones."""
    base = np.array(rgb, dtype=np.float32)
    if base.mean() < 60:
        return base * 0.45 + 255 * 0.55
    return base * (0.72 if base.mean() > 200 else 0.55)  # white stays light enough to read as white


@functools.lru_cache(maxsize=8)
def _tiles(size: int) -> dict[tuple[str, str], Image.Image]:
    """Full-canvas RGB tiles for every (color, pattern texture); render cuts an object's box out of one."""
    yy, xx = np.mgrid[0:size, 0:size]
    stripe = max(2, size // 16)
    check = max(2, size // 12)
    period = max(4, size // 10)
    dot_r2 = (period * 0.3) ** 2
    patterns = {
        "striped": ((xx + yy) // stripe) % 2 == 1,
        "checkered": ((xx // check) + (yy // check)) % 2 == 1,
        "dotted": ((xx % period) - period / 2 + 0.5) ** 2 + ((yy % period) - period / 2 + 0.5) ** 2 <= dot_r2,
    }
    tiles = {}
    for name, rgb in COLORS.items():
        base = np.array(rgb, dtype=np.float32)
        shade = _pattern_shade(rgb)
        for texture, pattern in patterns.items():
            arr = np.where(pattern[..., None], shade, base)
            tiles[(name, texture)] = Image.fromarray(np.rint(arr).astype(np.uint8), "RGB")
    return tiles


@functools.lru_cache(maxsize=8)
def _backgrounds(size: int) -> dict[tuple[str, int], Image.Image]:
    """Background images for every (kind, tint); fixed, so only the per-sample choice is random."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    grain = np.random.default_rng(12345).normal(0.0, 14.0, size=(size, size, 1)).astype(np.float32)
    spacing = max(4, size // 8)
    lines = ((np.arange(size) % spacing) == 0)
    grid = (lines[:, None] | lines[None, :])[..., None]
    out = {}
    for t, tint in enumerate(_BACKGROUND_TINTS):
        base = np.array(tint, dtype=np.float32)
        ramp = (yy if t % 2 == 0 else xx)[..., None]
        variants = {
            "plain": np.broadcast_to(base, (size, size, 3)),
            "gradient": base * (0.75 + 0.5 * ramp),
            "grainy": base + grain,
            "grid": np.where(grid, base * 0.78, base),
        }
        for kind in BACKGROUNDS:
            arr = np.clip(np.rint(variants[kind]), 0, 255).astype(np.uint8)
            out[(kind, t)] = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    return out


def render(labels: Labels, size: int) -> Image.Image:
    """Draw the scene described by `labels` as an RGB image of size x size."""
    canvas = _backgrounds(size)[(labels["background"], labels["background_tint"])].copy()
    tiles = _tiles(size)
    for obj in reversed(labels["objects"]):  # the dominant object (index 0) last, on top
        box = tuple(obj["bbox"])
        mask = shape_mask(obj["shape"], box[2] - box[0])
        if obj["texture"] == "solid":
            canvas.paste(COLORS[obj["color"]], box, mask)
        else:
            canvas.paste(tiles[(obj["color"], obj["texture"])].crop(box), box, mask)
    return canvas
