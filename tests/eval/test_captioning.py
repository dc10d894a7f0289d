"""Caption metrics: lightcap spec §7.3 vectors, equality with pycocoevalcap 1.2 on random corpora, fast CiderD."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevl.cli import main
from edgevl.errors import DataError, EdgevlError
from edgevl.eval.captioning import (
    CiderD,
    MetricUnavailableError,
    bleu,
    cider_d,
    evaluate_captions,
    load_references,
    meteor,
    ptb_tokenize,
    rouge_l,
)
from edgevl.eval.captioning.meteor import find_meteor_command
from edgevl.eval.captioning.ptb_tokenizer import PUNCTUATION_TOKENS

# ------------------------------------------------------------------------------------ spec §7.3 vectors
GTS_1 = {
    1: [
        "a man is riding a horse on the beach",
        "a person rides a brown horse along the shore",
        "a man on a horse near the ocean",
    ],
    2: ["two cats sleeping on a couch", "a pair of cats asleep on a sofa", "two cats lying on a couch together"],
    3: [
        "a plate of food with broccoli and rice",
        "a dish of rice and broccoli on a table",
        "a white plate holding rice and vegetables",
    ],
}
RES_1 = {1: "a man riding a horse on the beach", 2: "two cats laying on a couch", 3: "a plate of rice and broccoli"}
GTS_2 = {1: ["dog", "a dog"], 2: ["a cat on a mat", "cat"]}
RES_2 = {1: "dog", 2: "cat"}


def test_cider_d_spec_vectors():
    score, per_image = cider_d(GTS_1, RES_1)
    assert score == pytest.approx(2.997391002475999, abs=1e-12)
    assert per_image == pytest.approx([3.401565, 2.546416, 3.044192], abs=1e-6)
    score, per_image = cider_d(GTS_2, RES_2)
    assert score == pytest.approx(2.155320669917586, abs=1e-12)
    assert per_image == pytest.approx([2.482759, 1.827882], abs=1e-6)


def test_bleu_and_rouge_spec_vectors():
    corpus, per_image = bleu(GTS_1, RES_1)
    assert corpus == pytest.approx([0.903668, 0.841369, 0.727345, 0.604009], abs=1e-6)
    assert [len(p) for p in per_image] == [3, 3, 3, 3]
    assert rouge_l(GTS_1, RES_1)[0] == pytest.approx(0.806848, abs=1e-6)


@pytest.mark.parametrize("gts,res", [(GTS_1, RES_1), (GTS_2, RES_2)])
def test_fast_cider_matches_spec_vectors(gts, res):
    scorer = CiderD(gts.values())
    fast = scorer([res[k] for k in gts], [gts[k] for k in gts])
    assert fast == pytest.approx(cider_d(gts, res)[1], abs=1e-12)


def test_res_accepts_one_item_lists_like_pycocoevalcap():
    assert cider_d(GTS_1, {k: [v] for k, v in RES_1.items()}) == cider_d(GTS_1, RES_1)


# ------------------------------------------------------------------------------------ PTB tokenizer
# Expected outputs were produced by coco-caption's PTBTokenizer (stanford-corenlp-3.4.1.jar, Java 17) + filter.
PTB_CASES = [
    ("A person rides a brown horse, along the shore!", "a person rides a brown horse along the shore"),
    (
        "A man (in a red shirt) holds a [sign] {here}.",
        "a man -lrb- in a red shirt -rrb- holds a -lsb- sign -rsb- -lcb- here -rcb-",
    ),
    ("\"Hello,\" she said -- it's the man's dog; don't go... ok?", "hello she said it 's the man 's dog do n't go ok"),
    ("The U.S. team won 3.5 points & $100 at 5:30 p.m. etc.", "the u.s. team won 3.5 points & $ 100 at 5:30 p.m. etc."),
    ("A t-shirt's price: 1/2 off -- cannot gonna wanna", "a t-shirt 's price 1/2 off can not gon na wan na"),
    ("Two dogs' toys aren't here 'cause I'm", "two dogs toys are n't here 'cause i 'm"),
    (" Lots   of   spaces\tand tabs ", "lots of spaces and tabs"),
    ("...", ""),
    ("A DOG'S LIFE. Mr. Smith vs. Dr. Who", "a dog 's life mr. smith vs. dr. who"),
    ("1,000 people, 2.5kg 10% 3-4 #1 @home", "1,000 people 2.5 kg 10 % 3-4 # 1 @home"),
    ("What?! No!! Yes?? wait...what", "what ?! no !! yes ?? wait what"),
    ("en \u2013 dash em\u2014dash a-b-c \u201cquoted\u201d \u2018single\u2019", "en dash em dash a-b-c quoted single"),
    ("o'clock the dogs' the dogs'. 'tis 's", "o'clock the dogs the dogs 't is 's"),
    ("An image of a dog.", "an image of a dog"),
    ("a dog. a cat. A Dog. The end", "a dog a cat a dog the end"),
    ("A. Smith no. 5 p. 3 fig. 2 St. Louis", "a. smith no. 5 p. 3 fig. 2 st. louis"),
    ("yahoo! comma,word semi;colon colon:word", "yahoo comma word semi colon colon word"),
    ("rock'n'roll it's' x's", "rock 'n' roll it 's x 's"),
    ("½ of a pizza; can't won't", "1/2 of a pizza ca n't wo n't"),
]


@pytest.mark.parametrize("text,expected", PTB_CASES)
def test_ptb_tokenizer_matches_recorded_java_output(text, expected):
    assert ptb_tokenize(text) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_ptb_tokenizer_never_fails_and_drops_punctuation(text):
    tokens = ptb_tokenize(text).split(" ")
    assert ptb_tokenize(text) == ptb_tokenize(text).lower()
    assert not set(tokens) & (PUNCTUATION_TOKENS - {""}) and ("" not in tokens or tokens == [""])


def test_ptb_tokenizer_matches_live_java_on_coco_like_captions():
    if shutil.which("java") is None:
        pytest.skip("no Java")
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    rng = random.Random(3)
    words = "A man's dog, woman two cats (sitting) on the couch. it's red-and-white; don't look! Mr. 3.5".split()
    captions = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(150)]
    captions += [text for text, _ in PTB_CASES]
    java = ptb.PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert [ptb_tokenize(c) for c in captions] == [java[i][0] for i in range(len(captions))]


# ------------------------------------------------------------------------------------ pycocoevalcap equality
def _random_corpus(rng: random.Random, num_images: int) -> tuple[dict, dict]:
    vocab = ["a", "the", "dog", "cat", "on", "of", "man", "red", "in", "is", "two", "sitting"]

    def sentence() -> str:
        length = 0 if rng.random() < 0.05 else rng.choice([1, 2, rng.randint(3, 16)])
        words = vocab[: rng.randint(2, len(vocab))]  # small vocabularies force repeated words and n-grams
        return " ".join(rng.choice(words) for _ in range(length))

    gts = {f"img{i}": [sentence() for _ in range(rng.randint(1, 7))] for i in range(num_images)}
    res = {key: [sentence()] for key in gts}
    return gts, res


CORPORA = [_random_corpus(random.Random(seed), random.Random(seed).choice([1, 2, 3, 5, 10, 25])) for seed in range(80)]


def test_bleu_equals_pycocoevalcap():
    Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
    for gts, res in CORPORA:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its counts
            expected, expected_images = Bleu(4).compute_score(gts, res)
        corpus, per_image = bleu(gts, res)
        assert corpus == pytest.approx(expected, abs=1e-6, rel=0)
        for k in range(4):
            assert per_image[k] == pytest.approx(expected_images[k], abs=1e-6, rel=0)


def test_cider_d_and_fast_cider_equal_pycocoevalcap():
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    for gts, res in CORPORA:
        expected, expected_images = Cider().compute_score(gts, res)
        score, per_image = cider_d(gts, res)
        assert score == pytest.approx(expected, abs=1e-6, rel=0)
        assert per_image == pytest.approx(list(expected_images), abs=1e-6, rel=0)
        fast = CiderD(gts.values())([res[k][0] for k in gts], [gts[k] for k in gts])
        assert fast == pytest.approx(list(expected_images), abs=1e-6, rel=0)


def test_rouge_l_equals_pycocoevalcap():
    Rouge = pytest.importorskip("pycocoevalcap.rouge.rouge").Rouge
    for gts, res in CORPORA:
        expected, expected_images = Rouge().compute_score(gts, res)
        score, per_image = rouge_l(gts, res)
        assert score == pytest.approx(expected, abs=1e-6, rel=0)
        assert per_image == pytest.approx(list(expected_images), abs=1e-6, rel=0)


# ------------------------------------------------------------------------------------ fast CiderD
def test_fast_cider_equals_reference_on_random_corpora():
    for gts, res in CORPORA:
        fast = CiderD(gts.values())([res[k][0] for k in gts], [gts[k] for k in gts])
        assert fast == pytest.approx(cider_d(gts, res)[1], abs=1e-9, rel=0)


def _slow_cider(hyp: str, refs: list[str], corpus: list[list[str]]) -> float:
    """CIDEr-D straight from the spec's formula with document frequencies from `corpus`."""

    def grams(s: str) -> dict:
        w = s.split()
        out: dict = {}
        for k in range(1, 5):
            for i in range(len(w) - k + 1):
                out[tuple(w[i : i + k])] = out.get(tuple(w[i : i + k]), 0) + 1
        return out

    def df(g) -> int:
        return sum(any(g in grams(r) for r in image) for image in corpus)

    def vec(s: str) -> list[dict]:
        return [{g: c * (math.log(len(corpus)) - math.log(max(1, df(g)))) for g, c in grams(s).items() if len(g) == k}
                for k in range(1, 5)]  # fmt: skip

    total = 0.0
    h = vec(hyp)
    for ref in refs:
        r = vec(ref)
        delta = max(len(hyp.split()) - 1, 0) - max(len(ref.split()) - 1, 0)
        for hv, rv in zip(h, r):
            dot = sum(min(v, rv.get(g, 0.0)) * rv.get(g, 0.0) for g, v in hv.items())
            norms = math.sqrt(sum(v * v for v in hv.values())) * math.sqrt(sum(v * v for v in rv.values()))
            total += (dot / norms if norms else dot) * math.exp(-(delta**2) / 72) / 4
    return total / len(refs) * 10


def test_fast_cider_with_an_external_corpus_matches_the_formula():
    # references outside the corpus, unseen words, shared reference lists (as SCST passes them)
    corpus = [["a dog on a red couch", "the dog is sitting"], ["two cats on a mat"], ["a man riding a horse"]]
    refs_a = ["a dog sitting on a couch", "a brown dog on a sofa"]
    refs_b = ["two cats sleeping", "cats on a zebra mat"]
    hyps = ["a dog on a couch", "a dog dog dog", "", "two cats on a zebra mat", "zebra zebra cats", "cats"]
    references = [refs_a, refs_a, refs_a, refs_b, refs_b, list(refs_b)]
    scores = CiderD(corpus)(hyps, references)
    expected = [_slow_cider(h, r, corpus) for h, r in zip(hyps, references)]
    assert scores == pytest.approx(expected, abs=1e-9)
    assert scores[0] > 0 and scores[2] == 0


def test_fast_cider_accepts_token_id_sequences():
    gts, res = CORPORA[7]
    vocab: dict[str, int] = {}

    def ids(s: str) -> list[int]:
        return [vocab.setdefault(w, len(vocab) + 1000) for w in s.split()]

    corpus_ids = [[ids(r) for r in refs] for refs in gts.values()]
    fast = CiderD(corpus_ids)([ids(res[k][0]) for k in gts], corpus_ids)
    assert fast == pytest.approx(cider_d(gts, res)[1], abs=1e-9)


def test_fast_cider_input_errors():
    scorer = CiderD([["a dog"]])
    with pytest.raises(DataError, match="2 hypotheses but 1 reference"):
        scorer(["a", "b"], [["a dog"]])
    with pytest.raises(DataError, match="empty reference set"):
        scorer(["a"], [[]])
    with pytest.raises(DataError, match="non-empty reference corpus"):
        CiderD([])
    assert scorer([], []).shape == (0,)


# ------------------------------------------------------------------------------------ evaluate_captions / CLI
def _raw_inputs():
    """§7.3 set 1 with capitals and punctuation, in COCO annotation and results formats."""
    annotations = [
        {"image_id": k, "id": i * 10 + j, "caption": c[0].upper() + c[1:] + "."}
        for i, (k, caps) in enumerate(GTS_1.items())
        for j, c in enumerate(caps)
    ]
    results = [{"image_id": k, "caption": c.capitalize() + "!"} for k, c in RES_1.items()]
    return annotations, results


def test_evaluate_captions_tokenizes_and_names_metrics_like_coco():
    annotations, results = _raw_inputs()
    gts: dict = {}
    for ann in annotations:
        gts.setdefault(ann["image_id"], []).append({"caption": ann["caption"]})
    gts[99] = [{"caption": "an image not in the results"}]
    scores = evaluate_captions(gts, results, use_meteor=False, per_image=True)
    assert scores["CIDEr"] == pytest.approx(2.997391002475999, abs=1e-12)
    assert [scores[f"Bleu_{k}"] for k in range(1, 5)] == pytest.approx(
        [0.903668, 0.841369, 0.727345, 0.604009], abs=1e-6
    )
    assert scores["ROUGE_L"] == pytest.approx(0.806848, abs=1e-6)
    assert scores["METEOR"] is None and scores["SPICE"] is None
    assert set(scores["unavailable"]) == {"METEOR", "SPICE"}
    assert scores["num_images"] == 3
    assert scores["per_image"][2]["CIDEr"] == pytest.approx(2.546416, abs=1e-6)


def test_evaluate_captions_bad_inputs():
    with pytest.raises(DataError, match="more than one caption"):
        evaluate_captions(GTS_1, [{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}])
    with pytest.raises(DataError, match="image 7 is in the results"):
        evaluate_captions(GTS_1, {7: "a dog"}, use_meteor=False)
    with pytest.raises(DataError, match="'image_id' and 'caption'"):
        evaluate_captions(GTS_1, [{"caption": "a"}])
    with pytest.raises(DataError, match="same images"):
        bleu(GTS_1, {1: "a"})
    with pytest.raises(DataError, match="exactly one hypothesis"):
        rouge_l({1: ["a"]}, {1: ["a", "b"]})


def test_meteor_reports_missing_java(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MetricUnavailableError, match="Java"):
        meteor(GTS_2, RES_2)
    scores = evaluate_captions(GTS_2, RES_2)
    assert scores["METEOR"] is None and "Java" in scores["unavailable"]["METEOR"]


@pytest.mark.slow
def test_meteor_spec_vector():
    try:
        find_meteor_command()
    except EdgevlError as exc:
        pytest.skip(str(exc))
    gts = {1: GTS_1[1][:2], 2: ["a cat"]}
    scores = evaluate_captions(gts, {1: RES_1[1], 2: "..."}, per_image=True)  # "..." tokenizes to ""
    assert scores["per_image"][1]["METEOR"] == pytest.approx(0.5177780700741892, abs=1e-9)
    assert scores["per_image"][2]["METEOR"] == 0.0
    assert isinstance(scores["METEOR"], float) and "METEOR" not in scores["unavailable"]


def test_cli_eval_captions_coco_and_karpathy_files(tmp_path, capsys):
    annotations, results = _raw_inputs()
    (tmp_path / "ann.json").write_text(json.dumps({"images": [], "annotations": annotations}))
    (tmp_path / "res.json").write_text(json.dumps(results))
    out = tmp_path / "scores.json"
    argv = ["eval-captions", "--results", str(tmp_path / "res.json"), "--no-meteor", "--output", str(out)]
    assert main([*argv, "--annotations", str(tmp_path / "ann.json")]) == 0
    assert "CIDEr    2.9974" in capsys.readouterr().out
    assert json.loads(out.read_text())["CIDEr"] == pytest.approx(2.997391002475999, abs=1e-12)

    karpathy = {
        "images": [
            {"cocoid": k, "split": "test", "sentences": [{"raw": c + ".", "tokens": c.split()} for c in caps]}
            for k, caps in GTS_1.items()
        ]
    }
    (tmp_path / "karpathy.json").write_text(json.dumps(karpathy))
    assert load_references(tmp_path / "karpathy.json")["2"] == [c + "." for c in GTS_1[2]]
    assert main([*argv, "--annotations", str(tmp_path / "karpathy.json")]) == 0
    assert json.loads(out.read_text())["Bleu_4"] == pytest.approx(0.604009, abs=1e-6)

    (tmp_path / "bad.json").write_text("{not json")
    assert main([*argv, "--annotations", str(tmp_path / "bad.json")]) == 2
    assert "invalid JSON" in capsys.readouterr().err


def test_scores_are_numpy_free_floats():
    scores = evaluate_captions(GTS_2, RES_2, use_meteor=False)
    assert all(type(scores[m]) is float for m in ("Bleu_1", "ROUGE_L", "CIDEr"))
    assert isinstance(CiderD(GTS_2.values())(["dog"], [GTS_2[1]]), np.ndarray)
