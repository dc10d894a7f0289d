"""Losses against direct, slow float64 formulas written from the paper's definitions (loops, math.exp)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgevl.errors import ConfigError
from edgevl.train.losses import DistillConfig, clip_loss, reinforced_loss, split_teachers


def _rows_softmax(m: list[list[float]]) -> list[list[float]]:
    out = []
    for row in m:
        top = max(row)
        e = [math.exp(v - top) for v in row]
        out.append([v / sum(e) for v in e])
    return out


def _sims(a: torch.Tensor, b: torch.Tensor, s: float) -> list[list[float]]:
    return [[s * sum(x * y for x, y in zip(ra.tolist(), rb.tolist())) for rb in b] for ra in a]


def _transpose(m: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*m)]


def slow_clip(img: torch.Tensor, txt: torch.Tensor, s: float) -> float:
    logits = _sims(img, txt, s)
    total = 0.0
    for mat in (logits, _transpose(logits)):
        p = _rows_softmax(mat)
        total += -sum(math.log(p[i][i]) for i in range(len(p))) / len(p)
    return total / 2


def slow_kd(img, txt, s, t_img, t_txt, dims, scales) -> float:
    """Paper form: mean over teachers and rows of KL(teacher ‖ student), plus the teachers' mean entropy
    (a constant) so that it equals the cross-entropy against the averaged teacher softmax."""
    student = _sims(img, txt, s)
    q = {"i2t": _rows_softmax(student), "t2i": _rows_softmax(_transpose(student))}
    total, start = 0.0, 0
    for d, sk in zip(dims, scales):
        a, b = t_img[:, start : start + d], t_txt[:, start : start + d]
        start += d
        teacher = _sims(a, b, sk)
        for name, mat in (("i2t", teacher), ("t2i", _transpose(teacher))):
            p = _rows_softmax(mat)
            for i, row in enumerate(p):
                kl = sum(pj * (math.log(pj) - math.log(qj)) for pj, qj in zip(row, q[name][i]))
                entropy = -sum(pj * math.log(pj) for pj in row)
                total += 0.5 * (kl + entropy) / (len(p) * len(dims))
    return total


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _teacher(n: int, dims: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.cat([_unit(n, d, seed=seed + i) for i, d in enumerate(dims)], dim=1)


def test_clip_loss_matches_slow_formula():
    img, txt = _unit(6, 4, seed=0), _unit(6, 4, seed=1)
    got = clip_loss(img, txt, torch.tensor(14.3, dtype=torch.float64))
    assert got.item() == pytest.approx(slow_clip(img, txt, 14.3), abs=1e-10)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_reinforced_loss_two_teachers_matches_slow_formula(lam):
    n, dims, scales, s = 5, (3, 7), (100.0, 55.0), 9.0
    img, real, syn = _unit(n, 4, seed=2), _unit(n, 4, seed=3), _unit(n, 4, seed=4)
    t_img, t_real, t_syn = _teacher(n, dims, 10), _teacher(n, dims, 20), _teacher(n, dims, 30)
    cfg = DistillConfig(teacher_dims=dims, teacher_scales=scales, lam=lam, real_weight=0.7, syn_weight=1.3)
    out = reinforced_loss(img, real, syn, torch.tensor(s, dtype=torch.float64), t_img, t_real, t_syn, cfg)

    kd_real = slow_kd(img, real, s, t_img, t_real, dims, scales)
    kd_syn = slow_kd(img, syn, s, t_img, t_syn, dims, scales)
    clip_real, clip_syn = slow_clip(img, real, s), slow_clip(img, syn, s)
    expected = 0.7 * ((1 - lam) * clip_real + lam * kd_real) + 1.3 * ((1 - lam) * clip_syn + lam * kd_syn)
    assert out["kd_real"].item() == pytest.approx(kd_real, abs=1e-10)
    assert out["clip_syn"].item() == pytest.approx(clip_syn, abs=1e-10)
    assert out["loss"].item() == pytest.approx(expected, abs=1e-10)


def test_lambda_one_gradient_equals_mean_teacher_kl_gradient():
    """At λ=1 only the KD term moves the student; its gradient is the gradient of the mean per-teacher KL."""
    n, dims, scales = 4, (3, 5), (100.0, 70.0)
    img = _unit(n, 6, seed=5).requires_grad_()
    txt = _unit(n, 6, seed=6)
    t_img, t_txt = _teacher(n, dims, 40), _teacher(n, dims, 50)
    cfg = DistillConfig(teacher_dims=dims, teacher_scales=scales, lam=1.0, real_weight=1.0, syn_weight=0.0)
    scale = torch.tensor(11.0, dtype=torch.float64)
    reinforced_loss(img, txt, txt, scale, t_img, t_txt, t_txt, cfg)["loss"].backward()

    img2 = img.detach().clone().requires_grad_()
    logq = (scale * img2 @ txt.T).log_softmax(-1), (scale * txt @ img2.T).log_softmax(-1)
    kl, start = 0.0, 0
    for d, sk in zip(dims, scales):
        a, b = t_img[:, start : start + d], t_txt[:, start : start + d]
        start += d
        for p, lq in (((sk * a @ b.T).softmax(-1), logq[0]), ((sk * b @ a.T).softmax(-1), logq[1])):
            kl = kl + 0.5 * (p * (p.log() - lq)).sum(-1).mean() / len(dims)
    kl.backward()
    torch.testing.assert_close(img.grad, img2.grad, atol=1e-10, rtol=0)


def test_split_teachers_and_bad_config():
    emb = torch.arange(10.0).reshape(1, 10)
    a, b = split_teachers(emb, (4, 6))
    assert a.tolist() == [[0, 1, 2, 3]] and b.shape == (1, 6)
    with pytest.raises(ConfigError, match="width 10"):
        split_teachers(emb, (4, 4))
    with pytest.raises(ConfigError, match="one logit scale per teacher"):
        DistillConfig(teacher_dims=(4, 6), teacher_scales=(100.0,))
    with pytest.raises(ConfigError, match="lambda"):
        DistillConfig(teacher_dims=(4,), teacher_scales=(100.0,), lam=1.5)
