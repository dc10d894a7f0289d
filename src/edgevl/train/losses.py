"""The CLIP contrastive loss and MobileCLIP's multi-modal reinforced (distillation) loss.

Both use open_clip's *local loss*: each rank scores its own rows against the all-gathered columns (gathered
with gradient), which equals the full-batch loss while memory stays linear in the global batch.

Reinforced loss (reinforced-training.md §1.2), per (image, text) batch B:
    total(B) = (1 - λ)·CLIP(B) + λ·KD(B)
    KD(B)    = ½·[CE(p̄_i2t, softmax(s·Φ_img Φ_txtᵀ)) + CE(p̄_t2i, softmax(s·Φ_txt Φ_imgᵀ))]
where p̄ averages the teachers' row-softmaxes at fixed scales s_k over their own stored embeddings (split
from one concatenated vector by the recorded dims) and s is the student's learnable scale. The step loss
is real_weight·total(B_real) + syn_weight·total(B_syn), or real_weight·total(B_real) alone on
teacher-only data (no synthetic captions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgevl.errors import ConfigError
from edgevl.train.distributed import all_sizes, gather_no_grad, gather_with_grad


@dataclass(frozen=True)
class DistillConfig:
    """Weights of the reinforced loss and the teacher ensemble layout (dims and fixed logit scales)."""

    teacher_dims: tuple[int, ...]
    teacher_scales: tuple[float, ...]
    lam: float = 1.0
    real_weight: float = 1.0
    syn_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.teacher_dims or len(self.teacher_dims) != len(self.teacher_scales):
            raise ConfigError(
                f"need one logit scale per teacher: dims {list(self.teacher_dims)}, scales {list(self.teacher_scales)}"
            )
        if any(d <= 0 for d in self.teacher_dims) or any(s <= 0 for s in self.teacher_scales):
            raise ConfigError(f"teacher dims and scales must be positive: {self.teacher_dims}, {self.teacher_scales}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"distill lambda must be in [0, 1], got {self.lam}")


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to float32 (softmax statistics stay accurate under bf16 autocast)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def contrastive_logits(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local-loss logits: (image rows vs all texts, text rows vs all images, labels of the local rows)."""
    sizes = all_sizes(image.shape[0], image.device)
    all_image, offset = gather_with_grad(image, sizes)
    all_text, _ = gather_with_grad(text, sizes)
    per_image = scale * image @ all_text.T
    per_text = scale * text @ all_image.T
    labels = torch.arange(image.shape[0], device=image.device) + offset
    return per_image, per_text, labels


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE on L2-normalized features with the (exponentiated) student scale."""
    per_image, per_text, labels = contrastive_logits(image, text, scale)
    return 0.5 * (F.cross_entropy(_upcast(per_image), labels) + F.cross_entropy(_upcast(per_text), labels))


def split_teachers(embeddings: torch.Tensor, dims: Sequence[int]) -> list[torch.Tensor]:
    """Split concatenated ensemble embeddings [n, Σd_k] into one [n, d_k] block per teacher."""
    if embeddings.shape[-1] != sum(dims):
        raise ConfigError(f"teacher embeddings have width {embeddings.shape[-1]}, but the dims {list(dims)} sum "
                          f"to {sum(dims)}")
    return list(torch.split(embeddings, list(dims), dim=-1))


def teacher_targets(
    image_emb: torch.Tensor, text_emb: torch.Tensor, dims: Sequence[int], scales: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble targets p̄ (local rows vs gathered columns) for image→text and text→image (≥ float32)."""
    sizes = all_sizes(image_emb.shape[0], image_emb.device)
    image_emb, text_emb = _upcast(image_emb), _upcast(text_emb)
    all_image, all_text = gather_no_grad(image_emb, sizes), gather_no_grad(text_emb, sizes)
    i2t = t2i = 0.0
    parts = zip(split_teachers(image_emb, dims), split_teachers(text_emb, dims),
                split_teachers(all_image, dims), split_teachers(all_text, dims), scales)
    for img, txt, all_img, all_txt, s in parts:
        i2t = i2t + (s * img @ all_txt.T).softmax(dim=-1)
        t2i = t2i + (s * txt @ all_img.T).softmax(dim=-1)
    return i2t / len(dims), t2i / len(dims)


def soft_cross_entropy(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """−mean over rows of Σ_j target_ij · log_softmax(logits)_ij."""
    return -(target * _upcast(logits).log_softmax(dim=-1)).sum(dim=-1).mean()


def distill_terms(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    cfg: DistillConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CLIP, KD) losses of one (image, text) batch."""
    per_image, per_text, labels = contrastive_logits(image, text, scale)
    clip = 0.5 * (F.cross_entropy(_upcast(per_image), labels) + F.cross_entropy(_upcast(per_text), labels))
    i2t, t2i = teacher_targets(teacher_image, teacher_text, cfg.teacher_dims, cfg.teacher_scales)
    kd = 0.5 * (soft_cross_entropy(i2t, per_image) + soft_cross_entropy(t2i, per_text))
    return clip, kd


def reinforced_loss(
    image: torch.Tensor,
    real_text: torch.Tensor,
    syn_text: torch.Tensor | None,
    scale: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_real_text: torch.Tensor,
    teacher_syn_text: torch.Tensor | None,
    cfg: DistillConfig,
) -> dict[str, torch.Tensor]:
    """The multi-modal reinforced loss; returns `loss` plus the four parts for logging.

    Without synthetic captions (`syn_text` None: teacher-only data) only the real-caption batch counts and the
    two synthetic parts are left out.
    """
    clip_real, kd_real = distill_terms(image, real_text, scale, teacher_image, teacher_real_text, cfg)
    lam = cfg.lam
    loss = cfg.real_weight * ((1 - lam) * clip_real + lam * kd_real)
    if syn_text is None or teacher_syn_text is None:
        return {"loss": loss, "clip_real": clip_real, "kd_real": kd_real}
    clip_syn, kd_syn = distill_terms(image, syn_text, scale, teacher_image, teacher_syn_text, cfg)
    loss = loss + cfg.syn_weight * ((1 - lam) * clip_syn + lam * kd_syn)
    return {"loss": loss, "clip_real": clip_real, "kd_real": kd_real, "clip_syn": clip_syn, "kd_syn": kd_syn}
