"""Text towers: the open_clip TextTransformer (MobileCLIP Base/768-wide, OpenAI CLIP) and MobileCLIP-S0's MCt.

Both share one module layout (open_clip names): `token_embedding`, `positional_embedding` (ctx, D),
`transformer.resblocks.{i}`, `ln_final`, `text_projection` (D, E, no bias). MCt replaces the first and last
resblocks by Text-RepMixer blocks: `models/blocks.py`'s `RepMixerBlock` with (1 × k) kernels, so named like
timm's FastViT RepMixer blocks: `token_mixer.{norm,mixer}.identity`, `token_mixer.mixer.conv_kxk.0.{conv,bn}`,
`token_mixer.layer_scale.gamma`, `mlp.{conv.conv,conv.bn,fc1,fc2}`, `layer_scale.gamma`;
after folding, `token_mixer.reparam_conv`.
`convert_v1_state_dict` renames the official v1 `text_encoder.*` keys into this layout.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.errors import CheckpointError, DataError
from edgevl.models.blocks import RepMixerBlock
from edgevl.models.transformer import LayerNorm, Transformer

POS_EMBED_MODES = ("slice", "interpolate")


class TextRepMixerBlock(RepMixerBlock):
    """MCt's convolutional block: a `RepMixerBlock` with (1 × k) kernels and no 1×1 mixer branch, run on
    (B, L, C) tokens seen as a (B, C, 1, L) map."""

    def __init__(self, dim: int, kernel: int = 11, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5) -> None:
        kernel_size = (1, kernel)
        super().__init__(dim, mlp_ratio, kernel_size, layer_scale_init, kernel_size, use_scale_branch=False)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        # attention arguments are accepted (and ignored) so the block can sit in a `Transformer` stack
        return super().forward(x.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)


class TextTransformer(nn.Module):
    """CLIP text tower: embed, add positions, transformer, ln_final, pool at argmax(ids), project (no bias).

    `causal` selects the causal attention mask (no padding mask is ever used, as in the references).
    `pos_embed_mode` handles sequences shorter than `context_length`: "slice" takes the first rows
    (open_clip), "interpolate" resamples the table linearly (v1 package, bilinear, align_corners=False).
    `repmixer_kernel` > 0 builds MCt: a Text-RepMixer block before and after the `layers` attention blocks.
    """

    def __init__(
        self,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        heads: int = 8,
        layers: int = 12,
        output_dim: int = 512,
        mlp_ratio: float = 4.0,
        causal: bool = True,
        act: str = "gelu",
        ln_eps: float = 1e-5,
        pos_embed_mode: str = "slice",
        repmixer_kernel: int = 0,
    ) -> None:
        super().__init__()
        if pos_embed_mode not in POS_EMBED_MODES:
            raise ValueError(f"unknown pos_embed_mode {pos_embed_mode!r}; choose from {POS_EMBED_MODES}")
        self.context_length, self.vocab_size, self.width, self.output_dim = (
            context_length,
            vocab_size,
            width,
            output_dim,
        )
        self.causal, self.pos_embed_mode = causal, pos_embed_mode
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act, ln_eps)
        if repmixer_kernel:
            blocks = list(self.transformer.resblocks)
            first, last = (TextRepMixerBlock(width, repmixer_kernel, mlp_ratio) for _ in range(2))
            self.transformer.resblocks = nn.ModuleList([first, *blocks, last])
        self.ln_final = LayerNorm(width, eps=ln_eps)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def positions(self, seq_len: int) -> torch.Tensor:
        """Positional embedding rows for a sequence of `seq_len` tokens, (seq_len, width)."""
        pos = self.positional_embedding
        if seq_len == self.context_length:
            return pos
        if seq_len > self.context_length:
            raise DataError(
                f"token sequence of length {seq_len} exceeds the context length {self.context_length}"
            )
        if self.pos_embed_mode == "slice":
            return pos[:seq_len]
        return F.interpolate(
            pos[None, None], size=(seq_len, self.width), mode="bilinear", align_corners=False
        )[0, 0]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token plus positional embeddings: the input of the first block, (B, L, width)."""
        if ids.dim() != 2:
            raise DataError(f"text token ids must be a (batch, length) tensor, got shape {tuple(ids.shape)}")
        return self.token_embedding(ids) + self.positions(ids.shape[1]).to(self.token_embedding.weight.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks and `ln_final` over embedded tokens (B, L, width)."""
        return self.ln_final(self.transformer(x, is_causal=self.causal))

    def pool(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """The projected features at each row's end token `eot` (B,), (B, output_dim)."""
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.pool(self.encode(self.embed(ids)), ids.argmax(dim=-1))


# (v1 name, edgevl name); a name ending in "." is a prefix, otherwise the whole key
_V1_TOP = [
    ("embedding_layer.", "token_embedding."),
    ("positional_embedding.pos_embed.pos_embed", "positional_embedding"),
    ("final_layer_norm.", "ln_final."),
    ("projection_layer", "text_projection"),
]
_V1_BLOCK = [
    ("pre_norm_mha.0.", "ln_1."),
    ("pre_norm_mha.1.qkv_proj.weight", "attn.in_proj_weight"),
    ("pre_norm_mha.1.qkv_proj.bias", "attn.in_proj_bias"),
    ("pre_norm_mha.1.out_proj.", "attn.out_proj."),
    ("pre_norm_ffn.0.", "ln_2."),
    ("pre_norm_ffn.1.", "mlp.c_fc."),
    ("pre_norm_ffn.4.", "mlp.c_proj."),
    ("layer_scale", "layer_scale.gamma"),
    ("token_mixer.layer_scale", "token_mixer.layer_scale.gamma"),
    ("token_mixer.norm.rbr_skip.", "token_mixer.norm.identity."),
    ("token_mixer.mixer.rbr_skip.", "token_mixer.mixer.identity."),
    ("token_mixer.mixer.rbr_conv.", "token_mixer.mixer.conv_kxk."),
    ("token_mixer.reparam_conv.", "token_mixer.reparam_conv."),
    ("convffn.", "mlp."),
]
_V1_BLOCK_RE = re.compile(r"^transformer\.(\d+)\.(.*)$")
_EDGEVL_BLOCK_RE = re.compile(r"^transformer\.resblocks\.(\d+)\.(.*)$")


def _apply(name: str, pairs: list[tuple[str, str]], reverse: bool) -> str | None:
    for v1, ours in pairs:
        src, dst = (ours, v1) if reverse else (v1, ours)
        if src.endswith("."):
            if name.startswith(src):
                return dst + name[len(src) :]
        elif name == src:
            return dst
    return None


def _rename_text_key(key: str, to_v1: bool) -> str | None:
    match = (_EDGEVL_BLOCK_RE if to_v1 else _V1_BLOCK_RE).match(key)
    if match:
        inner = _apply(match.group(2), _V1_BLOCK, reverse=to_v1)
        if inner is None:
            return None
        return (
            f"transformer.{match.group(1)}.{inner}"
            if to_v1
            else f"transformer.resblocks.{match.group(1)}.{inner}"
        )
    return _apply(key, _V1_TOP, reverse=to_v1)


def _convert(state_dict: dict[str, torch.Tensor], to_v1: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        new = _rename_text_key(key, to_v1)
        if new is None:
            unknown.append(key)
        elif new == "positional_embedding":
            out[new] = value.reshape(value.shape[-2:])
        elif key == "positional_embedding":
            out[new] = value.reshape(1, 1, *value.shape)
        else:
            out[new] = value
    if unknown:
        layout = "edgevl" if to_v1 else "v1"
        raise CheckpointError(f"unrecognized {layout} text keys ({len(unknown)}): {', '.join(unknown[:5])}")
    return out


def convert_v1_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official v1 text state dict (keys without `text_encoder.`) to edgevl's layout.

    The (1, 1, 77, D) positional table is squeezed to (77, D); unknown keys raise one `CheckpointError`.
    """
    return _convert(state_dict, to_v1=False)


def to_v1_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `convert_v1_state_dict`: edgevl text keys (no `text.` prefix) to the v1 package names."""
    return _convert(state_dict, to_v1=True)
