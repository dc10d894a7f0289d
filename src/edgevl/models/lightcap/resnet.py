"""The CLIP ResNet-50 trunk (OpenAI `ModifiedResNet` without its attention pooler) as a grid-feature backbone.

Parameter names follow the open_clip `visual.*` layout, so `load_clip_resnet_trunk` reads real RN50 weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from edgevl.errors import CheckpointError


class AntiAliasedBottleneck(nn.Module):
    """Bottleneck block whose stride is an average pool after the 3x3 conv (and before the 1x1 shortcut conv)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or in_channels != out_channels:
            # keys downsample.0 (conv) / downsample.1 (BN); the pool is parameter-free and sits in front
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
            self.shortcut_pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(self.shortcut_pool(x))
        return self.relu(out + identity)


class CLIPResNetTrunk(nn.Module):
    """3-conv stem + avg pool, then four anti-aliased bottleneck stages; returns the last feature map.

    RN50 is `layers=(3, 4, 6, 3), width=64`: 224x224 -> [B, 2048, 7, 7]. Smaller `layers`/`width` give tiny trunks.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1 or width < 2:
            raise ValueError(f"CLIP ResNet needs 4 positive stage depths and width >= 2, got {layers}, {width}")
        half = width // 2
        self.conv1 = nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        channels = width
        for index, (depth, stride) in enumerate(zip(layers, (1, 2, 2, 2)), start=1):
            planes = width * 2 ** (index - 1)
            blocks = [AntiAliasedBottleneck(channels, planes, stride)]
            channels = planes * AntiAliasedBottleneck.expansion
            blocks += [AntiAliasedBottleneck(channels, planes) for _ in range(depth - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        self.out_channels = channels
        self.reduction = 32
        for module in self.modules():  # He init keeps activations alive through an untrained trunk
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu(self.bn3(self.conv3(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def clip_visual_trunk_state(state: Mapping[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """Select the trunk entries of a CLIP RN state dict: strip `prefix`, drop the attention pooler."""
    return {
        key[len(prefix) :]: value
        for key, value in state.items()
        if key.startswith(prefix) and not key[len(prefix) :].startswith("attnpool.")
    }


def load_clip_resnet_trunk(trunk: CLIPResNetTrunk, state: Mapping[str, torch.Tensor], prefix: str = "visual.") -> None:
    """Load open_clip/OpenAI RN weights (`visual.*`, attention pooler ignored) into `trunk`, strictly."""
    selected = clip_visual_trunk_state(state, prefix)
    if not selected:
        raise CheckpointError(f"no '{prefix}*' entries found; is this a CLIP ResNet checkpoint?")
    try:
        result = trunk.load_state_dict(selected, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"CLIP ResNet trunk shape mismatch: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"CLIP ResNet trunk mismatch: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
