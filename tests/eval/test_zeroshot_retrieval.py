"""Zero-shot classifier construction, classification metrics and retrieval recall against direct loops."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgevl.data.classnames import read_classnames
from edgevl.data.templates import TEMPLATE_SETS, get_templates
from edgevl.errors import ConfigError
from edgevl.eval.retrieval import retrieval_metrics
from edgevl.eval.zeroshot import (
    build_zero_shot_classifier,
    classification_metrics,
    mean_per_class_recall,
    topk_accuracy,
)


class _HashTextModel(nn.Module):
    """Deterministic stand-in: a text's embedding is a fixed random vector per distinct id row."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.table = nn.Embedding(512, dim, padding_idx=0)  # padding adds nothing

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids).sum(dim=1)


def _tok(texts):
    rows = [[1 + sum(map(ord, w)) % 511 for w in t.split()] for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def test_classifier_is_normalized_template_average():
    torch.manual_seed(0)
    model = _HashTextModel()
    classes, templates = ["cat", "red dog", "tree"], ["a photo of a {}.", "{}", lambda c: f"my {c}"]
    clf = build_zero_shot_classifier(model, _tok, classes, templates, batch_size=2)
    assert clf.shape == (8, 3)
    for j, c in enumerate(classes):
        texts = [t(c) if callable(t) else t.format(c) for t in templates]
        emb = F.normalize(model.encode_text(_tok(texts)), dim=-1).mean(0)
        assert torch.allclose(clf[:, j], F.normalize(emb, dim=0), atol=1e-6)


def test_classifier_rejects_empty():
    with pytest.raises(ConfigError):
        build_zero_shot_classifier(_HashTextModel(), _tok, [], ["{}"])
    with pytest.raises(ConfigError):
        build_zero_shot_classifier(_HashTextModel(), _tok, ["a"], [])


def test_topk_and_recall_against_loops():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 7, generator=g)
    target = torch.randint(0, 7, (50,), generator=g)
    acc = topk_accuracy(logits, target, (1, 3, 10))
    for k in (1, 3, 10):
        direct = sum(int(target[i] in logits[i].argsort(descending=True)[:k]) for i in range(50)) / 50
        assert acc[k] == pytest.approx(direct)
    pred = logits.argmax(1)
    per_class = [(pred[target == c] == c).float().mean().item() for c in range(7) if (target == c).any()]
    assert mean_per_class_recall(logits, target) == pytest.approx(sum(per_class) / len(per_class))
    assert set(classification_metrics(logits, target)) == {"acc1", "acc5", "mean_per_class_recall"}


def test_retrieval_against_loops():
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(6, 4, generator=g), torch.randn(14, 4, generator=g)
    t2i = [i % 6 for i in range(12)] + [0, 3]
    got = retrieval_metrics(img, txt, t2i, ks=(1, 2, 5))
    sim = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    for k in (1, 2, 5):
        t_hits = [t2i[t] in sim[:, t].argsort(descending=True)[:k].tolist() for t in range(14)]
        i_hits = [
            any(t2i[t] == i for t in sim[i].argsort(descending=True)[:k].tolist()) for i in range(6)
        ]
        assert got[f"image_retrieval_recall@{k}"] == pytest.approx(sum(t_hits) / 14)
        assert got[f"text_retrieval_recall@{k}"] == pytest.approx(sum(i_hits) / 6)


def test_retrieval_perfect_and_bad_index():
    e = torch.eye(3)
    m = retrieval_metrics(e, e, [0, 1, 2], ks=(1,))
    assert m == {"image_retrieval_recall@1": 1.0, "text_retrieval_recall@1": 1.0}
    with pytest.raises(ConfigError):
        retrieval_metrics(e, e, [0, 1])
    with pytest.raises(ConfigError):
        retrieval_metrics(e, e, [0, 1, 3])


def test_templates_and_classnames_files(tmp_path):
    assert get_templates("photo") == list(TEMPLATE_SETS["photo"])
    (tmp_path / "t.txt").write_text("a {c} here\n\nthe {}\n")
    assert get_templates(str(tmp_path / "t.txt")) == ["a {} here", "the {}"]
    (tmp_path / "bad.txt").write_text("no placeholder\n")
    with pytest.raises(ConfigError, match="placeholder"):
        get_templates(str(tmp_path / "bad.txt"))
    with pytest.raises(ConfigError, match="unknown template set"):
        get_templates("nope")
    (tmp_path / "c.json").write_text(json.dumps({"world": ["red circle", "blue square"]}))
    assert read_classnames(tmp_path / "c.json") == ["red circle", "blue square"]
