"""CLIP BPE tokenizer: parity with the reference fixtures and property tests on arbitrary unicode."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import edgevl
from edgevl.errors import EdgevlError
from edgevl.tokenizer import SimpleTokenizer, _reference_clean, clean_text

SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def cases(fixtures_dir):
    lines = (fixtures_dir / "tokenizer" / "cases.jsonl").read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line]


@pytest.fixture(scope="module")
def tok() -> SimpleTokenizer:
    return SimpleTokenizer()


def test_every_fixture_case_matches(cases, tok):
    assert len(cases) == 435
    mismatches = [
        c["text"] for c in cases if tok([c["text"]], c["context_length"])[0].tolist() != c["ids"]
    ]
    assert mismatches == []


def test_cleaning_matches_fixture(cases):
    assert [c["text"] for c in cases if clean_text(c["text"]) != c["clean"]] == []


def test_uncached_reference_path_matches_fixture(cases):
    ref = SimpleTokenizer(cache=False)
    for c in cases[::7]:
        assert ref([c["text"]], c["context_length"])[0].tolist() == c["ids"], c["text"]


def test_batch_equals_rows_and_dtype(cases, tok):
    texts = [c["text"] for c in cases if c["context_length"] == 77]
    batch = tok(texts)
    assert batch.dtype == torch.long and batch.shape == (len(texts), 77)
    expected = torch.tensor([c["ids"] for c in cases if c["context_length"] == 77])
    assert torch.equal(batch, expected)


def test_truncated_rows_end_with_eot(cases, tok):
    long = [c for c in cases if c["truncated"]]
    assert long
    for c in long:
        row = tok(c["text"], c["context_length"])[0]
        assert row[-1].item() == EOT and len(row) == c["context_length"]


def test_truncate_false_raises(tok):
    strict = SimpleTokenizer(truncate=False)
    with pytest.raises(EdgevlError, match="more than context_length"):
        strict("word " * 100)
    assert strict("a short caption").shape == (1, 77)


def test_empty_and_whitespace(tok):
    for text in ["", "   ", "\n\t"]:
        assert tok(text)[0, :3].tolist() == [SOT, EOT, 0]


def test_context_length_argument_and_get_tokenizer():
    t16 = edgevl.get_tokenizer(context_length=16)
    assert t16("a photo of a cat").shape == (1, 16)
    assert t16("a photo of a cat", context_length=8).shape == (1, 8)
    with pytest.raises(EdgevlError):
        SimpleTokenizer(context_length=1)


def test_bad_input_type(tok):
    with pytest.raises(EdgevlError, match="expects str"):
        tok(["ok", 3])  # type: ignore[list-item]


def test_decode_roundtrip(tok):
    ids = tok(["a red car parked next to a building", "café au lait 🐱"])
    assert tok.decode(ids) == ["a red car parked next to a building", "café au lait 🐱"]
    assert edgevl.decode(ids[0]) == "a red car parked next to a building"
    raw = tok.decode(ids[0, :4], skip_special_tokens=False)
    assert raw.startswith("<start_of_text>")
    with pytest.raises(EdgevlError, match="outside the vocabulary"):
        tok.decode([SOT, 50000])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_unicode_gives_valid_row(text):
    tok = edgevl.get_tokenizer()
    row = tok(text)[0]
    assert row.shape == (77,)
    assert row[0].item() == SOT
    assert int(row.min()) >= 0 and int(row.max()) < 49408
    # id 0 is both padding and the BPE symbol "!", so locate the end token rather than counting non-zeros
    eot_positions = (row == EOT).nonzero().flatten().tolist()
    assert eot_positions, "every row has an end token"
    assert torch.all(row[eot_positions[-1] + 1 :] == 0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120))
def test_ascii_fast_path_is_exact(text):
    assert clean_text(text) == _reference_clean(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_cached_equals_uncached(text):
    assert torch.equal(SimpleTokenizer()(text), SimpleTokenizer(cache=False)(text))
