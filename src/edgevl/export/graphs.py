"""The exported graphs as small `nn.Module`s with plain tensor inputs/outputs, plus random example inputs.

CLIP: `image` [B, 3, H, W] -> `image_features` [B, D] and `text` [B, ctx] int64 -> `text_features` [B, D]
(unnormalized, like `encode_image` / `encode_text`). LightCap: the visual part runs backbone, concepts,
modulator, projection and the fusion prefix once and returns the prefix keys/values of every fusion layer; the
decoder step takes one token per row plus that cache and returns next-token log-probs and the grown cache. The
phone formats keep every shape static, so their captioner graphs use a fixed-size cache instead: the visual part
returns it zero-padded to prefix + max caption tokens, and the step takes the caption position, writes the new
keys/values there and attends only to positions up to it (`CaptionerStaticStep`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
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

    @property
    def batch_axes(self) -> dict[str, list[int | None]]:
        """The batch axis of each input and output (None: shared by all rows, like the caption position)."""

        def axis(axes: dict[str, dict[int, str]], name: str) -> int | None:
            return next((i for i, a in axes.get(name, {}).items() if a == BATCH), None)

        return {"inputs": [axis(self.dynamic_axes, n) for n in self.input_names],
                "outputs": [axis(self.output_axes, n) for n in self.output_names]}


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


class CaptionerStaticVisual(CaptionerVisual):
    """`CaptionerVisual` without in-place cache writes (Core ML cannot convert them), its keys/values zero-padded to
    the fixed cache size prefix + max caption tokens."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.model.encode_prefix(image)
        layers = self.model.fusion.layers
        keys, values = [], []
        for index, layer in enumerate(layers):
            _, layer_keys, layer_values = layer.attention.project(x)
            keys.append(layer_keys)
            values.append(layer_values)
            if index < len(layers) - 1:  # the prefix attends to itself only; the last layer's output is unused
                x = layer(x)
        room = (0, 0, 0, self.model.config.max_caption_tokens)  # zeros after the prefix along the position axis
        return F.pad(torch.stack(keys), room), F.pad(torch.stack(values), room)


class CaptionerStaticStep(nn.Module):
    """One decoding step over a fixed-size cache: tokens [B], the caption position [1] (0 for BOS) and keys/values
    [layers, B, heads, prefix_len + max_caption_tokens, head_dim] -> log-probs [B, V] and the cache with this
    token's keys/values written at prefix_len + position. Attention is masked to the positions up to that slot, so
    the unused (zero) slots do not count and the log-probs are those of `LightCap.step`."""

    def __init__(self, model: LightCap) -> None:
        super().__init__()
        self.model = model
        self.prefix_len = model.concepts.top_k + model.config.grid_tokens
        self.register_buffer("slots", torch.arange(self.prefix_len + model.config.max_caption_tokens),
                             persistent=False)

    def forward(self, tokens: torch.Tensor, position: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fusion = self.model.fusion
        x = fusion.embedding_norm(fusion.word_embeddings(tokens)[:, None] + fusion.position_embeddings(position)
                                  + fusion.token_type_embeddings.weight[0])
        slot = position + self.prefix_len
        current = (self.slots == slot)[:, None]  # [S, 1]: where this token's keys/values go
        unused = torch.zeros((), dtype=x.dtype).masked_fill(self.slots > slot, float("-inf"))  # [S] attention bias
        new_keys, new_values = [], []
        for layer, layer_keys, layer_values in zip(fusion.layers, keys.unbind(0), values.unbind(0)):
            attention = layer.attention
            q, k, v = attention.project(x)  # [B, heads, 1, head_dim] each
            layer_keys, layer_values = torch.where(current, k, layer_keys), torch.where(current, v, layer_values)
            scale = attention.query_scale or attention.head_dim**-0.5
            weights = (q @ layer_keys.transpose(-1, -2) * scale + unused).softmax(dim=-1)
            attended = (weights @ layer_values).transpose(1, 2).flatten(2)
            x = layer.attention_norm(x + attention.out(attended))
            x = layer.output_norm(x + layer.feed_forward(x))
            new_keys.append(layer_keys)
            new_values.append(layer_values)
        return self.model.next_token_log_probs(x[:, 0]), torch.stack(new_keys), torch.stack(new_values)


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


def captioner_graphs(model: LightCap, static_cache: bool = False) -> list[Graph]:
    """Visual and decoder-step graphs of a LightCap model (backbone folded, eval mode); `static_cache`: the
    fixed-size cache pair the phone formats need (`CaptionerStaticVisual`, `CaptionerStaticStep`)."""
    cfg = model.config
    if static_cache:
        visual, step = CaptionerStaticVisual(model).eval(), CaptionerStaticStep(model).eval()
    else:
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

    def static_step_inputs(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """A fixed-size cache after a random number of caption tokens (any position up to the last one)."""
        with torch.no_grad():
            keys, values = visual(*images(batch, gen))
            filled = int(torch.randint(0, cfg.max_caption_tokens, (1,), generator=gen))
            for position in range(filled):
                _, keys, values = step(torch.randint(0, cfg.vocab_size, (batch,), generator=gen),
                                       torch.tensor([position]), keys, values)
        return torch.randint(0, cfg.vocab_size, (batch,), generator=gen), torch.tensor([filled]), keys, values

    if static_cache:
        rows = {1: BATCH}
        return [
            Graph("captioner_visual", visual, ["image"], ["keys", "values"], {"image": {0: BATCH}}, images,
                  {"keys": rows, "values": rows}),
            Graph("captioner_step", step, ["tokens", "position", "keys", "values"],
                  ["log_probs", "updated_keys", "updated_values"],
                  {"tokens": {0: BATCH}, "keys": rows, "values": rows}, static_step_inputs,
                  {"log_probs": {0: BATCH}, "updated_keys": rows, "updated_values": rows}),
        ]
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
