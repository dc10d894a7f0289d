"""The text wrappers: trimming is exact for outputs and gradients, keeps the reference tower's keys, and the row
helpers of pooled pruning equal the full blocks at the selected rows."""

from __future__ import annotations

import torch

from edgevl.fast import trim_causal_padding
from edgevl.fast.text import TrimmedText, attention_rows, block_rows
from edgevl.models.text import TextTransformer
from edgevl.models.transformer import ResidualAttentionBlock


def test_trimmed_causal_padding_gives_the_same_loss_and_gradients():
    # the trainer trims causal towers; that is only allowed because nothing after the end token reaches the loss
    torch.manual_seed(0)
    model = TextTransformer(20, 100, 32, 4, 2, output_dim=16, causal=True).double().train()
    trimmed = TrimmedText(model)  # the same parameters, with the trimming forward
    ids = torch.zeros(3, 20, dtype=torch.long)
    ids[:, 0] = 1
    ids[0, 1:4], ids[1, 1:7], ids[2, 1:3] = 5, 6, 7
    ids[0, 4], ids[1, 7], ids[2, 3] = 99, 99, 99  # end tokens; the longest caption ends at position 7
    results = []
    for tower in (model, trimmed):
        model.zero_grad()
        out = tower(ids)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert model.positional_embedding.grad[8:].abs().max() == 0  # rows after the last end token get no gradient
    (out_full, grads_full), (out_trim, grads_trim) = results
    torch.testing.assert_close(out_trim, out_full, atol=1e-5, rtol=1e-5)  # LayerNorm computes in float32
    for full, trimmed_grad in zip(grads_full, grads_trim):
        torch.testing.assert_close(trimmed_grad, full, atol=1e-5, rtol=1e-5)  # LayerNorm computes in float32


def test_trimming_wraps_causal_towers_only_and_keeps_the_state_dict():
    torch.manual_seed(0)
    causal = TextTransformer(20, 100, 32, 4, 1, output_dim=16, causal=True)
    bidirectional = TextTransformer(20, 100, 32, 4, 1, output_dim=16, causal=False)
    holder = torch.nn.ModuleDict({"causal": causal, "bidirectional": bidirectional})
    keys = list(holder.state_dict())
    assert trim_causal_padding(holder) is holder
    assert type(holder["causal"]) is TrimmedText and holder["bidirectional"] is bidirectional
    assert list(holder.state_dict()) == keys
    assert holder["causal"].positional_embedding is causal.positional_embedding
    assert trim_causal_padding(holder)["causal"] is holder["causal"]  # a wrapped tower is not wrapped again
    assert type(trim_causal_padding(causal)) is TrimmedText  # a bare tower comes back wrapped


def test_row_helpers_equal_the_full_block_at_the_selected_rows():
    torch.manual_seed(0)
    block = ResidualAttentionBlock(32, 4).eval()
    x, rows = torch.randn(2, 9, 32), torch.tensor([[8, 0], [3, 5]])
    picked = torch.arange(2)[:, None], rows
    with torch.no_grad():
        for causal in (False, True):
            full_attn = block.attn(block.ln_1(x), is_causal=causal)
            assert torch.allclose(attention_rows(block.attn, block.ln_1(x), rows, causal), full_attn[picked],
                                  atol=1e-6)
            assert torch.allclose(block_rows(block, x, rows, causal), block(x, is_causal=causal)[picked], atol=1e-6)
