"""MCi image trunks (FastViT family) of MobileCLIP / MobileCLIP2 in the timm / open_clip key layout.

`MCi` builds any 4- or 5-stage configuration from explicit arguments; `fastvit_mci0` ... `fastvit_mci4` are the
full-size presets. `convert_v1_state_dict` renames an official v1 `mobileclip` image-encoder state dict (flat
`network.{n}` list, `rbr_*` branches, `head.proj`) to this layout, train-time or already re-parameterized.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.blocks import (
    AttentionBlock,
    ClassifierHead,
    MobileOneBlock,
    PatchEmbed,
    ReparamLargeKernelConv,
    RepConditionalPosEnc,
    RepMixerBlock,
)


class MCiStage(nn.Module):
    """One stage: optional `downsample` (PatchEmbed), optional `pos_emb` (RepCPE), then `blocks`."""

    def __init__(
        self,
        in_chs: int,
        dim: int,
        depth: int,
        token_mixer: str,
        mlp_ratio: float,
        downsample: bool,
        use_se_downsample: bool,
        pos_emb: bool,
        norm: str,
        lkc_use_act: bool,
        layer_scale_init: float,
    ) -> None:
        super().__init__()
        if not downsample and in_chs != dim:
            raise ConfigError(f"stage without downsample cannot change width ({in_chs} -> {dim})")
        self.downsample = PatchEmbed(in_chs, dim, 7, use_se_downsample, lkc_use_act) if downsample else nn.Identity()
        self.pos_emb = RepConditionalPosEnc(dim, 7) if pos_emb else nn.Identity()
        if token_mixer == "repmixer":
            blocks = [RepMixerBlock(dim, mlp_ratio, 3, layer_scale_init) for _ in range(depth)]
        elif token_mixer == "attention":
            blocks = [AttentionBlock(dim, mlp_ratio, norm, 32, layer_scale_init) for _ in range(depth)]
        else:
            raise ConfigError(f"unknown token mixer {token_mixer!r} (expected 'repmixer' or 'attention')")
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))


def _per_stage(name: str, values: Sequence, n: int) -> list:
    values = list(values)
    if len(values) != n:
        raise ConfigError(f"MCi argument {name!r} has {len(values)} entries, expected one per stage ({n})")
    return values


class MCi(nn.Module):
    """FastViT / MCi trunk: conv `stem` (stride 4), `stages`, `final_conv` (2× width, SE) and `head.fc`.

    `forward_features` returns the `final_conv` feature map; `forward` pools it and applies `head.fc`, giving
    the image embedding (open_clip wraps this trunk as `visual.trunk` with an empty `visual.head`).
    """

    def __init__(
        self,
        layers: Sequence[int],
        embed_dims: Sequence[int],
        mlp_ratios: Sequence[float],
        token_mixers: Sequence[str],
        downsamples: Sequence[bool],
        se_downsamples: Sequence[bool],
        pos_embs: Sequence[bool],
        num_classes: int = 512,
        norm: str = "batchnorm",
        stem_use_scale_branch: bool = True,
        lkc_use_act: bool = True,
        layer_scale_init: float = 1e-5,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        n = len(layers)
        embed_dims = _per_stage("embed_dims", embed_dims, n)
        mlp_ratios = _per_stage("mlp_ratios", mlp_ratios, n)
        token_mixers = _per_stage("token_mixers", token_mixers, n)
        downsamples = _per_stage("downsamples", downsamples, n)
        se_downsamples = _per_stage("se_downsamples", se_downsamples, n)
        pos_embs = _per_stage("pos_embs", pos_embs, n)
        c0 = embed_dims[0]
        self.stem = nn.Sequential(
            MobileOneBlock(in_chans, c0, 3, stride=2, use_scale_branch=stem_use_scale_branch),
            MobileOneBlock(c0, c0, 3, stride=2, groups=c0, use_scale_branch=stem_use_scale_branch),
            MobileOneBlock(c0, c0, 1),
        )
        stages, prev = [], c0
        for i in range(n):
            stages.append(
                MCiStage(
                    prev,
                    embed_dims[i],
                    layers[i],
                    token_mixers[i],
                    mlp_ratios[i],
                    downsamples[i],
                    se_downsamples[i],
                    pos_embs[i],
                    norm,
                    lkc_use_act,
                    layer_scale_init,
                )
            )
            prev = embed_dims[i]
        self.stages = nn.Sequential(*stages)
        self.num_features = 2 * prev
        self.final_conv = MobileOneBlock(prev, self.num_features, 3, groups=prev, use_se=True)
        self.head = ClassifierHead(self.num_features, num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map (B, 2·C_last, H/32 or H/64, ...): the output of `final_conv`."""
        return self.final_conv(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_MCI_4STAGE = dict(
    mlp_ratios=(3, 3, 3, 3),
    token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
    downsamples=(False, True, True, True),
    se_downsamples=(False, False, True, True),
    pos_embs=(False, False, False, True),
    norm="batchnorm",
    stem_use_scale_branch=True,
)
_MCI_5STAGE = dict(
    mlp_ratios=(4, 4, 4, 4, 4),
    token_mixers=("repmixer", "repmixer", "repmixer", "attention", "attention"),
    downsamples=(False, True, True, True, True),
    se_downsamples=(False,) * 5,
    pos_embs=(False, False, False, True, True),
    norm="layernorm",
    stem_use_scale_branch=False,
)

MCI_PRESETS: dict[str, dict] = {
    "fastvit_mci0": dict(layers=(2, 6, 10, 2), embed_dims=(64, 128, 256, 512), **_MCI_4STAGE),
    "fastvit_mci1": dict(layers=(4, 12, 20, 4), embed_dims=(64, 128, 256, 512), **_MCI_4STAGE),
    "fastvit_mci2": dict(layers=(4, 12, 24, 4), embed_dims=(80, 160, 320, 640), **_MCI_4STAGE),
    "fastvit_mci3": dict(layers=(2, 12, 24, 4, 2), embed_dims=(96, 192, 384, 768, 1536), **_MCI_5STAGE),
    "fastvit_mci4": dict(layers=(2, 12, 24, 4, 4), embed_dims=(128, 256, 512, 1024, 2048), **_MCI_5STAGE),
}


def create_mci(name: str, num_classes: int | None = None, **overrides) -> MCi:
    """Build a full-size preset (`fastvit_mci0`..`fastvit_mci4`); `num_classes` is the embedding width
    (default 512 for MCi0-2 and 768 for MCi3/4, as in MobileCLIP)."""
    if name not in MCI_PRESETS:
        raise ConfigError(f"unknown MCi preset {name!r}; known: {', '.join(MCI_PRESETS)}")
    cfg = {**MCI_PRESETS[name], **overrides}
    if num_classes is None:
        num_classes = 768 if len(cfg["layers"]) == 5 else 512
    return MCi(num_classes=num_classes, **cfg)


def fastvit_mci0(**kwargs) -> MCi:
    """MCi0 (MobileCLIP-S0, MobileCLIP2-S0): 11.4 M parameters."""
    return create_mci("fastvit_mci0", **kwargs)


def fastvit_mci1(**kwargs) -> MCi:
    """MCi1 (MobileCLIP-S1): 21.5 M parameters."""
    return create_mci("fastvit_mci1", **kwargs)


def fastvit_mci2(**kwargs) -> MCi:
    """MCi2 (MobileCLIP-S2, MobileCLIP2-S2): 35.7 M parameters."""
    return create_mci("fastvit_mci2", **kwargs)


def fastvit_mci3(**kwargs) -> MCi:
    """MCi3 (MobileCLIP-S3, MobileCLIP2-S3): 5 stages, 125 M parameters."""
    return create_mci("fastvit_mci3", **kwargs)


def fastvit_mci4(**kwargs) -> MCi:
    """MCi4 (MobileCLIP-S4, MobileCLIP2-S4): 5 stages, 322 M parameters."""
    return create_mci("fastvit_mci4", **kwargs)


# ------------------------------------------------------------------------------------- v1 conversion
V1_PREFIX = "image_encoder.model."

_V1_SEGMENTS = {
    "rbr_conv": "conv_kxk",
    "rbr_scale": "conv_scale",
    "rbr_skip": "identity",
    "lkb_origin": "large_conv",
    "lkb_reparam": "reparam_conv",
    "convffn": "mlp",
    "pe": "pos_enc",
    "patch_embed": "stem",
    "conv_exp": "final_conv",
}
_V1_SE = {"reduce": "fc1", "expand": "fc2"}
_LAYER_SCALES = {"layer_scale", "layer_scale_1", "layer_scale_2"}
_NETWORK_KEY = re.compile(r"network\.(\d+)\.(.+)")


def _rename_v1_path(path: str) -> str:
    parts = path.split(".")
    out = []
    for i, part in enumerate(parts):
        if i > 0 and parts[i - 1] == "se" and part in _V1_SE:
            out.append(_V1_SE[part])
        else:
            out.append(_V1_SEGMENTS.get(part, part))
    if parts[-1] in _LAYER_SCALES:
        out.append("gamma")
    return ".".join(out)


def _strip_v1_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith(V1_PREFIX) for k in sd):
        return {k[len(V1_PREFIX) :]: v for k, v in sd.items() if k.startswith(V1_PREFIX)}
    return dict(sd)


def _network_to_stages(indices: list[int], entries: dict[int, set[str]]) -> dict[int, str]:
    """Map each flat `network.{n}` index to its timm place: `stages.{s}.downsample`, `.pos_emb` or `.blocks`."""
    places, stage, stage_has_blocks = {}, 0, False
    for n in indices:
        heads = entries[n]
        if heads == {"proj"} or heads <= {"pe", "reparam_conv"}:
            if stage_has_blocks:
                stage, stage_has_blocks = stage + 1, False
            places[n] = f"stages.{stage}." + ("downsample" if heads == {"proj"} else "pos_emb")
        elif all(h.isdigit() for h in heads):
            places[n] = f"stages.{stage}.blocks"
            stage_has_blocks = True
        else:
            raise CheckpointError(f"v1 MCi key group 'network.{n}' has unexpected children {sorted(heads)}")
    return places


def convert_v1_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official v1 MCi image-encoder state dict to `MCi` keys (train-time or re-parameterized).

    Accepts the whole v1 CLIP checkpoint (only `image_encoder.model.*` keys are used) or the image-encoder
    model dict with that prefix already stripped. `head.proj` (in, out) becomes `head.fc.weight` (transposed)
    plus a zero `head.fc.bias`.
    """
    sd = _strip_v1_prefix(sd)
    if "head.proj" not in sd or not any(k.startswith("patch_embed.") for k in sd):
        raise CheckpointError("not a v1 MCi image-encoder state dict: 'patch_embed.*' or 'head.proj' missing")
    entries: dict[int, set[str]] = {}
    for key in sd:
        m = _NETWORK_KEY.match(key)
        if m:
            entries.setdefault(int(m.group(1)), set()).add(m.group(2).split(".")[0])
    places = _network_to_stages(sorted(entries), entries)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "head.proj":
            out["head.fc.weight"] = value.t().contiguous()
            out["head.fc.bias"] = value.new_zeros(value.shape[1])
            continue
        m = _NETWORK_KEY.match(key)
        if m:
            key = f"{places[int(m.group(1))]}.{m.group(2)}"
        out[_rename_v1_path(key)] = value
    return out


_V1_SEGMENTS_BACK = {new: old for old, new in _V1_SEGMENTS.items() if old != "lkb_reparam"}
_V1_SE_BACK = {new: old for old, new in _V1_SE.items()}


def _v1_path(path: str, large_kernel: set[str]) -> str:
    """Inverse of `_rename_v1_path`; `large_kernel` holds the paths of `ReparamLargeKernelConv` modules: v1 calls
    their folded conv `lkb_reparam` (other folded convs keep `reparam_conv`) and their SE layers `fc1`/`fc2`
    (MobileOne blocks' SE layers are `reduce`/`expand`)."""
    parts = path.split(".")
    if len(parts) > 1 and parts[-1] == "gamma" and parts[-2] in _LAYER_SCALES:
        parts = parts[:-1]
    out = []
    for i, part in enumerate(parts):
        if part == "reparam_conv" and ".".join(parts[:i]) in large_kernel:
            out.append("lkb_reparam")
        elif i > 0 and parts[i - 1] == "se" and part in _V1_SE_BACK and ".".join(parts[: i - 1]) not in large_kernel:
            out.append(_V1_SE_BACK[part])
        else:
            out.append(_V1_SEGMENTS_BACK.get(part, part))
    return ".".join(out)


def to_v1_state_dict(trunk: MCi, sd: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Inverse of `convert_v1_state_dict`: `trunk`'s state dict (or `sd` in its layout) in the official v1 names,
    without the `image_encoder.model.` prefix. Stages flatten back to `network.{n}` (downsample, pos_emb, blocks
    in order) and `head.fc` becomes the bias-free `head.proj` (in, out)."""
    sd = trunk.state_dict() if sd is None else sd
    large_kernel = {name for name, m in trunk.named_modules() if isinstance(m, ReparamLargeKernelConv)}
    network: dict[str, str] = {}
    for s, stage in enumerate(trunk.stages):
        parts = [p for p in ("downsample", "pos_emb") if not isinstance(getattr(stage, p), nn.Identity)]
        for part in [*parts, "blocks"]:
            network[f"stages.{s}.{part}."] = f"network.{len(network)}."
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "head.fc.weight":
            out["head.proj"] = value.t().contiguous()
            continue
        if key == "head.fc.bias":
            if value.device.type != "meta" and bool(value.any()):
                raise CheckpointError("the v1 layout has no projection bias, but head.fc.bias is not zero")
            continue
        new = _v1_path(key, large_kernel)
        for prefix, flat in network.items():
            if new.startswith(prefix):
                new = flat + new[len(prefix) :]
                break
        out[new] = value
    return out
