"""Parameters and multiply-accumulates per LightCap component (MACs = FlopCounterMode FLOPs / 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgevl.models.lightcap.model import LightCap


@dataclass(frozen=True)
class ComponentCost:
    name: str
    params: int
    macs: int


def _params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _macs(fn) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops() // 2, out


@torch.no_grad()
def profile_lightcap(model: LightCap, new_tokens: int = 20) -> list[ComponentCost]:
    """Cost of captioning one image at the model's input size with `new_tokens` greedy (beam 1) steps."""
    model.eval()
    size = model.config.image_size
    pixels = torch.zeros(1, 3, size, size)
    macs_backbone, grid = _macs(lambda: model.backbone(pixels))
    macs_concepts, concepts = _macs(lambda: model.concepts(grid))
    words = model.concept_embeddings(concepts.indices)
    macs_modulator, modulated = _macs(lambda: model.modulator(grid, words))
    macs_proj, _ = _macs(lambda: model.visual_proj(modulated.flatten(2).transpose(1, 2)))
    prefix, _ = model.encode_prefix(pixels)
    capacity = prefix.shape[1] + model.config.max_caption_tokens
    macs_prefill, cache = _macs(lambda: model.fusion.prefill(prefix, capacity))
    steps = min(new_tokens, model.config.max_caption_tokens)
    token = torch.tensor([model.bos_id])

    def decode() -> None:
        for position in range(steps):
            hidden = model.fusion.step(model.embed_caption(token[:, None], position), cache)
            model.next_token_log_probs(hidden[:, 0])

    macs_decode, _ = _macs(decode)
    return [
        ComponentCost("backbone (frozen)", _params(model.backbone), macs_backbone),
        ComponentCost("concept extractor", _params(model.concepts), macs_concepts),
        ComponentCost("cross-modal modulator", _params(model.modulator), macs_modulator),
        ComponentCost("visual projection", _params(model.visual_proj, model.visual_norm) + model.visual_pos.numel(),
                      macs_proj),
        ComponentCost("fusion prefix (concepts + visual)", _params(model.fusion), macs_prefill),
        ComponentCost(f"decoding, {steps} tokens (fusion + heads)", _params(model.head), macs_decode),
    ]


def format_profile(model: LightCap, costs: list[ComponentCost]) -> str:
    """A plain-text table of `costs` with totals."""
    lines = [f"{model.config.name}: {model.config.image_size}x{model.config.image_size}, "
             f"vocab {model.config.vocab_size}, {model.config.num_concepts} concepts",
             f"{'component':<40}{'params (M)':>12}{'GMACs':>10}"]
    lines += [f"{c.name:<40}{c.params / 1e6:>12.3f}{c.macs / 1e9:>10.3f}" for c in costs]
    lines.append(f"{'total':<40}{sum(c.params for c in costs) / 1e6:>12.3f}"
                 f"{sum(c.macs for c in costs) / 1e9:>10.3f}")
    return "\n".join(lines)
