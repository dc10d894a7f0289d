"""ViT image towers: the timm layout (MobileCLIP-B conv-stem ViT, CLIP ViT-L/14 of MobileCLIP2-L-14) and the
OpenAI / OpenCLIP layout (ViT-B/32, B/16, L/14 teachers).

`TimmViT` keys: `patch_embed.backbone.{0,1,2}` (conv stem) or `patch_embed.proj`, `cls_token`, `pos_embed`,
`norm_pre`, `blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`, `head`.
`VisionTransformer` keys: `conv1`, `class_embedding`, `positional_embedding`, `ln_pre`, `transformer.resblocks.*`,
`ln_post`, `proj`. `convert_v1_state_dict` renames the official v1 MobileCLIP-B image encoder to `TimmViT` keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.precision import sdpa
from edgevl.models.transformer import LayerNorm, Transformer, activation

POS_EMBED_RESIZE_MODES = ("fixed", "flat_bilinear", "grid_bicubic")


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int], src_grid: tuple[int, int], mode: str) -> torch.Tensor:
    """Fit a (1, N0, D) patch positional table to `grid` = (gh, gw) tokens.

    `fixed` only accepts the stored grid (timm / open_clip); `flat_bilinear` interpolates along the flattened
    token axis as the official v1 package does; `grid_bicubic` resamples the 2-D grid.
    """
    n = grid[0] * grid[1]
    if n == pos.shape[1] and (mode != "grid_bicubic" or grid == src_grid):
        return pos
    if mode == "flat_bilinear":
        return F.interpolate(pos.unsqueeze(0), size=(n, pos.shape[2]), mode="bilinear", align_corners=False)[0]
    if mode == "grid_bicubic":
        table = pos.reshape(1, src_grid[0], src_grid[1], -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, n, -1)
    if mode == "fixed":
        raise ConfigError(
            f"input gives a {grid[0]}x{grid[1]} token grid but the positional embedding is fixed to "
            f"{src_grid[0]}x{src_grid[1]}; use the model's image size or pos_embed_resize='grid_bicubic'"
        )
    raise ConfigError(f"unknown pos_embed_resize {mode!r}; expected one of {POS_EMBED_RESIZE_MODES}")


def _check_resize_mode(mode: str) -> None:
    if mode not in POS_EMBED_RESIZE_MODES:
        raise ConfigError(f"unknown pos_embed_resize {mode!r}; expected one of {POS_EMBED_RESIZE_MODES}")


class ConvNormAct(nn.Module):
    """Conv (`conv`) + optional BatchNorm (`bn`) + optional GELU: one layer of the MobileCLIP-B conv stem."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, padding: int, norm_act: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, kernel, padding, bias=not norm_act)
        self.bn = nn.BatchNorm2d(out_chs) if norm_act else nn.Identity()
        self.act = nn.GELU() if norm_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class PatchEmbed(nn.Module):
    """Image -> (B, D, gh, gw) patch map: a conv stem (`backbone`, stride 4·2·2) or one patch conv (`proj`)."""

    def __init__(
        self,
        embed_dim: int,
        patch_size: int,
        stem_channels: Sequence[int] | None,
        stem_padding: int = 0,
        proj_bias: bool = True,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if stem_channels is not None:
            if patch_size != 16 or len(stem_channels) != 2:
                raise ConfigError(
                    f"the conv stem has two hidden widths and patch size 16 (got {stem_channels}, {patch_size})"
                )
            c1, c2 = stem_channels
            self.backbone = nn.Sequential(
                ConvNormAct(in_chans, c1, 4, stem_padding, True),
                ConvNormAct(c1, c2, 2, 0, True),
                ConvNormAct(c2, embed_dim, 2, 0, False),
            )
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) if hasattr(self, "backbone") else self.proj(x)


class TimmAttention(nn.Module):
    """Multi-head self-attention with a fused `qkv` Linear (with bias) and `proj`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"ViT width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(sdpa(q, k, v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """`fc1` -> activation -> `fc2`."""

    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, act: str, ln_eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = TimmAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
    """timm-layout ViT trunk; `forward_features` gives all tokens after `norm` (CLS first), `forward` the
    CLS token through `head` (the image embedding; open_clip uses this as `visual.trunk`).

    `stem_channels` selects the MobileCLIP conv stem (its first conv padding is `stem_padding`: 0 in timm /
    open_clip, 1 in the official v1 package). `class_pos_embed=False` adds `pos_embed` to patch tokens only
    (MobileCLIP-B); `pos_embed_resize` says how other input sizes are handled (see `resize_pos_embed`).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 512,
        stem_channels: Sequence[int] | None = None,
        stem_padding: int = 0,
        patch_bias: bool = True,
        class_pos_embed: bool = True,
        norm_pre: bool = False,
        ln_eps: float = 1e-6,
        act: str = "gelu",
        pos_embed_resize: str = "fixed",
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        _check_resize_mode(pos_embed_resize)
        self.pos_embed_resize, self.class_pos_embed = pos_embed_resize, class_pos_embed
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(embed_dim, patch_size, stem_channels, stem_padding, patch_bias, in_chans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        n_pos = self.grid[0] * self.grid[1] + (1 if class_pos_embed else 0)
        self.pos_embed = nn.Parameter(torch.randn(1, n_pos, embed_dim) * 0.02)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=ln_eps) if norm_pre else nn.Identity()
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio, act, ln_eps) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.head = nn.Linear(embed_dim, num_classes)
        self.num_features = embed_dim

    def _add_pos_embed(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        if not self.class_pos_embed:
            pos = resize_pos_embed(self.pos_embed, grid, self.grid, self.pos_embed_resize)
            return torch.cat([cls, tokens + pos], dim=1)
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = resize_pos_embed(patch_pos, grid, self.grid, self.pos_embed_resize)
        return torch.cat([cls + cls_pos, tokens + patch_pos], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens (B, 1 + N, D) after the final norm, CLS first."""
        patches = self.patch_embed(x)
        tokens = self._add_pos_embed(patches.flatten(2).transpose(1, 2), tuple(patches.shape[2:]))
        return self.norm(self.blocks(self.norm_pre(tokens)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


TIMM_VIT_PRESETS: dict[str, dict] = {
    # MobileCLIP-B / MobileCLIP2-B (timm `vit_base_mci_224`): conv stem, pos-embed on patches only
    "vit_base_mci_224": dict(
        patch_size=16, embed_dim=768, depth=12, num_heads=12, stem_channels=(192, 192), class_pos_embed=False
    ),
    # MobileCLIP2-L-14 (timm `vit_large_patch14_clip_224`): OpenAI-style CLIP ViT in timm naming
    "vit_large_patch14_clip_224": dict(
        patch_size=14, embed_dim=1024, depth=24, num_heads=16, patch_bias=False, norm_pre=True, ln_eps=1e-5
    ),
}


def create_timm_vit(name: str, num_classes: int = 512, img_size: int = 224, **overrides) -> TimmViT:
    """Build a timm-layout ViT preset (`vit_base_mci_224`, `vit_large_patch14_clip_224`); `overrides` replace
    any `TimmViT` argument (e.g. `stem_padding=1, pos_embed_resize='flat_bilinear'` for v1 MobileCLIP-B)."""
    if name not in TIMM_VIT_PRESETS:
        raise ConfigError(f"unknown timm ViT preset {name!r}; known: {', '.join(TIMM_VIT_PRESETS)}")
    return TimmViT(img_size=img_size, num_classes=num_classes, **{**TIMM_VIT_PRESETS[name], **overrides})


class VisionTransformer(nn.Module):
    """OpenAI / OpenCLIP ViT: patch `conv1`, CLS + `positional_embedding` on all tokens, `ln_pre`,
    `transformer`, `ln_post` on all tokens, CLS token @ `proj` (no bias)."""

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        output_dim: int = 512,
        act: str = "gelu",
        pos_embed_resize: str = "fixed",
        ln_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if pos_embed_resize == "flat_bilinear":
            raise ConfigError("the OpenAI ViT resizes its positional grid with 'fixed' or 'grid_bicubic' only")
        _check_resize_mode(pos_embed_resize)
        self.pos_embed_resize = pos_embed_resize
        self.grid = (image_size // patch_size, image_size // patch_size)
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, patch_size, patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid[0] * self.grid[1] + 1, width))
        self.ln_pre = LayerNorm(width, eps=ln_eps)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act, ln_eps)
        self.ln_post = LayerNorm(width, eps=ln_eps)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        self.output_dim = output_dim

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens (B, 1 + N, width) after the transformer, before `ln_post`, CLS first."""
        patches = self.conv1(x)
        grid = tuple(patches.shape[2:])
        tokens = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        pos = self.positional_embedding.unsqueeze(0)
        patch_pos = resize_pos_embed(pos[:, 1:], grid, self.grid, self.pos_embed_resize)
        tokens = torch.cat([cls + pos[:, :1], tokens + patch_pos], dim=1)
        return self.transformer(self.ln_pre(tokens))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens (B, 1 + N, width) after `ln_post`, CLS first."""
        return self.ln_post(self.encode_tokens(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[:, 0] @ self.proj


OPENAI_VIT_PRESETS: dict[str, dict] = {
    "ViT-B-32": dict(patch_size=32, width=768, layers=12, heads=12, output_dim=512),
    "ViT-B-16": dict(patch_size=16, width=768, layers=12, heads=12, output_dim=512),
    "ViT-L-14": dict(patch_size=14, width=1024, layers=24, heads=16, output_dim=768),
}


def create_openai_vit(name: str, quick_gelu: bool = False, **overrides) -> VisionTransformer:
    """Build the image tower of an OpenAI / OpenCLIP preset (`ViT-B-32`, `ViT-B-16`, `ViT-L-14`) at 224 px;
    `quick_gelu=True` for the original OpenAI weights."""
    if name not in OPENAI_VIT_PRESETS:
        raise ConfigError(f"unknown OpenAI ViT preset {name!r}; known: {', '.join(OPENAI_VIT_PRESETS)}")
    act = "quick_gelu" if quick_gelu else "gelu"
    return VisionTransformer(act=act, **{**OPENAI_VIT_PRESETS[name], **overrides})


# ------------------------------------------------------------------------------------- v1 conversion
V1_PREFIX = "image_encoder.model."

_V1_VIT_RENAMES = (
    ("pre_norm_mha.0.", "norm1."),
    ("pre_norm_mha.1.qkv_proj.", "attn.qkv."),
    ("pre_norm_mha.1.out_proj.", "attn.proj."),
    ("pre_norm_ffn.0.", "norm2."),
    ("pre_norm_ffn.1.", "mlp.fc1."),
    ("pre_norm_ffn.4.", "mlp.fc2."),
)


def _convert_v1_key(key: str) -> str:
    if key.startswith("patch_emb."):
        return "patch_embed.backbone." + key[len("patch_emb.") :].replace("block.conv", "conv").replace(
            "block.norm", "bn"
        )
    if key.startswith("transformer."):
        key = "blocks." + key[len("transformer.") :]
        for old, new in _V1_VIT_RENAMES:
            key = key.replace(old, new)
        return key
    if key.startswith("post_transformer_norm."):
        return "norm." + key[len("post_transformer_norm.") :]
    if key == "cls_token":
        return key
    raise CheckpointError(f"unexpected key {key!r} in a v1 MobileCLIP-B image encoder")


def convert_v1_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official v1 MobileCLIP-B image-encoder state dict to `TimmViT` keys.

    Accepts the whole v1 CLIP checkpoint (only `image_encoder.model.*` keys are used) or the image-encoder
    dict with that prefix stripped. The (1, 1, N, D) `pos_embed` is squeezed to (1, N, D) and
    `classifier.proj` (D, E) becomes `head.weight` (transposed) plus a zero `head.bias`. Build the trunk with
    `stem_padding=1` (and `pos_embed_resize='flat_bilinear'`) to reproduce the v1 model.
    """
    if any(k.startswith(V1_PREFIX) for k in sd):
        sd = {k[len(V1_PREFIX) :]: v for k, v in sd.items() if k.startswith(V1_PREFIX)}
    if "classifier.proj" not in sd or "pos_embed.pos_embed.pos_embed" not in sd:
        raise CheckpointError(
            "not a v1 MobileCLIP-B image-encoder state dict: 'classifier.proj' or 'pos_embed.pos_embed.pos_embed' "
            "missing"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "classifier.proj":
            out["head.weight"] = value.t().contiguous()
            out["head.bias"] = value.new_zeros(value.shape[1])
        elif key == "pos_embed.pos_embed.pos_embed":
            out["pos_embed"] = value.reshape(1, value.shape[-2], value.shape[-1])
        else:
            out[_convert_v1_key(key)] = value
    return out


def _to_v1_key(key: str) -> str:
    if key.startswith("patch_embed.backbone."):
        parts = key[len("patch_embed.backbone.") :].split(".")
        back = {"conv": "block.conv", "bn": "block.norm"}
        return "patch_emb." + ".".join(back.get(p, p) for p in parts)
    if key.startswith("blocks."):
        key = "transformer." + key[len("blocks.") :]
        for old, new in _V1_VIT_RENAMES:
            key = key.replace(new, old)
        return key
    if key.startswith("norm."):
        return "post_transformer_norm." + key[len("norm.") :]
    if key == "cls_token":
        return key
    raise CheckpointError(f"key {key!r} has no v1 MobileCLIP-B name")


def to_v1_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `convert_v1_state_dict`: `TimmViT` keys to the v1 MobileCLIP-B image-encoder names (without
    the `image_encoder.model.` prefix); the head must have a zero bias, which v1 does not store."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "head.weight":
            out["classifier.proj"] = value.t().contiguous()
        elif key == "head.bias":
            if value.device.type != "meta" and bool(value.any()):
                raise CheckpointError("the v1 layout has no projection bias, but head.bias is not zero")
        elif key == "pos_embed":
            out["pos_embed.pos_embed.pos_embed"] = value.reshape(1, 1, *value.shape[-2:])
        else:
            out[_to_v1_key(key)] = value
    return out
