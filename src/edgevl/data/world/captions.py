"""Caption generators: clean reference captions in varied phrasing, and noisy web-style alt text.

Every clean caption names the dominant object's colour and shape, before any other object. The noisy caption
follows a documented noise model (docs/world.md) whose outcome is returned next to it, so the noise rate can be
measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from edgevl.data.world.vocab import (
    COLOR_NAMES,
    COUNT_WORDS,
    FILENAME_EXTS,
    FILENAME_STEMS,
    HASHTAGS,
    HELDOUT_COMBOS,
    JUNK_PHRASES,
    SHAPES,
)

Labels = dict[str, Any]
N_CLEAN_CAPTIONS = 5

# noise model: per dominant-object attribute (colour, shape), P(wrong) = WRONG * noise and P(dropped) = DROP * noise
WRONG_RATE = 0.3
DROP_RATE = 0.4

_PLACE = {
    "top left": "in the top left corner",
    "top": "at the top",
    "top right": "in the top right corner",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left corner",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}
_RELATION_PHRASE = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
    "next to": "next to",
}


def with_article(phrase: str) -> str:
    """'a red star' / 'an orange circle'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe(obj: dict[str, Any], size: bool = False, texture: bool = False) -> str:
    """Noun phrase for one object without article, e.g. 'large striped red star'."""
    words = []
    if size:
        words.append(obj["size"])
    if texture and obj["texture"] != "solid":
        words.append(obj["texture"])
    words += [obj["color"], obj["shape"]]
    return " ".join(words)


def _listing(labels: Labels, rng: random.Random) -> str:
    """'a large red star, a small blue circle and a green square' (every object, the dominant one first)."""
    objs = labels["objects"]
    parts = [with_article(describe(objs[0], size=len(objs) > 1 and rng.random() < 0.5))]
    parts += [with_article(describe(o, size=rng.random() < 0.3)) for o in objs[1:]]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _t_short(labels: Labels, rng: random.Random) -> str:
    return with_article(describe(labels["objects"][0])) + "."


def _t_place(labels: Labels, rng: random.Random) -> str:
    p = labels["objects"][0]
    return f"{with_article(describe(p, size=True, texture=True))} {_PLACE[p['position']]}."


def _t_count(labels: Labels, rng: random.Random) -> str:
    n = labels["n_objects"]
    if n == 1:
        background = with_article(labels["background"])
        return f"a single {describe(labels['objects'][0])} on {background} background."
    return f"{COUNT_WORDS[n - 1]} shapes: {_listing(labels, rng)}."


def _t_relation(labels: Labels, rng: random.Random) -> str:
    objs, rel = labels["objects"], labels["relation"]
    if rel is None:
        return f"{with_article(describe(objs[0]))} alone {_PLACE[objs[0]['position']]}."
    subject = with_article(describe(objs[rel["subject"]], texture=True))
    other = with_article(describe(objs[rel["object"]]))
    return f"{subject} {_RELATION_PHRASE[rel['relation']]} {other}."


def _t_there_is(labels: Labels, rng: random.Random) -> str:
    p = labels["objects"][0]
    return f"there is {with_article(describe(p, size=True))} {_PLACE[p['position']]} of the image."


def _t_background(labels: Labels, rng: random.Random) -> str:
    subject = with_article(describe(labels["objects"][0], texture=True))
    return f"{subject} on {with_article(labels['background'])} background."


def _t_biggest(labels: Labels, rng: random.Random) -> str:
    n, p = labels["n_objects"], labels["objects"][0]
    if n == 1:
        return f"only one shape, {with_article(describe(p, texture=True))}."
    return f"the biggest of {COUNT_WORDS[n - 1]} shapes is {with_article(describe(p))}."


def _t_picture(labels: Labels, rng: random.Random) -> str:
    lead = rng.choice(("a picture of", "an image of", "a drawing of", "a simple graphic of"))
    return f"{lead} {_listing(labels, rng)} on {with_article(labels['background'])} background."


_TEMPLATES: tuple[Callable[[Labels, random.Random], str], ...] = (
    _t_short,
    _t_place,
    _t_count,
    _t_relation,
    _t_there_is,
    _t_background,
    _t_biggest,
    _t_picture,
)


def clean_captions(labels: Labels, rng: random.Random, n: int = N_CLEAN_CAPTIONS) -> list[str]:
    """`n` correct captions from distinct templates, in random order."""
    return [template(labels, rng) for template in rng.sample(_TEMPLATES, n)]


def _outcome(noise: float, rng: random.Random) -> str:
    """'wrong', 'dropped' or 'kept' with probabilities WRONG_RATE*noise, DROP_RATE*noise and the rest."""
    u = rng.random()
    if u < WRONG_RATE * noise:
        return "wrong"
    return "dropped" if u < (WRONG_RATE + DROP_RATE) * noise else "kept"


def _mentioned(outcome: str, true: str, candidates: list[str], rng: random.Random) -> str | None:
    """The word the caption uses for an attribute: the true one, a wrong candidate, or none."""
    if outcome == "kept":
        return true
    return rng.choice([c for c in candidates if c != true]) if outcome == "wrong" else None


def _junk(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(JUNK_PHRASES)
    if kind == 1:
        return rng.choice(HASHTAGS)
    return f"{rng.choice(FILENAME_STEMS)}{rng.randrange(10000):04d}{rng.choice(FILENAME_EXTS)}"


def noisy_caption(labels: Labels, rng: random.Random, noise: float, allow_heldout: bool) -> tuple[str, dict]:
    """Web-style alt text for the scene and its noise outcome {'color', 'shape', 'mentioned_color', ...}.

    Colour and shape of the dominant object are each kept, replaced by a wrong value or dropped; size,
    texture, position and the other objects are dropped more often as `noise` grows; junk words, filenames and
    hashtags are added and the words may be shuffled. Unless `allow_heldout`, a wrong value is never chosen so
    that the mentioned (colour, shape) is a held-out combination: training text never names one either, and
    the outcome rates stay exactly those of the noise model.
    """
    p = labels["objects"][0]
    color_outcome, shape_outcome = _outcome(noise, rng), _outcome(noise, rng)
    color_if_kept = p["color"] if color_outcome == "kept" else None
    shape = _mentioned(shape_outcome, p["shape"], [s for s in SHAPES if allow_heldout or
                                                   (color_if_kept, s) not in HELDOUT_COMBOS], rng)
    color = _mentioned(color_outcome, p["color"], [c for c in COLOR_NAMES if allow_heldout or
                                                   (c, shape) not in HELDOUT_COMBOS], rng)
    keep = 1.0 - 0.8 * noise
    words = []
    if rng.random() < keep:
        words.append(p["size"])
    if p["texture"] != "solid" and rng.random() < keep:
        words.append(p["texture"])
    words += [w for w in (color, shape) if w]
    if rng.random() < keep:
        words += _PLACE[p["position"]].split()
    others = [o for o in labels["objects"][1:] if rng.random() < 0.6 * (1.0 - noise)]
    for o in others:
        words += ["and", o["color"], o["shape"]]
    if rng.random() < noise:
        rng.shuffle(words)
    for _ in range(sum(rng.random() < noise for _ in range(3))):
        words.insert(rng.choice((0, len(words))), _junk(rng))
    if not words:  # everything dropped: alt text is then just junk
        words.append(_junk(rng))
    text = " ".join(words)
    if rng.random() < 0.2 * noise:
        text = text.title()
    outcome = {
        "color": color_outcome,
        "shape": shape_outcome,
        "mentioned_color": color,
        "mentioned_shape": shape,
        "others_mentioned": len(others),
    }
    return text, outcome
