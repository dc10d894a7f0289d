"""The closed vocabulary of the procedural world: shapes, colours, sizes, textures, places, relations.

Every word a caption can use for an attribute lives here, so captions, tasks and tests share one source.
`HELDOUT_COMBOS` lists the (color, shape) pairs that only the `heldout` split ever shows.
"""

from __future__ import annotations

# Bumped whenever the same (split, seed, index) would draw a different scene; recorded in every world.json.
# 2: a dominant object (>= 3x the pixels of any other, never touched) replaced "the largest by one size class".
GRAMMAR_VERSION = 2

SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "star", "cross")

# name -> RGB; saturated, mutually distinct hues plus black and white (backgrounds are muted mid tones)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "blue": (35, 75, 225),
    "purple": (135, 50, 185),
    "pink": (250, 130, 190),
    "brown": (120, 70, 30),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}
COLOR_NAMES = tuple(COLORS)

# name -> object diameter as a fraction of the image side: the dominant object is medium or large, every other
# object small (made smaller still where needed so that the dominant one covers >= 3x its pixels)
SIZES: dict[str, float] = {"small": 0.2, "medium": 0.38, "large": 0.48}
SIZE_NAMES = tuple(SIZES)

TEXTURES = ("solid", "striped", "dotted", "checkered")
BACKGROUNDS = ("plain", "gradient", "grainy", "grid")

# 3x3 grid cells (row, col) -> the phrase used after "in the" / "at the"
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
POSITION_NAMES = tuple(POSITIONS.values())

# Other words free text may use for a colour or shape (the world's own captions use only the names above);
# caption parsers map them to the names. Plurals are parsed from the names ('stars', 'crosses').
COLOR_SYNONYMS: dict[str, str] = {
    "scarlet": "red", "crimson": "red", "gold": "yellow", "golden": "yellow", "lime": "green", "navy": "blue",
    "violet": "purple", "lilac": "purple", "magenta": "pink", "tan": "brown", "chocolate": "brown",
}
SHAPE_SYNONYMS: dict[str, str] = {
    "circular": "circle", "disc": "circle", "disk": "circle", "round": "circle",
    "box": "square", "triangular": "triangle", "rhombus": "diamond", "lozenge": "diamond",
    "pentagonal": "pentagon", "hexagonal": "hexagon", "plus": "cross",
}

RELATIONS = ("left of", "right of", "above", "below", "next to")
COUNT_WORDS = ("one", "two", "three", "four")
MAX_OBJECTS = len(COUNT_WORDS)

# One held-out colour per shape, all colours distinct: each shape and colour is still seen in training,
# only these pairings are new at test time (compositional generalisation).
HELDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "triangle"),
        ("green", "circle"),
        ("blue", "star"),
        ("yellow", "square"),
        ("purple", "hexagon"),
        ("orange", "diamond"),
        ("pink", "cross"),
        ("white", "pentagon"),
    }
)

SPLITS = ("train", "val", "test", "heldout")

# Web alt-text junk for the noisy captions; none of these contain an attribute word.
JUNK_PHRASES = (
    "free download",
    "best price",
    "stock photo",
    "high quality",
    "wallpaper",
    "vector art",
    "clipart",
    "hd",
    "new",
    "sale",
    "buy now",
    "royalty free",
    "png",
    "illustration",
    "icon set",
    "for kids",
    "cheap",
    "4k",
)
HASHTAGS = ("#art", "#design", "#graphic", "#minimal", "#abstract", "#pattern", "#geometry", "#shapes")
FILENAME_STEMS = ("IMG_", "DSC", "image", "photo-", "shape_", "untitled")
FILENAME_EXTS = (".jpg", ".png", ".jpeg", ".webp")
