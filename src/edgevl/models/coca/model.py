"""The CoCa captioner (open_clip's `CoCa`): contrastive image/text latents plus a multimodal decoder that predicts
the next token, and `generate` with open_clip's semantics (`models/coca/generate.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.errors import ConfigError
from edgevl.models.coca.towers import CoCaTextTower, CoCaVisionTower, MultimodalDecoder
from edgevl.models.config import ModelConfig


class CoCa(nn.Module):
    """Image tower `visual`, text tower `text`, decoder `text_decoder` and `logit_scale`, open_clip's key layout.

    `encode_image` / `encode_text` normalize by default (CoCa's default, unlike CLIP's); `forward` returns
    open_clip's dict. `pad_id` is the id `generate` pads finished rows with (a real CLIP token, "!").
    """

    def __init__(self, visual: CoCaVisionTower, text: CoCaTextTower, text_decoder: MultimodalDecoder,
                 init_logit_scale: float = math.log(1 / 0.07), pad_id: int = 0) -> None:
        super().__init__()
        self.text = text
        self.visual = visual
        self.text_decoder = text_decoder
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.pad_id = pad_id

    @property
    def context_length(self) -> int:
        """The number of text ids the tokenizer should produce (76 for the released models)."""
        return self.text.text_context

    @property
    def max_input_ids(self) -> int:
        """The most ids `generate` may feed: the shorter of the text tower's and the decoder's contexts."""
        return min(self.context_length, self.text_decoder.context_length)

    def encode_image_with_tokens(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unnormalized image latent (B, D), decoder image tokens (B, n_queries - 1, D))."""
        return self.visual(image)

    def encode_text_with_tokens(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unnormalized text latent (B, D), token states (B, L, D) before the final norm)."""
        return self.text(text)

    def encode_image(self, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image latents (B, D), L2-normalized unless `normalize=False`."""
        latent = self.visual(image)[0]
        return F.normalize(latent, dim=-1) if normalize else latent

    def encode_text(self, text: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text latents (B, D) of ids (B, L), L2-normalized unless `normalize=False`."""
        latent = self.text(text)[0]
        return F.normalize(latent, dim=-1) if normalize else latent

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None,
                image_latent: torch.Tensor | None = None, image_embs: torch.Tensor | None = None,
                output_labels: bool = True) -> dict[str, torch.Tensor]:
        """open_clip's CoCa forward: normalized features, `logits` (B, L - 1, V) predicting `labels` = text[:, 1:]
        (or (B, L, V) with `output_labels=False`) and `logit_scale` = exp(logit_scale)."""
        if image_latent is None or image_embs is None:
            image_latent, image_embs = self.visual(image)
        if text is None:
            return {"image_features": image_latent, "image_embs": image_embs}
        text_latent, token_embs = self.text(text)
        out = {"image_features": F.normalize(image_latent, dim=-1), "text_features": F.normalize(text_latent, dim=-1)}
        if output_labels:
            out["labels"], token_embs = text[:, 1:], token_embs[:, :-1]
        out["logits"] = self.text_decoder(image_embs, token_embs)
        out["logit_scale"] = self.logit_scale.exp()
        return out

    def generate(self, image: torch.Tensor, text: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Caption token ids (B, <= seq_len) starting with the SOT, open_clip's `generate` (see
        `edgevl.models.coca.generate.generate` for the arguments)."""
        from edgevl.models.coca.generate import generate

        return generate(self, image, text, **kwargs)


def build_coca(cfg: ModelConfig) -> CoCa:
    """A randomly initialized CoCa for a config with `multimodal_cfg` (open_clip's CoCa JSON schema)."""
    vision, text, multi = cfg.vision_cfg, cfg.text_cfg, cfg.multimodal_cfg
    if multi is None or not cfg.custom_text:
        raise ConfigError("a CoCa config needs 'multimodal_cfg' and 'custom_text': true")
    if not vision.attentional_pool or vision.timm_model_name:
        raise ConfigError("CoCa needs the OpenAI-style ViT with 'attentional_pool': true in vision_cfg")
    if not text.embed_cls or text.model_type != "transformer" or text.no_causal_mask:
        raise ConfigError("CoCa needs a causal transformer text tower with 'embed_cls': true in text_cfg")
    if not cfg.embed_dim == text.width == multi.width:
        raise ConfigError(f"CoCa needs embed_dim = text width = multimodal width, got {cfg.embed_dim}, "
                          f"{text.width}, {multi.width}")
    if multi.ls_init_value is not None:
        raise ConfigError("CoCa with layer scale (multimodal_cfg.ls_init_value) is not supported")
    act = "quick_gelu" if cfg.quick_gelu else "gelu"
    visual = CoCaVisionTower(
        vision.attn_pooler_heads, vision.attn_pooler_queries, image_size=vision.image_size,
        patch_size=vision.patch_size, width=vision.width, layers=vision.layers,
        heads=vision.width // vision.head_width, mlp_ratio=vision.mlp_ratio, output_dim=cfg.embed_dim, act=act,
    )
    text_tower = CoCaTextTower(
        text.context_length, text.pad_id, vocab_size=text.vocab_size, width=text.width,
        heads=text.heads if text.heads is not None else text.width // 64, layers=text.layers,
        output_dim=cfg.embed_dim, mlp_ratio=text.mlp_ratio, act=act,
    )
    decoder = MultimodalDecoder(multi.context_length, multi.width, multi.heads, multi.layers, text.vocab_size, act)
    scale = {} if cfg.init_logit_scale is None else {"init_logit_scale": cfg.init_logit_scale}
    return CoCa(visual, text_tower, decoder, **scale)
