"""The exported graphs as small `nn.Module`s with plain tensor inputs/outputs, plus random example inputs.

CLIP: `image` [B, 3, H, W] -> `image_features` [B, D] and `text` [B, ctx] int64 -> `text_features` [B, D]
(unnormalized, like `encode_image` / `encode_text`). LightCap: the visual part runs backbone, concepts,
modulator, projection and the fusion prefix once and returns the prefix keys/values of every fusion layer; the
decoder step takes one token per row plus that cache and returns next-token log-probs and the grown cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgevl.models.lightcap.fusion import KVCache
from edgevl.models.lightcap.model import LightCap

BATCH = "batch"
PAST = "past_length"
PRESENT = "present_length"


@dataclass
class Graph:
    """One exported graph: its module, tensor names, dynamic axes and a maker of random inputs at a batch size."""

    name: str
    module: nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    make_inputs: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
    output_axes: dict[str, dict[int, str]]
    axis_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    real_inputs: tuple[torch.Tensor, ...] | None = None  # preprocessed images / tokenized texts, checked too

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


class ImageEncoder(nn.Module):
    """`model.encode_image` as a module (the tower of a reparameterized CLIP)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class TextEncoder(nn.Module):
    """`model.encode_text` as a module: int64 token ids [B, ctx] -> features [B, D]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(text)


class CaptionerVisual(nn.Module):
    """Pixels -> fusion-prefix keys and values [layers, B, heads, prefix_len, head_dim] (LightCap.start)."""

    def __init__(self, model: LightCap) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, _ = self.model.encode_prefix(image)
        cache = self.model.fusion.prefill(prefix, prefix.shape[1])
        return torch.stack(cache.keys), torch.stack(cache.values)


class CaptionerStep(nn.Module):
    """One decoding step (LightCap.step): tokens [B] and a cache of S positions -> log-probs [B, V] and the
    cache grown to S + 1. The caption position is S minus the prefix length, so no position input is needed."""

    def __init__(self, model: LightCap) -> None:
        super().__init__()
        self.model = model
        self.prefix_len = model.concepts.top_k + model.config.grid_tokens

    def forward(self, tokens: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slot = past_keys.new_zeros(past_keys.shape[:3] + (1,) + past_keys.shape[4:])
        keys, values = torch.cat([past_keys, slot], dim=3), torch.cat([past_values, slot], dim=3)
        length = past_keys.shape[3]
        cache = KVCache(list(keys.unbind(0)), list(values.unbind(0)), length)
        caption = self.model.embed_caption(tokens[:, None], length - self.prefix_len)
        hidden = self.model.fusion.step(caption, cache)
        return self.model.next_token_log_probs(hidden[:, 0]), torch.stack(cache.keys), torch.stack(cache.values)


def clip_graphs(model: nn.Module) -> list[Graph]:
    """Image and text graphs of a (reparameterized, eval-mode) CLIP."""
    size = model.model_cfg["vision_cfg"].get("image_size", 224) if hasattr(model, "model_cfg") else 224
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    ctx, vocab = model.context_length, model.text.token_embedding.num_embeddings

    def images(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 3, *size, generator=gen),)

    def texts(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (random_token_ids(batch, ctx, vocab, gen),)

    return [
        Graph("image", ImageEncoder(model).eval(), ["image"], ["image_features"], {"image": {0: BATCH}}, images,
              {"image_features": {0: BATCH}}),
        Graph("text", TextEncoder(model).eval(), ["text"], ["text_features"], {"text": {0: BATCH}}, texts,
              {"text_features": {0: BATCH}}),
    ]


def attach_world_inputs(graphs: list[Graph], preprocess, tokenizer, n: int = 4) -> None:
    """Give the image/text graphs `n` rendered world test images (preprocessed) and their tokenized captions as
    `real_inputs`, so parity also covers real pixel and token statistics, not only random ones."""
    from edgevl.data.world import samples

    drawn = list(samples(n, split="test", seed=0))
    real = {"image": (torch.stack([preprocess(s.image) for s in drawn]),),
            "text": (tokenizer([s.captions[0] for s in drawn]),)}
    for graph in graphs:
        graph.real_inputs = real.get(graph.name)


def random_token_ids(batch: int, ctx: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """CLIP-like ids: SOT, random words, EOT (the largest id, so argmax pooling finds it) at a random length."""
    ids = torch.zeros(batch, ctx, dtype=torch.long)
    for row in range(batch):
        length = int(torch.randint(2, ctx + 1, (1,), generator=gen))
        ids[row, 0] = vocab - 2
        ids[row, 1 : length - 1] = torch.randint(1, vocab - 2, (length - 2,), generator=gen)
        ids[row, length - 1] = vocab - 1
    return ids


def captioner_graphs(model: LightCap) -> list[Graph]:
    """Visual and decoder-step graphs of a LightCap model (backbone folded, eval mode)."""
    cfg = model.config
    visual, step = CaptionerVisual(model).eval(), CaptionerStep(model).eval()
    prefix_len = step.prefix_len

    def images(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=gen),)

    def step_inputs(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """A cache after a random number of caption tokens, so parity covers the dynamic cache length."""
        with torch.no_grad():
            keys, values = visual(*images(batch, gen))
            for _ in range(int(torch.randint(0, 3, (1,), generator=gen))):
                _, keys, values = step(torch.randint(0, cfg.vocab_size, (batch,), generator=gen), keys, values)
        return torch.randint(0, cfg.vocab_size, (batch,), generator=gen), keys, values

    past, present = {1: BATCH, 3: PAST}, {1: BATCH, 3: PRESENT}
    return [
        Graph("captioner_visual", visual, ["image"], ["past_keys", "past_values"], {"image": {0: BATCH}}, images,
              {"past_keys": {1: BATCH}, "past_values": {1: BATCH}}),
        Graph("captioner_step", step, ["tokens", "past_keys", "past_values"],
              ["log_probs", "present_keys", "present_values"],
              {"tokens": {0: BATCH}, "past_keys": past, "past_values": past}, step_inputs,
              {"log_probs": {0: BATCH}, "present_keys": present, "present_values": present},
              {PAST: (prefix_len, prefix_len + cfg.max_caption_tokens - 1)}),
    ]
