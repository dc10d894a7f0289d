"""The LightCap captioner: frozen grid backbone -> concepts -> modulator -> TinyBERT fusion -> ensemble head.

A model folder is `config.json` + `model.safetensors` + `vocab.json` (caption words and concept names), read and
written without pickle; writes are atomic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgevl.errors import CheckpointError, ConfigError
from edgevl.io import atomic_write, atomic_write_text
from edgevl.models.factory import LOCAL_DIR
from edgevl.models.lightcap.backbones import build_backbone
from edgevl.models.lightcap.concepts import ConceptExtractor, Concepts
from edgevl.models.lightcap.config import LightCapConfig, get_lightcap_config
from edgevl.models.lightcap.fusion import FusionEncoder, KVCache
from edgevl.models.lightcap.heads import EnsembleHead
from edgevl.models.lightcap.modulator import CrossModalModulator
from edgevl.models.lightcap.vocab import WordVocab, split_words
from edgevl.run_layout import run_model_folder

CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE = "config.json", "model.safetensors", "vocab.json"


@dataclass
class CaptionState:
    """Decoding state of a batch of rows: the fusion KV cache and the next caption position."""

    cache: KVCache
    position: int

    def select(self, rows: torch.Tensor) -> CaptionState:
        return CaptionState(self.cache.select(rows), self.position)


class LightCap(nn.Module):
    """Image -> caption model; `forward` is the teacher-forced training pass, `start`/`step` drive decoding."""

    def __init__(self, config: LightCapConfig, vocab: WordVocab | None = None,
                 concept_names: list[str] | None = None) -> None:
        super().__init__()
        self.vocab = vocab or WordVocab.placeholder(config.vocab_size)
        self.concept_names = concept_names or [f"[concept{i}]" for i in range(config.num_concepts)]
        self.config = config.replace(vocab_size=len(self.vocab), num_concepts=len(self.concept_names))
        cfg = self.config
        self.backbone = build_backbone(cfg.backbone)
        self.backbone.requires_grad_(False)
        channels = self.backbone.out_channels
        self.concepts = ConceptExtractor(channels, cfg.num_concepts, cfg.concept_joint_dim, cfg.concept_hidden,
                                         cfg.concept_top_k)
        self.modulator = CrossModalModulator(cfg.hidden, channels, cfg.modulator_reduction, cfg.modulator_combine)
        self.visual_proj = nn.Linear(channels, cfg.hidden)
        self.visual_pos = nn.Parameter(torch.zeros(cfg.grid_tokens, cfg.hidden))
        self.visual_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.fusion = FusionEncoder(cfg.vocab_size, cfg.hidden, cfg.layers, cfg.heads, cfg.ffn,
                                    cfg.max_caption_tokens + self.concepts.top_k)
        self.head = EnsembleHead(cfg.hidden, cfg.vocab_size, cfg.num_heads)
        self.register_buffer("concept_word_ids", self._concept_word_ids(self.concept_names))
        nn.init.normal_(self.visual_pos, std=0.02)
        blocked = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        blocked[[self.vocab.pad_id, self.vocab.bos_id, self.vocab.unk_id]] = True
        self.register_buffer("blocked_tokens", blocked, persistent=False)

    # ------------------------------------------------------------------------------------ building
    def _concept_word_ids(self, names: list[str]) -> torch.Tensor:
        """[V, P] caption-vocabulary ids of each concept's words, padded with PAD (0)."""
        rows = [self.vocab.encode(name) or [self.vocab.unk_id] for name in names]
        out = torch.full((len(rows), max(map(len, rows))), self.vocab.pad_id, dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def set_concepts(self, names: list[str], text_embeddings: torch.Tensor) -> None:
        """Install the concept vocabulary: names and their precomputed CLIP text embeddings [V, joint_dim]."""
        if not names:
            raise ConfigError("the concept vocabulary is empty; LightCap needs at least one concept word")
        if len(names) != self.concepts.num_concepts:
            raise ConfigError(f"{len(names)} concept names for a model built with {self.concepts.num_concepts}")
        if any(not split_words(n) for n in names):
            raise ConfigError("concept names must contain at least one word each")
        self.concepts.set_text_embeddings(text_embeddings)
        self.concept_names = list(names)
        self.concept_word_ids = self._concept_word_ids(self.concept_names).to(self.concept_word_ids.device)

    def train(self, mode: bool = True) -> LightCap:
        """Train mode for everything except the frozen backbone, which stays in eval mode (BatchNorm stats)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def fold_backbone(self) -> LightCap:
        """Re-parameterize an MCi backbone in place for inference (no-op for the ResNet trunk).

        The folded model has different backbone keys: save checkpoints before folding, not after.
        """
        from edgevl.models.blocks import reparameterize_modules

        reparameterize_modules(self.backbone.eval())
        return self

    def quantize_decoder(self) -> LightCap:
        """int8 dynamic quantization of the fusion layers and the tied output table, in
        place (`edgevl.models.lightcap.quantize`): decoding reads a quarter of the weight bytes per token.
        CPU inference only; train and save the float model."""
        from edgevl.models.lightcap.quantize import quantize_linears

        quantize_linears(self.fusion.layers)
        self.head.quantize(self.fusion.word_embeddings.weight)
        return self

    # ------------------------------------------------------------------------------------- forward
    def grid_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frozen backbone grid [B, C, H, W] (no gradient)."""
        with torch.no_grad():
            return self.backbone(pixels)

    def concept_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        """[B, K] concept indices -> [B, K, D]: mean of each concept's word embeddings (shared with the fusion)."""
        ids = self.concept_word_ids[indices]
        mask = (ids != self.vocab.pad_id).unsqueeze(-1).to(self.fusion.word_embeddings.weight.dtype)
        return (self.fusion.word_embeddings(ids) * mask).sum(-2) / mask.sum(-2).clamp_min(1)

    def encode_prefix(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Concepts]:
        """Embedded [concept tokens | visual tokens] prefix [B, K + HW, D] and the retrieved concepts."""
        return self.encode_grid(self.grid_features(pixels))

    def encode_grid(self, grid: torch.Tensor) -> tuple[torch.Tensor, Concepts]:
        """`encode_prefix` from backbone grid features [B, C, H, W] (training caches them once per image).

        With `use_concepts` off the prefix is the visual tokens alone; with `use_modulator` off the grid is
        not modulated (the ablation switches)."""
        concepts = self.concepts(grid)
        words = self.concept_embeddings(concepts.indices)
        if self.config.use_concepts and self.config.use_modulator:
            grid = self.modulator(grid, words)
        visual = self.visual_proj(grid.flatten(2).transpose(1, 2))
        if visual.shape[1] != self.visual_pos.shape[0]:
            raise ConfigError(f"a {tuple(grid.shape[-2:])} grid gives {visual.shape[1]} visual tokens; model "
                              f"{self.config.name!r} expects {self.config.image_size}x{self.config.image_size} input")
        visual = self.visual_norm(visual + self.visual_pos)
        if not self.config.use_concepts:
            return visual, concepts
        tags = self.fusion.embed_text(words, self.config.max_caption_tokens, token_type=1)
        return torch.cat([tags, visual], dim=1), concepts

    def embed_caption(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.fusion.embed_text(self.fusion.word_embeddings(ids), start, token_type=0)

    def forward(self, pixels: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: [B, T] ids (BOS first) -> per-head next-token logits [num_heads, B, T, vocab]."""
        prefix, _ = self.encode_prefix(pixels)
        hidden = self.fusion(prefix, self.embed_caption(caption_ids, 0))
        return self.head(hidden, self.fusion.word_embeddings.weight)

    def next_token_log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Ensemble-averaged log-probabilities with PAD/BOS/UNK blocked."""
        lp = self.head.log_probs(hidden, self.fusion.word_embeddings.weight)
        return lp.masked_fill(self.blocked_tokens, float("-inf"))

    # ------------------------------------------------------------------------------------ decoding
    @property
    def bos_id(self) -> int:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int:
        return self.vocab.eos_id

    @property
    def max_new_tokens(self) -> int:
        return self.config.max_caption_tokens

    def start(self, pixels: torch.Tensor) -> CaptionState:
        """Run backbone, concepts and the fusion prefix once; returns the state for `step`."""
        return self.start_grid(self.grid_features(pixels))

    def start_grid(self, grid: torch.Tensor) -> CaptionState:
        """`start` from backbone grid features (decoding from cached features)."""
        prefix, _ = self.encode_grid(grid)
        cache = self.fusion.prefill(prefix, prefix.shape[1] + self.config.max_caption_tokens)
        return CaptionState(cache, 0)

    def step(self, state: CaptionState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([N] ids; BOS first) and get next-token log-probs [N, vocab]."""
        if state.position >= self.config.max_caption_tokens:
            raise ValueError(f"caption longer than max_caption_tokens={self.config.max_caption_tokens}")
        hidden = self.fusion.step(self.embed_caption(tokens[:, None], state.position), state.cache)
        state.position += 1
        return self.next_token_log_probs(hidden[:, 0])

    # ----------------------------------------------------------------------------------- save/load
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write config.json, model.safetensors and vocab.json into `folder` (each write atomic)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        for name, text in self.folder_files().items():
            atomic_write_text(folder / name, text)
        return folder

    def folder_files(self) -> dict[str, str]:
        """The text files of a model folder beside its weights: `config.json` and `vocab.json` (name -> content)."""
        vocab = {"type": "word", "words": self.vocab.words, "concepts": self.concept_names}
        return {VOCAB_FILE: json.dumps(vocab), CONFIG_FILE: json.dumps(self.config.to_dict(), indent=2)}

    @classmethod
    def load_pretrained(cls, folder: str | Path) -> LightCap:
        """Load a model folder written by `save_pretrained` (no pickle)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"LightCap model folder {str(folder)!r} does not exist")
        config = LightCapConfig.load(folder / CONFIG_FILE)
        vocab_path = folder / VOCAB_FILE
        vocab, concepts = None, None
        if vocab_path.is_file():
            vocab = WordVocab.load(vocab_path)
            concepts = json.loads(vocab_path.read_text(encoding="utf-8")).get("concepts")
            if concepts is not None and not concepts:
                raise ConfigError(f"{str(vocab_path)!r}: the concept vocabulary is empty")
        model = cls(config, vocab, concepts)
        model.load_weights(folder / WEIGHTS_FILE)
        return model.eval()

    def load_weights(self, path: str | Path) -> None:
        """Strictly load a LightCap safetensors state dict."""
        from edgevl.tensor_files import read_safetensors

        try:
            state = read_safetensors(path)
        except CheckpointError as exc:
            raise CheckpointError(f"cannot read LightCap weights: {exc}") from exc
        try:
            result = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"LightCap weights {str(path)!r} do not match the model: {exc}") from exc
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(f"LightCap weights {str(path)!r} do not match the model: missing "
                                  f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


def create_lightcap(name_or_path: str | Path, weights: str | Path | None = None) -> LightCap:
    """A LightCap model from a preset name ('lightcap-tiny'), a config JSON, a model folder or a `train-captioner`
    run folder (its final model, or its newest checkpoint when that is newer), in eval mode.

    `weights` (a .safetensors state dict) is loaded on top when given; a `weights` folder (or a
    `local-dir:FOLDER` name) is a complete saved model and is loaded as such.
    """
    if weights is not None and Path(weights).is_dir():
        name_or_path, weights = weights, None
    path = Path(str(name_or_path).removeprefix(LOCAL_DIR))
    if path.is_dir():
        model = LightCap.load_pretrained(run_model_folder(path) or path)  # a train-captioner run: its model
    elif path.suffix == ".json" and path.is_file():
        model = LightCap(LightCapConfig.load(path))
    else:
        model = LightCap(get_lightcap_config(str(name_or_path)))
    if weights is not None:
        model.load_weights(weights)
    return model.eval()
