"""Frozen grid-feature backbones for LightCap: the CLIP ResNet trunk or an edgevl MCi image trunk, and the check
that tells a trained one from a random initialisation."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from edgevl.errors import ConfigError
from edgevl.models.lightcap.resnet import CLIPResNetTrunk


@runtime_checkable
class GridBackbone(Protocol):
    """Anything that maps [B, 3, H, W] pixels to a [B, out_channels, H/32, W/32] feature grid."""

    out_channels: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class MCiGrid(nn.Module):
    """Wrap an edgevl MCi trunk (`edgevl.models.mci`) so that `forward` returns its last feature map."""

    def __init__(self, trunk: nn.Module, probe_size: int = 64) -> None:
        super().__init__()
        self.trunk = trunk
        was_training = trunk.training
        trunk.eval()
        with torch.no_grad():
            self.out_channels = int(trunk.forward_features(torch.zeros(1, 3, probe_size, probe_size)).shape[1])
        trunk.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x)


def build_backbone(spec: dict[str, Any]) -> nn.Module:
    """Backbone from its config entry: {"type": "clip_resnet", "layers": [...], "width": n} or
    {"type": "mci", "preset": "fastvit_mci0", "overrides": {"layers": [...], "embed_dims": [...]}}."""
    kind = spec.get("type")
    if kind == "clip_resnet":
        return CLIPResNetTrunk(tuple(spec.get("layers", (3, 4, 6, 3))), int(spec.get("width", 64)))
    if kind == "mci":
        preset = spec.get("preset", "fastvit_mci0")
        try:
            mci = importlib.import_module("edgevl.models.mci")
        except ImportError as exc:
            raise ConfigError(f"MCi backbone {preset!r} needs edgevl.models.mci, which is unavailable: {exc}") from exc
        trunk = mci.create_mci(preset, **spec.get("overrides", {}))
        trunk.head = nn.Identity()  # the pooled projection head is not used for grid features
        return MCiGrid(trunk)
    raise ConfigError(f"unknown LightCap backbone type {kind!r}; choose 'clip_resnet' or 'mci'")


def is_untrained(backbone: nn.Module) -> bool:
    """True when `backbone` has BatchNorm layers and every one still holds its initial statistics (mean 0,
    variance 1): its weights never saw an image, like the random initialisation of a LightCap preset."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    return bool(norms) and all(bool((m.running_mean == 0).all() and (m.running_var == 1).all()) for m in norms)


def warn_if_untrained(backbone: nn.Module, what: str) -> bool:
    """Print a loud stderr warning when `backbone` (the frozen trunk of `what`) is untrained; returns whether."""
    if not is_untrained(backbone):
        return False
    print(f"edgevl: WARNING: {what} has an UNTRAINED frozen backbone (random initialisation: its BatchNorm "
          "statistics never saw an image).\nedgevl: WARNING: its captions cannot describe the images; give it a "
          "trained image tower with `edgevl train-captioner --backbone RUN_OR_MODEL`.", file=sys.stderr)
    return True
