"""Caption attribute accuracy: hand-written captions (right and wrong) against world labels, and the world's own
clean captions, which must all parse to their scene's dominant object."""

from __future__ import annotations

import pytest

from edgevl.data.world import generate, samples
from edgevl.errors import DataError
from edgevl.eval.captioning import CaptionAttributes, attribute_accuracy, parse_caption


def scene(color: str, shape: str, n_objects: int = 1, others: tuple[tuple[str, str], ...] = ()) -> dict:
    """World-style labels: a dominant object and `others` (the parser reads only objects[0] and n_objects)."""
    objects = [{"color": c, "shape": s} for c, s in ((color, shape), *others)]
    return {"n_objects": n_objects, "objects": objects}


@pytest.mark.parametrize("text, expected", [
    ("a red star.", ("red", "star", None)),
    ("there is a large striped orange hexagon in the top right corner of the image.", ("orange", "hexagon", None)),
    ("the biggest of three shapes is a blue circle.", ("blue", "circle", 3)),
    ("three shapes: a large red star, a small blue circle and a green square.", ("red", "star", 3)),
    ("a dotted pink cross to the left of a small white square.", ("pink", "cross", None)),
    ("a single yellow triangle on a grid background.", ("yellow", "triangle", 1)),
    ("only one shape, a checkered brown pentagon.", ("brown", "pentagon", 1)),
    ("a green diamond alone at the top.", ("green", "diamond", 1)),
    ("Two Red Stars on a plain background", ("red", "star", None)),  # plural; 'two stars' is not a scene count
    ("a picture of 4 objects: crosses everywhere, purple", ("purple", "cross", 4)),
    ("#design IMG_2041.jpg hexagon medium purple and blue cross", ("purple", "hexagon", None)),
    ("a violet rhombus next to a crimson disc.", ("purple", "diamond", None)),  # synonyms of the vocab
    ("a round golden shape", ("yellow", "circle", None)),
    ("something black", ("black", None, None)),
    ("free download stock photo", (None, None, None)),
    ("", (None, None, None)),
])
def test_parse_caption(text: str, expected: tuple) -> None:
    assert parse_caption(text) == CaptionAttributes(*expected)


def test_accuracy_scores_right_and_wrong_captions() -> None:
    captions = [
        "a red star.",                                    # right
        "a small blue circle next to a large red star.",  # names the distractor first: both wrong
        "a red circle.",                                  # right colour, wrong shape
        "the biggest of two shapes is a green star.",     # wrong colour, right shape; right count
        "the biggest of four shapes is a red star.",      # right; wrong count
        "a star.",                                        # no colour: colour wrong
    ]
    scenes = [scene("red", "star")] * 3 + [scene("red", "star", 2, (("blue", "circle"),))] * 2 + [scene("red", "star")]
    scores = attribute_accuracy(captions, scenes)
    assert scores == pytest.approx({"color_acc": 3 / 6, "shape_acc": 4 / 6, "color_shape_acc": 2 / 6,
                                    "count_stated": 2 / 6, "count_acc": 1 / 2})


def test_accuracy_without_any_stated_count_has_no_count_acc() -> None:
    scores = attribute_accuracy(["a red star.", "a blue star."], [scene("red", "star"), scene("red", "star")])
    assert scores == {"color_acc": 0.5, "shape_acc": 1.0, "color_shape_acc": 0.5, "count_stated": 0.0}


def test_bad_inputs_are_named() -> None:
    with pytest.raises(DataError, match="one scene per caption"):
        attribute_accuracy(["a red star."], [])
    with pytest.raises(DataError, match="one scene per caption"):
        attribute_accuracy([], [])
    with pytest.raises(DataError, match="world scene"):
        attribute_accuracy(["a red star."], [{"objects": []}])


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_clean_world_caption_scores_right(split: str) -> None:
    """Golden data: the world's 5 clean captions per image name the dominant object first and state only true
    counts, so they score 100 % on every attribute they state."""
    data = list(samples(200, split, seed=3))
    captions = [c for s in data for c in s.captions]
    scores = attribute_accuracy(captions, [s.labels for s in data for _ in s.captions])
    assert scores["color_shape_acc"] == scores["count_acc"] == 1.0
    assert 0.2 < scores["count_stated"] < 0.6  # the count and biggest templates, and 'alone'


def test_noisy_captions_score_as_their_noise_outcome() -> None:
    """A one-object noisy caption names its colour wrongly exactly when the noise model made it wrong or dropped
    it (no other object can lend a colour word)."""
    for i in range(300):
        s = generate(i, noise=0.5)
        if s.labels["n_objects"] == 1:
            right = attribute_accuracy([s.noisy], [s.labels])["color_acc"] == 1.0
            assert right == (s.noisy_outcome["color"] == "kept"), s.noisy
