"""`train-captioner --backbone RUN_OR_MODEL`: a trained CLIP image tower as LightCap's frozen grid backbone.

RUN_OR_MODEL is anything a teacher spec accepts: a model folder (`edgevl.save_pretrained`), an `edgevl train` run
folder (its final model or newest checkpoint, with the model its `params.json` names), or `MODEL:WEIGHTS`. The
tower must be an MCi image trunk (LightCap's `mci` backbone type): its layers come from the CLIP config, its weights
from the checkpoint (the pooled projection head is dropped), and the image size and normalization from the CLIP
preprocessing, so the captioner sees images exactly as the tower was trained on them. The concept vocabulary is
embedded with the same model's text tower, as LightCap retrieves concepts in the CLIP joint space.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import torch

from edgevl.errors import CheckpointError, ConfigError
from edgevl.models.lightcap.model import LightCap

ConceptText = Callable[[list[str]], torch.Tensor]
TRUNK_PREFIX, HEAD_PREFIX = "visual.trunk.", "visual.trunk.head."


def load_clip(spec: str) -> Any:
    """The CLIP model behind `--backbone` (model folder, run folder or MODEL:WEIGHTS), weights required."""
    from edgevl.models.factory import create_model, parse_model_spec

    name, weights = parse_model_spec(spec, "--backbone")
    return create_model(name, weights)


def grid_backbone_entry(clip: Any, spec: str) -> dict[str, Any]:
    """LightCap's `backbone` config entry for the CLIP's image tower; ConfigError unless it is an MCi trunk."""
    vision = clip.model_cfg.get("vision_cfg", {})
    trunk = str(vision.get("timm_model_name") or "")
    if not trunk.startswith("fastvit_mci"):
        kind = f"the {trunk} tower" if trunk else "a ViT"
        raise ConfigError(f"--backbone {spec!r} has {kind} as image tower, which gives no feature grid; LightCap's "
                          "frozen backbone must be an MCi image tower (e.g. world-student-mci, MobileCLIP-S0/S1/S2)")
    return {"type": "mci", "preset": trunk, "overrides": dict(vision.get("timm_model_kwargs") or {})}


def trunk_state(clip: Any, spec: str) -> dict[str, torch.Tensor]:
    """The MCi trunk weights of the CLIP image tower (float32, projection head left out); unfolded ones only."""
    from edgevl.models.checkpoint import is_reparameterized

    state = {k[len(TRUNK_PREFIX):]: v.float() for k, v in clip.state_dict().items()
             if k.startswith(TRUNK_PREFIX) and not k.startswith(HEAD_PREFIX)}
    if is_reparameterized(state):
        raise CheckpointError(f"--backbone {spec!r} holds re-parameterized (folded, inference-only) weights; pass the "
                              "training weights (its run folder, or a model folder saved before folding)")
    return state


def concept_embedder(clip: Any) -> ConceptText:
    """Concept names -> their L2-normalized embeddings from the CLIP text tower, [V, embed_dim]."""
    from edgevl.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(context_length=clip.context_length)

    def embed(names: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return clip.encode_text(tokenizer(names), normalize=True).float()

    return embed


def _describe(config: Any) -> str:
    return f"{config.backbone} at {config.image_size} px, mean {list(config.mean)}, std {list(config.std)}"


def with_clip_backbone(base: LightCap, spec: str, fine_tune: bool) -> tuple[LightCap, ConceptText | None]:
    """`base` with the `--backbone` tower as its frozen backbone, and the concept embedder (None when fine-tuning).

    A preset or config JSON (`fine_tune` False) is rebuilt around the tower: its backbone entry, image size,
    normalization and concept space become the tower's. A trained LightCap folder keeps its architecture, so its
    backbone entry and preprocessing must equal the tower's (a `ConfigError` naming both otherwise).
    """
    from edgevl.models.factory import preprocess_cfg_for

    clip = load_clip(spec)
    entry = grid_backbone_entry(clip, spec)
    pp = preprocess_cfg_for(clip)
    if pp.size % 32:
        raise ConfigError(f"--backbone {spec!r} takes {pp.size} px images; LightCap needs a multiple of 32")
    wanted = base.config.replace(backbone=entry, image_size=pp.size, mean=tuple(pp.mean), std=tuple(pp.std),
                                 interpolation=pp.interpolation, concept_joint_dim=int(clip.model_cfg["embed_dim"]))
    if fine_tune:
        if _input_side(base.config) != _input_side(wanted):
            raise ConfigError(f"--config {base.config.name!r} is a trained LightCap with backbone "
                              f"{_describe(base.config)}; --backbone {spec!r} is {_describe(wanted)}: they must "
                              "match to swap the weights")
        model, embed = base, None
    else:
        model, embed = LightCap(wanted).eval(), concept_embedder(clip)
    result = model.backbone.trunk.load_state_dict(trunk_state(clip, spec), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"--backbone {spec!r} does not fit LightCap's {entry['preset']} backbone: missing "
                              f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}")
    grid = model.grid_features(torch.zeros(1, 3, pp.size, pp.size))
    if grid.shape[-2] * grid.shape[-1] != model.config.grid_tokens:
        raise ConfigError(f"--backbone {spec!r} gives a {tuple(grid.shape[-2:])} grid at {pp.size} px; LightCap "
                          f"expects {pp.size // 32}x{pp.size // 32} (stride 32)")
    print(f"edgevl: train-captioner: frozen backbone from {spec} ({entry['preset']}, {pp.size} px)", file=sys.stderr)
    return model, embed


def _input_side(config: Any) -> list[Any]:
    """What must agree for a backbone's weights to fit a trained LightCap: backbone entry, image size, mean, std."""
    backbone = {"overrides": {}, **config.backbone}
    return json.loads(json.dumps([backbone, config.image_size, [round(v, 6) for v in (*config.mean, *config.std)]]))
