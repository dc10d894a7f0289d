"""CLIP wrapper: an image tower `visual`, a text tower `text` and a learnable `logit_scale` (open_clip API).

`forward` returns L2-normalized features and exp(logit_scale) clamped at `logit_scale_max` (100, as in the v1
package; open_clip does not clamp, which only differs for scales above 100). Towers can be frozen for
fine-tuning (`lock_image_tower`, `lock_text_tower`) and gradient-checkpointed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.models.text import TextTransformer


class TrunkVisual(nn.Module):
    """open_clip's timm wrapper: `trunk` pools and projects (its `head.fc`); `head` stays empty."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def _param_groups(module: nn.Module) -> list[nn.Module]:
    """Ordered freezing groups: the module's children, ModuleLists (stages, blocks) expanded one level."""
    groups: list[nn.Module] = []
    for child in module.children():
        groups.extend(child if isinstance(child, nn.ModuleList) else [child])
    return groups


class CLIP(nn.Module):
    """Two-tower contrastive image-text model with open_clip's `encode_*` / `forward` contract."""

    def __init__(
        self,
        visual: nn.Module,
        text: TextTransformer,
        init_logit_scale: float = math.log(1 / 0.07),
        logit_scale_max: float = 100.0,
        output_dict: bool = False,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_scale_max = logit_scale_max
        self.output_dict = output_dict
        self._frozen_bn: list[nn.Module] = []

    @property
    def context_length(self) -> int:
        return self.text.context_length

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings (B, embed_dim); L2-normalized when `normalize`."""
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text embeddings (B, embed_dim) from token ids (B, L); L2-normalized when `normalize`."""
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped to [0, logit_scale_max]."""
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    def get_logits(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text): scaled cosine similarities."""
        img = self.encode_image(image, normalize=True)
        txt = self.encode_text(text, normalize=True)
        logits = self.scale() * img @ txt.T
        return logits, logits.T

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        img = self.encode_image(image, normalize=True) if image is not None else None
        txt = self.encode_text(text, normalize=True) if text is not None else None
        if self.output_dict:
            return {"image_features": img, "text_features": txt, "logit_scale": self.scale()}
        return img, txt, self.scale()

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the image tower except its last `unlocked_groups` child groups (ModuleLists expanded);
        parameters held directly by the tower (OpenAI ViT class/positional embedding, `proj`) stay frozen.
        `freeze_bn_stats` also keeps the frozen groups' BatchNorm statistics fixed in train mode."""
        trunk = getattr(self.visual, "trunk", self.visual)
        self.visual.requires_grad_(False)
        groups = _param_groups(trunk)
        for group in groups[len(groups) - unlocked_groups :] if unlocked_groups else []:
            group.requires_grad_(True)
        if freeze_bn_stats:
            frozen = groups[: len(groups) - unlocked_groups] if unlocked_groups else groups
            for group in frozen:
                self._frozen_bn.extend(m for m in group.modules() if isinstance(m, nn.BatchNorm2d))
        self.train(self.training)

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the text tower except its last `unlocked_layers` groups (embeddings, blocks, ln+proj)."""
        text = self.text
        embeddings = [text.token_embedding, text.positional_embedding]
        head = [text.ln_final, text.text_projection]
        groups = [embeddings, *([b] for b in text.transformer.resblocks), head]
        for i, group in enumerate(groups):
            trainable = i >= len(groups) - unlocked_layers
            for item in group:
                params = [item] if isinstance(item, nn.Parameter) else list(item.parameters())
                for p in params:
                    p.requires_grad = trainable
            if trainable and freeze_layer_norm:
                for item in group:
                    if isinstance(item, nn.Module):
                        for m in item.modules():
                            if isinstance(m, nn.LayerNorm):
                                m.requires_grad_(False)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass of every tower that supports it."""
        for module in self.modules():
            if module is not self and hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    def train(self, mode: bool = True) -> CLIP:
        super().train(mode)
        for bn in self._frozen_bn:
            bn.eval()
        return self
