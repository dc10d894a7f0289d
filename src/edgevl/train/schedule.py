"""Learning-rate schedule: linear warm-up then cosine decay to `min_lr` (open_clip's `cosine_lr`).

Stateless: the rate is a pure function of the step, so resuming needs only the step number.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer


def cosine_lr(step: int, base_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """LR at 0-based `step`: base·(step+1)/warmup during warm-up, then half-cosine from base to min_lr."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    decay_steps = max(total - warmup, 1)
    progress = min(step - warmup, decay_steps) / decay_steps
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """Apply `lr` to every param group, times the group's `lr_scale` (lower LR for pretrained parts)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
