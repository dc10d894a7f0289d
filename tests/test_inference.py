"""Batched embedding / zero-shot classification helpers and the `embed` / `classify` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import edgevl
from edgevl.cli import main
from edgevl.data.files import expand_image_paths
from edgevl.inference import classify_images, embed_images, embed_texts, save_embeddings

MODEL = "world-student-mci"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    for i in range(5):
        arr = np.random.default_rng(i).integers(0, 256, (30 + i, 41, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"{i}.png")
    (root / "sub").mkdir()
    Image.new("L", (9, 70), 128).save(root / "sub" / "grey.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_expand_and_embed_skips_bad_files(images, student_bundle):
    model, preprocess, _ = student_bundle
    paths = expand_image_paths([images])
    assert len(paths) == 7
    emb = embed_images(model, preprocess, paths, batch_size=4)
    assert emb.vectors.shape[0] == 6 == len(emb.keys)
    assert [k for k, _ in emb.skipped] == [str(images / "broken.jpg")]
    assert torch.allclose(emb.vectors.norm(dim=-1), torch.ones(6), atol=1e-5)
    # Batching does not change results.
    one_by_one = embed_images(model, preprocess, paths, batch_size=1)
    assert torch.allclose(one_by_one.vectors, emb.vectors, atol=1e-5)


def test_classify_ranks_by_probability(images, student_bundle):
    model, preprocess, tok = student_bundle
    labels = ["red circle", "blue square", "green triangle", "yellow star"]
    preds, skipped = classify_images(model, preprocess, tok, expand_image_paths([images]), labels, ["a {}."], top_k=3)
    assert len(preds) == 6 and len(skipped) == 1
    for p in preds:
        assert len(p.labels) == 3 and p.probs == sorted(p.probs, reverse=True)
        assert 0 < sum(p.probs) <= 1 + 1e-6


def test_save_roundtrip(tmp_path, student_bundle):
    model, _, tok = student_bundle
    emb = embed_texts(model, tok, ["a red circle", "two blue squares"])
    npy = save_embeddings(emb, tmp_path / "t.npy")
    assert np.allclose(np.load(npy), emb.vectors.numpy())
    st = save_embeddings(emb, tmp_path / "t.safetensors")
    assert torch.equal(load_file(st)["embeddings"], emb.vectors)
    assert json.loads((tmp_path / "t.npy.keys.json").read_text())["keys"] == ["a red circle", "two blue squares"]
    with pytest.raises(edgevl.EdgevlError, match=".npy or .safetensors"):
        save_embeddings(emb, tmp_path / "t.csv")


def test_cli_classify_and_embed(images, tmp_path, capsys):
    assert main(["classify", str(images / "0.png"), "--labels", "cat,dog", "--model", MODEL, "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert set(line["labels"]) == {"cat", "dog"}
    out = tmp_path / "e.npy"
    assert main(["embed", "--images", str(images), "--out", str(out), "--model", MODEL]) == 0
    assert np.load(out).shape[0] == 6
    assert main(["classify", str(images / "broken.jpg"), "--labels", "a,b", "--model", MODEL]) == 3


def test_cli_all_bad_inputs_exit_3_and_write_nothing(images, tmp_path, capsys):
    out = tmp_path / "bad.npy"
    assert main(["embed", "--images", str(images / "broken.jpg"), "--out", str(out), "--model", MODEL]) == 3
    assert "none of the 1 images could be read" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_strict_fails_on_any_bad_input(images, tmp_path, capsys):
    out = tmp_path / "e.npy"
    assert main(["embed", "--images", str(images), "--out", str(out), "--model", MODEL, "--strict"]) == 2
    assert "--strict: 1 bad images (first: " in capsys.readouterr().err and not out.exists()
    assert main(["classify", str(images), "--labels", "a,b", "--model", MODEL, "--strict"]) == 2


def test_cli_caption_skips_a_bad_image_and_captions_the_rest(images, capsys):
    assert main(["caption", str(images), "--beam", "1", "--max-words", "3", "--json"]) == 0
    captured = capsys.readouterr()
    captioned = [item["image"] for item in json.loads(captured.out)]
    assert len(captioned) == 6 and not any("broken" in p for p in captioned)
    assert "skipped" in captured.err and "broken.jpg" in captured.err


def test_non_finite_weights_are_an_error(images, tmp_path, capsys):
    model = edgevl.create_model(MODEL)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    edgevl.save_pretrained(model, tmp_path / "nan-model")
    argv = ["classify", str(images / "0.png"), "--labels", "a,b", "--model", MODEL]
    assert main([*argv, "--pretrained", str(tmp_path / "nan-model")]) == 2
    assert "holds non-finite values (NaN or infinity) in " in capsys.readouterr().err


def test_non_finite_outputs_are_an_error():
    from edgevl.errors import EdgevlError

    model = edgevl.create_model(MODEL)
    with torch.no_grad():
        model.text.token_embedding.weight.fill_(float("inf"))  # a model that overflows, e.g. in half precision
    with pytest.raises(EdgevlError, match="non-finite text embeddings"):
        embed_texts(model, edgevl.get_tokenizer(MODEL), ["a red circle"])


def test_cli_caption_strict_stops_at_the_first_bad_image(images, capsys):
    assert main(["caption", str(images), "--beam", "1", "--max-words", "3", "--strict"]) == 2
    captured = capsys.readouterr()
    assert "--strict: bad image" in captured.err and "broken.jpg" in captured.err and captured.out == ""
