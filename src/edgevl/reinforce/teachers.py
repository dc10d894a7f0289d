"""CLIP teachers of the ensemble: each embeds augmentation replays at its own size/normalization, and captions.

A teacher is named `MODEL:WEIGHTS` (a registered edgevl model and a weights file or folder, an official tag such
as `ViT-L-14:openai`, or `MODEL:hf-hub:ORG/REPO[/FILE][@REV]`), `hf-hub:ORG/REPO[@REV]` (config and weights from
the repository), `local-dir:FOLDER`, or just a model folder written by `edgevl.save_pretrained`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from edgevl.data.augment import replay, to_float_batch, to_uint8_tensor
from edgevl.errors import ConfigError
from edgevl.io import sha256_file
from edgevl.models.checkpoint import weights_file
from edgevl.models.precision import COMPUTE_PRECISIONS

FORWARD_CHUNK = 256  # images or texts per forward pass (fixed, so results do not depend on --batch-size)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device for `precision='bf16'`, else nothing."""
    if precision not in COMPUTE_PRECISIONS:
        raise ConfigError(f"unknown compute precision {precision!r}; choose from {COMPUTE_PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class OnlineTeacher:
    """One CLIP model of the ensemble with its preprocessing, tokenizer and fixed KD logit scale."""

    def __init__(self, spec: str, device: torch.device, precision: str = "fp32",
                 logit_scale: float | None = None) -> None:
        from edgevl.models.factory import create_model, parse_model_spec, preprocess_cfg_for
        from edgevl.tokenizer import get_tokenizer

        self.spec = spec
        self.model_name, weights = parse_model_spec(spec, "teacher", named_weights=True)
        self.model = create_model(self.model_name, weights, device=device, reparameterize=True).eval()
        self.weights = weights_file(self.model.pretrained_path)
        self.device, self.precision = device, precision
        pp = preprocess_cfg_for(self.model)
        self.size, self.interpolation = pp.size, pp.interpolation
        self.mean, self.std = tuple(pp.mean), tuple(pp.std)
        self.tokenizer = get_tokenizer(context_length=self.model.context_length)
        self.embed_dim = int(self.model.model_cfg["embed_dim"])
        self.logit_scale = float(logit_scale if logit_scale is not None else self.model.scale().item())
        self.weights_sha256 = sha256_file(self.weights)

    def describe(self) -> dict[str, Any]:
        """The manifest entry: what the stored block of this teacher means and how to reproduce it."""
        return {
            "name": self.spec,
            "model": self.model_name,
            "weights": str(self.weights),
            "weights_sha256": self.weights_sha256,
            "embed_dim": self.embed_dim,
            "logit_scale": self.logit_scale,
            "image_size": self.size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "context_length": self.model.context_length,
        }

    def replay_batch(self, images: Sequence[Image.Image], records: Sequence[Sequence[list]]) -> torch.Tensor:
        """uint8 [sum(len(r)), 3, S, S]: every record of each image replayed at this teacher's size."""
        return torch.stack([
            to_uint8_tensor(replay(img, rec, self.size, self.interpolation))
            for img, recs in zip(images, records) for rec in recs
        ])

    @torch.inference_mode()
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalized float32 image embeddings of a uint8 batch, on the CPU."""
        out = []
        for chunk in pixels.split(FORWARD_CHUNK):
            x = to_float_batch(chunk, self.mean, self.std).to(self.device)
            with autocast(self.device, self.precision):
                out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalized float32 text embeddings (texts truncated to the teacher's context), on the CPU."""
        out = []
        for i in range(0, len(texts), FORWARD_CHUNK):
            tokens = self.tokenizer(list(texts[i:i + FORWARD_CHUNK])).to(self.device)
            with autocast(self.device, self.precision):
                out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out)
