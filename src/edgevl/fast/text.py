"""Text-tower wrappers that skip work the pooled output never sees: padding after the end token, and every row of
the last block(s) but the ones the end token depends on.

A wrapper is built around a reference `TextTransformer` and takes over its parameters, children and settings
(so the state-dict keys stay the same: a trained, wrapped tower saves and loads as the reference one); only the
forward differs. `TrimmedText` is exact for outputs and gradients (training uses it); `PooledText` is exact for
outputs and is what `optimize_for_inference` gives every text tower.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevl.fast.fused import FusedResidualAttentionBlock, FusedTextConvBlock, nhwc
from edgevl.models.precision import sdpa
from edgevl.models.text import TextRepMixerBlock, TextTransformer
from edgevl.models.transformer import Attention, ResidualAttentionBlock


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[b, rows[b, r]] for (B, L, D) tokens and (B, R) row indices: (B, R, D)."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], rows]


def attention_rows(attn: Attention, x: torch.Tensor, rows: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
    """The attention output at `rows` (B, R) only: queries from those rows, keys and values from all of x.
    Under `is_causal` a row at position p sees the keys at positions ≤ p, as in `Attention.forward`."""
    b, n, d = x.shape
    head_dim = d // attn.heads
    q = attn.project(gather_rows(x, rows), slice(0, d)).view(b, -1, attn.heads, head_dim).transpose(1, 2)
    kv = attn.project(x, slice(d, None)).view(b, n, 2, attn.heads, head_dim)
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
    mask = (torch.arange(n, device=x.device) <= rows[..., None]).unsqueeze(1) if is_causal else None
    out = sdpa(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(b, -1, d))


def block_rows(block: ResidualAttentionBlock | FusedResidualAttentionBlock, x: torch.Tensor, rows: torch.Tensor,
               is_causal: bool = False) -> torch.Tensor:
    """An attention block's output at `rows` (B, R) only, (B, R, D): its MLP runs on those rows."""
    x_rows = gather_rows(x, rows) + attention_rows(block.attn, block.ln_1(x), rows, is_causal)
    if isinstance(block, FusedResidualAttentionBlock):
        return block.ffn(block.ln_2(x_rows), x_rows)
    return x_rows + block.mlp(block.ln_2(x_rows))


def conv_reach(block: TextRepMixerBlock | FusedTextConvBlock) -> int:
    """How many positions to each side one output position of an MCt conv block depends on (token mixer, then
    the ConvFFN's conv, which has the token mixer's kernel)."""
    return 2 * (block.token_mixer.kernel_size[1] // 2)


def conv_block_center(block: TextRepMixerBlock | FusedTextConvBlock, window: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
    """An MCt conv block's output at the centre of a (B, 2·reach + 1, C) window of its input, (B, C).

    `valid` (B, 2·reach + 1) marks the window positions inside the sequence; the others must be zero in
    `window` and are zeroed again after the token mixer, which is what the convs' zero padding sees."""
    reach = conv_reach(block)
    y = block.token_mixer(window.transpose(1, 2).unsqueeze(2)) * valid[:, None, None, :]
    mid = slice(reach, reach + 1)
    if isinstance(block, FusedTextConvBlock):
        return block.ffn(nhwc(block.conv(y)[..., mid]).contiguous(), nhwc(y[..., mid]).contiguous()).flatten(1)
    mlp = block.mlp  # eval mode: its dropout is the identity
    return (y[..., mid] + block.layer_scale(mlp.fc2(mlp.act(mlp.fc1(mlp.conv(y)[..., mid]))))).flatten(1)


class TrimmedText(TextTransformer):
    """A text tower that, when causal, drops the positions after the last end token (77 -> ~15 for a typical
    caption): under a causal mask no position sees a later one, so outputs and gradients are the same.

    The length is data-dependent, so traced and compiled graphs keep every position.
    """

    def __init__(self, tower: TextTransformer) -> None:
        nn.Module.__init__(self)
        vars(self).update(vars(tower))  # the tower's own parameters, children and settings: the same keys

    def trimmed(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Embedded tokens (B, L, width) cut after the last end token, when that is exact and shapes may vary."""
        if not self.causal or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return x
        return x[:, : int(eot.max()) + 1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        eot = ids.argmax(dim=-1)
        return self.pool(self.encode(self.trimmed(self.embed(ids), eot)), eot)


class PooledText(TrimmedText):
    """A text tower that computes its last block(s) only where the pooled end-token output depends on them (and
    trims causal padding as `TrimmedText`): same outputs; MCt ~24 % fewer FLOPs, 12-layer towers ~6 %.

    An attention block last needs only its end-token query (keys and values still come from every position); an
    MCt conv block last needs a ±reach window of its input, so the attention block before it runs its queries,
    projection and MLP on that window only. The shapes are fixed (a gather at the end token), so compiled graphs
    keep the pruning; jit traces run the full stack.
    """

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        eot = ids.argmax(dim=-1)
        x = self.trimmed(self.embed(ids), eot)
        if torch.jit.is_tracing():
            return self.pool(self.encode(x), eot)
        return self.ln_final(self.pooled_tail(x, eot)) @ self.text_projection

    def pooled_tail(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """The last block's output at the end token, (B, D), computing only what that row depends on."""
        *head, last = self.transformer.resblocks
        if not isinstance(last, (TextRepMixerBlock, FusedTextConvBlock)):
            for block in head:
                x = block(x, is_causal=self.causal)
            return block_rows(last, x, eot[:, None], self.causal)[:, 0]
        *head, before = head  # MCt: a conv block always follows at least one attention block
        for block in head:
            x = block(x, is_causal=self.causal)
        reach = conv_reach(last)
        rows = eot[:, None] + torch.arange(-reach, reach + 1, device=x.device)
        valid = (rows >= 0) & (rows < x.shape[1])
        window = block_rows(before, x, rows.clamp(0, x.shape[1] - 1), self.causal) * valid[..., None]
        return conv_block_center(last, window, valid.to(window.dtype))

