"""Frozen grid-feature backbones for LightCap: the CLIP ResNet trunk or an edgevl MCi image trunk."""

from __future__ import annotations

import importlib
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
