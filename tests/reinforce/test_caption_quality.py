"""The degenerate-caption rules on real captioner failures and on normal captions."""

from __future__ import annotations

import pytest

from edgevl.reinforce.caption_quality import degenerate_reason


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("...", "empty"),
    (" , ; ! ", "empty"),
    ("a 2 2 2 2 2 2", "dominant_token"),
    ("2 2 2 2", "dominant_token"),
    ("a dog dog dog on a red mat", "repeated_token"),
    ("a man a man a man a man", "repeated_ngram"),
    ("photo of a cat a cat a cat", "repeated_ngram"),
    ("on the left on the left on the left side", "repeated_ngram"),
])
def test_degenerate(text, reason):
    assert degenerate_reason(text) == reason


@pytest.mark.parametrize("text", [
    "a red star and a blue circle on a gray background",
    "two small green squares",
    "a dog",
    "a man and a man",
    "a very very small star",
    "a cat a cat",
    "3 3 red stars",
])
def test_normal(text):
    assert degenerate_reason(text) is None
