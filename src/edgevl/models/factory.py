"""Model factory (open_clip's API): build a CLIP from a registered JSON config, load weights, fold branches.

Models come back in **eval mode** (open_clip returns train mode and asks users to call `.eval()`): inference
and re-parameterization both need eval mode, and training loops call `.train()` themselves anyway.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch
from torch import nn

from edgevl.data.augment import AugmentConfig, TrainTransform
from edgevl.data.transforms import ImageTransform, PreprocessCfg
from edgevl.errors import CheckpointError, ConfigError
from edgevl.io import atomic_write
from edgevl.models import hub
from edgevl.models.checkpoint import (
    CONFIG_NAME,
    ModelSource,
    describe_pretrained,
    is_reparameterized,
    load_checkpoint,
    load_state_dict,
    to_edgevl_layout,
)
from edgevl.models.clip import CLIP, TrunkVisual
from edgevl.models.config import ModelConfig, TextConfig, VisionConfig
from edgevl.models.pretrained import get_pretrained_tag
from edgevl.models.registry import get_model_config
from edgevl.models.text import TextTransformer

WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LOCAL_DIR = "local-dir:"
WEIGHT_SUFFIXES = {".safetensors", ".pt", ".pth", ".bin"}


def parse_model_spec(spec: str, role: str = "model", *, require_weights: bool = True,
                     named_weights: bool = False) -> tuple[str, str | None]:
    """(model, weights) of a teacher/captioner spec: `MODEL:WEIGHTS`, `local-dir:FOLDER` or a bare model folder.

    A folder comes back as (`local-dir:FOLDER`, None). `MODEL` alone is refused with a `ConfigError` unless
    `require_weights=False` (random init, e.g. for export); `role` names the option in the error. With
    `named_weights=True` WEIGHTS may also be an official tag or `hf-hub:` spec of MODEL (an unknown tag lists the
    known ones), and `hf-hub:ORG/REPO[/FILE][@REV]` alone comes back as (spec, None): `create_model` fetches them.
    """
    if not spec:
        raise ConfigError(f"empty {role} spec; use MODEL:WEIGHTS or a model folder")
    if spec.startswith(LOCAL_DIR):
        return spec, None
    if Path(spec).is_dir():
        return LOCAL_DIR + spec, None
    if named_weights and spec.startswith(hub.HF_HUB):
        hub.parse_hub_spec(spec)
        return spec, None
    model, sep, weights = spec.partition(":")
    if not model or (sep and not weights) or (not sep and require_weights):
        raise ConfigError(f"{role} {spec!r} needs weights: use MODEL:WEIGHTS (file or folder) or a model folder")
    if named_weights and _is_weights_name(weights):
        _check_weights_name(model, weights)
    elif weights and not Path(weights).exists():
        raise ConfigError(f"{role} {spec!r}: weights {weights!r} not found")
    return model, weights or None


def _check_weights_name(model: str, weights: str) -> None:
    """Refuse a malformed `hf-hub:` spec or a tag that `model` does not have (listing the ones it has)."""
    if weights.startswith(hub.HF_HUB):
        hub.parse_hub_spec(weights)
    else:
        get_pretrained_tag(model, weights)


def split_model_specs(text: str) -> tuple[str, ...]:
    """`--teachers A:W,B:W` -> ('A:W', 'B:W'); blanks dropped (a comma inside one spec is not supported)."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def build_text_tower(text_cfg: TextConfig | dict, embed_dim: int, quick_gelu: bool = False) -> TextTransformer:
    """Text tower from an open_clip `text_cfg` (plus edgevl's `model_type: "mct"` and `pos_embed_mode`)."""
    cfg = text_cfg if isinstance(text_cfg, TextConfig) else TextConfig.from_dict(text_cfg)
    return TextTransformer(
        context_length=cfg.context_length,
        vocab_size=cfg.vocab_size,
        width=cfg.width,
        heads=cfg.heads if cfg.heads is not None else cfg.width // 64,
        layers=cfg.layers,
        output_dim=embed_dim,
        mlp_ratio=cfg.mlp_ratio,
        causal=not cfg.no_causal_mask,
        act="quick_gelu" if quick_gelu else "gelu",
        pos_embed_mode=cfg.pos_embed_mode,
        repmixer_kernel=cfg.repmixer_kernel_size if cfg.model_type == "mct" else 0,
    )


def build_vision_tower(vision_cfg: VisionConfig | dict, embed_dim: int, quick_gelu: bool = False) -> nn.Module:
    """Image tower: a timm-style trunk (`timm_model_name`, extra `timm_model_kwargs`) wrapped as
    `visual.trunk`, or the OpenAI ViT from native keys (`image_size`, `layers`, `width`, `patch_size`)."""
    cfg = vision_cfg if isinstance(vision_cfg, VisionConfig) else VisionConfig.from_dict(vision_cfg)
    name, kwargs = cfg.timm_model_name, dict(cfg.timm_model_kwargs)
    if name and name.startswith("fastvit_mci"):
        from edgevl.models.mci import create_mci

        return TrunkVisual(create_mci(name, num_classes=embed_dim, **kwargs))
    if name:
        from edgevl.models.vit import create_timm_vit

        return TrunkVisual(create_timm_vit(name, num_classes=embed_dim, img_size=cfg.image_size, **kwargs))
    from edgevl.models.vit import VisionTransformer

    return VisionTransformer(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        width=cfg.width,
        layers=cfg.layers,
        heads=cfg.width // cfg.head_width,
        mlp_ratio=cfg.mlp_ratio,
        output_dim=embed_dim,
        act="quick_gelu" if quick_gelu else "gelu",
    )


def build_model(cfg: ModelConfig | dict, source: str = "model config") -> CLIP:
    """A randomly initialized CLIP (a CoCa when the config has `multimodal_cfg`) for a model config (a dict is
    parsed first; `source` names it in errors)."""
    cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg, source)
    if cfg.multimodal_cfg is not None:
        from edgevl.models.coca import build_coca

        return build_coca(cfg)
    visual = build_vision_tower(cfg.vision_cfg, cfg.embed_dim, cfg.quick_gelu)
    text = build_text_tower(cfg.text_cfg, cfg.embed_dim, cfg.quick_gelu)
    scale = {} if cfg.init_logit_scale is None else {"init_logit_scale": cfg.init_logit_scale}
    return CLIP(visual, text, **scale)


def _merge(cfg: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def _reparameterize_in_place(model: nn.Module) -> nn.Module:
    from edgevl.models.blocks import reparameterize_modules

    return reparameterize_modules(model.eval())


def reparameterize(model: nn.Module) -> nn.Module:
    """A folded copy of `model` for inference: deep copy, `.eval()`, then each submodule's `reparameterize()`.

    The input model is left untouched; folding an already folded model changes nothing.
    """
    return _reparameterize_in_place(copy.deepcopy(model))


def _check_agrees(name: str, src: ModelSource | None) -> None:
    """Refuse an explicit model name other than the one the weights' folder or run records."""
    if src is not None and src.model and src.model.replace("/", "-") != name.replace("/", "-"):
        raise ConfigError(src.made_for(given=name))


def _folder_model(src: ModelSource) -> tuple[dict, dict | None]:
    """(model config, preprocess config) of a model folder, or of the model its run's `params.json` names."""
    if src.config is not None:
        return src.config["model_cfg"], src.config.get("preprocess_cfg") or None
    folder = src.weights if src.weights.is_dir() else src.weights.parent
    if src.model is None:
        raise CheckpointError(f"{str(folder)!r} has no {CONFIG_NAME}; name its model (--model)")
    print(f"edgevl: {folder} has no {CONFIG_NAME}; building model {src.model!r} as named in {src.origin}",
          file=sys.stderr)
    cfg, pp, _, _ = _resolve(src.model, None)
    return cfg, pp


def _hub_weights(name: str, pretrained: str, revision: str | None) -> tuple[ModelSource, dict | None, bool]:
    """(weights source, preprocess config, quick_gelu) for an official tag or an `hf-hub:` spec of `name`."""
    if pretrained.startswith(hub.HF_HUB):
        ref = hub.parse_hub_spec(pretrained, revision)
        return ModelSource(hub.fetch_weights(ref)), (hub.fetch_config(ref) or {}).get("preprocess_cfg"), False
    tag = get_pretrained_tag(name, pretrained)
    if tag.filename == "":
        raise ConfigError(f"{name} {tag.tag}: {tag.note}")
    weights = hub.fetch_weights(hub.HubRef(tag.hf_hub, revision=revision), tag.filename)
    return ModelSource(weights), tag.preprocess_cfg, tag.quick_gelu


def _is_weights_name(pretrained: str | Path | None) -> bool:
    """True when `pretrained` names weights by `hf-hub:` spec or tag; a missing path (with '/' or a weights
    suffix) stays a path so that its error says "not found"."""
    if not isinstance(pretrained, str) or Path(pretrained).exists():
        return False
    if pretrained.startswith(hub.HF_HUB):
        return True
    return "/" not in pretrained and os.sep not in pretrained and Path(pretrained).suffix not in WEIGHT_SUFFIXES


def _resolve(
    name: str | None, pretrained: str | Path | None, revision: str | None = None
) -> tuple[dict, dict | None, ModelSource | None, str | None]:
    """(model config, folder/tag preprocess config or None, weights source, model name) for a model name and
    `pretrained`; a `local-dir:PATH` name or None takes the config from the folder (PATH or `pretrained`), an
    `hf-hub:` name from the repository's snapshot in the hub cache."""
    if name is not None and name.startswith(hub.HF_HUB):
        if pretrained not in (None, name) and _is_weights_name(pretrained):
            raise ConfigError(f"model {name!r} brings its weights: pass pretrained as a local path or leave it out")
        ref = hub.parse_hub_spec(name, revision)
        folder, weights = hub.fetch_model_folder(ref)
        own = weights if pretrained in (None, name) else pretrained
        cfg, folder_pp, src, _ = _resolve(LOCAL_DIR + str(folder), own)
        return cfg, folder_pp, src, str(ref)
    if name is not None and _is_weights_name(pretrained):
        src, tag_pp, quick_gelu = _hub_weights(name, str(pretrained), revision)
        cfg = get_model_config(name)
        if quick_gelu:
            cfg["quick_gelu"] = True
        return cfg, tag_pp or None, src, name
    if revision is not None:
        raise ConfigError(f"revision={revision!r} applies only to official tags and hf-hub: specs, not to "
                          f"pretrained={str(pretrained)!r}")
    src = describe_pretrained(pretrained) if pretrained is not None else None
    if name is None or name.startswith(LOCAL_DIR):
        own = src if name is None else describe_pretrained(name[len(LOCAL_DIR) :])
        if own is None:
            raise ConfigError("no model named: pass a model name (--model) or a model or run folder (--pretrained)")
        cfg, folder_pp = _folder_model(own)
        return cfg, folder_pp, src or own, own.model
    _check_agrees(name, src)
    folder_pp = (src.config or {}).get("preprocess_cfg") or None if src is not None else None
    return get_model_config(name), folder_pp, src, name


def resolve_model_name(model_name: str | None, pretrained: str | Path | None, default: str | None = None) -> str:
    """The model a command builds for `--model` (None: not given) and `--pretrained`.

    An explicit name must agree with the model a folder or run records; without one, a model or run folder's own
    config is used (`local-dir:PATH`), an older run's checkpoint takes the `model` of its `params.json`, and
    anything else gets `default` (None: `--model` is required). A tag needs `--model` (or `default`); an
    `hf-hub:` spec alone names its repository as the model.
    """
    if _is_weights_name(pretrained):  # a tag or hf-hub: spec: create_model fetches it
        if model_name is None and str(pretrained).startswith(hub.HF_HUB):
            return str(pretrained)
        if model_name is None and default is None:
            raise ConfigError(f"--pretrained {pretrained} is a tag: name its model with --model")
        return model_name or default
    src = describe_pretrained(pretrained) if pretrained is not None else None
    if model_name is not None:
        if not model_name.startswith(LOCAL_DIR):
            _check_agrees(model_name, src)
        return model_name
    if src is not None and src.config is not None:
        return LOCAL_DIR + str(pretrained)
    if src is not None and src.model is not None:
        print(f"edgevl: {pretrained} has no {CONFIG_NAME}; using --model {src.model} from {src.origin}",
              file=sys.stderr)
        return src.model
    if default is None:
        raise ConfigError("--model is required unless --pretrained is a model folder or a training run folder")
    return default


def create_model(
    model_name: str | None,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    reparameterize: bool = False,
    output_dict: bool = False,
    force_quick_gelu: bool = False,
    force_context_length: int | None = None,
    strict: bool = True,
    revision: str | None = None,
    **overrides,
) -> CLIP:
    """Build a registered model (or `local-dir:PATH`), optionally loading weights from a file, model folder or
    training run folder; with `model_name=None` the config comes from the `pretrained` folder.
    `pretrained` may also be an official tag (`edgevl.list_pretrained()`, its preprocessing applied) or
    `hf-hub:ORG/REPO[/FILE][@REV]`, and `model_name` may be `hf-hub:ORG/REPO` (config and weights from the
    repository); these are fetched through the Hugging Face cache, `revision` pinning a branch, tag or commit.

    Weights in any known layout (v1 `.pt`, open_clip, edgevl folder) are detected and converted; folded
    weights make the model be folded before loading, and `reparameterize=True` folds after loading (the
    order of the v1 package). `overrides` replace config keys (dicts such as `text_cfg` are merged); an unknown key,
    there or in the config, is a `ConfigError` naming it. A name that disagrees with the model a folder or run
    records is a `ConfigError` naming both.
    """
    if precision not in WEIGHT_DTYPES:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(WEIGHT_DTYPES)}")
    cfg, folder_pp, source, name = _resolve(model_name, pretrained, revision)
    cfg = _merge(cfg, overrides)
    if force_quick_gelu:
        cfg["quick_gelu"] = True
    if force_context_length is not None:
        cfg["text_cfg"]["context_length"] = int(force_context_length)
    where = f"config of model {model_name!r}" if model_name else f"model config in {str(pretrained)!r}"
    typed = ModelConfig.from_dict(cfg, where + (f" with overrides {sorted(overrides)}" if overrides else ""))
    state_dict = to_edgevl_layout(load_state_dict(source.weights)) if source is not None else None
    with torch.device(device):
        model = build_model(typed)
    model.output_dict = output_dict
    model.model_name = name
    if state_dict is not None:
        if is_reparameterized(state_dict):
            _reparameterize_in_place(model)
        load_checkpoint(model, state_dict, strict=strict, source=source)
    if reparameterize:
        _reparameterize_in_place(model)
    model.to(dtype=WEIGHT_DTYPES[precision]).eval()
    model.model_cfg = cfg
    model.pretrained_path = None if source is None else source.weights  # the file or folder loaded
    model.preprocess_cfg = {**cfg.get("preprocess_cfg", {}), **(folder_pp or {})}
    return model


def preprocess_cfg_for(model: CLIP, **overrides) -> PreprocessCfg:
    """Inference `PreprocessCfg` of a factory-built model: its config's `preprocess_cfg` (or OpenAI/bicubic
    defaults at the tower's image size), with non-None `overrides` (size, mean, std, interpolation, ...)."""
    pp = dict(getattr(model, "preprocess_cfg", None) or {})
    pp.setdefault("size", getattr(model, "model_cfg", {}).get("vision_cfg", {}).get("image_size", 224))
    pp.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("mean", "std"):
        if key in pp:
            pp[key] = tuple(pp[key])
    fields = {"size", "mean", "std", "interpolation", "resize_mode", "fill_color"}
    return PreprocessCfg(**{k: v for k, v in pp.items() if k in fields})


def create_model_and_transforms(
    model_name: str | None,
    pretrained: str | Path | None = None,
    image_mean: tuple[float, float, float] | None = None,
    image_std: tuple[float, float, float] | None = None,
    image_interpolation: str | None = None,
    image_resize_mode: str | None = None,
    aug_cfg: dict | None = None,
    **kwargs,
) -> tuple[CLIP, TrainTransform, ImageTransform]:
    """(model, preprocess_train, preprocess_val) like open_clip; `kwargs` go to `create_model`.

    preprocess_val resizes the short side, center-crops and normalizes as the model's config says.
    preprocess_train is MobileCLIP's training augmentation at the model's size, interpolation and
    normalization: random-resized crop (scale 0.08-1) + RandAugment (2 ops, magnitude 9); `aug_cfg`
    overrides `AugmentConfig` fields, e.g. `{"scale": (0.9, 1.0), "rand_augment_p": 0.0}` for open_clip's
    milder default.
    """
    model = create_model(model_name, pretrained, **kwargs)
    cfg = preprocess_cfg_for(
        model,
        mean=image_mean,
        std=image_std,
        interpolation=image_interpolation,
        resize_mode=image_resize_mode,
    )
    val = ImageTransform(cfg)
    train_cfg = {"size": cfg.size, "interpolation": cfg.interpolation, "mean": cfg.mean, "std": cfg.std}
    train = TrainTransform(AugmentConfig(**{**train_cfg, **(aug_cfg or {})}))
    return model, train, val


def create_model_from_pretrained(
    model_name: str, pretrained: str | Path | None = None, return_transform: bool = True, **kwargs
) -> CLIP | tuple[CLIP, ImageTransform]:
    """A model with weights (required: a file, folder, tag, or `local-dir:`/`hf-hub:` name) and its transform."""
    if pretrained is None and not model_name.startswith((LOCAL_DIR, hub.HF_HUB)):
        raise CheckpointError(
            f"create_model_from_pretrained({model_name!r}) needs pretrained weights (a path)"
        )
    model, _, val = create_model_and_transforms(model_name, pretrained, **kwargs)
    return (model, val) if return_transform else model


def convert_checkpoint(
    src: str | Path, dst: str | Path, model_name: str | None, to: str = "edgevl", reparameterize: bool = False
) -> Path:
    """Convert weights in any known layout to an edgevl folder (`to="edgevl"`), an open_clip-layout
    `.safetensors` file (`to="open_clip"`) or an official v1 `.pt` state dict (`to="v1"`, MobileCLIP models),
    optionally folded. The weights are loaded strictly first; `model_name=None` takes a model or run folder's."""
    from edgevl.models.checkpoint import save_pretrained, save_state_dict, to_open_clip_layout, to_v1_layout

    model = create_model(model_name, pretrained=src, reparameterize=reparameterize)
    if to == "edgevl":
        return save_pretrained(model, dst)
    if to == "open_clip":
        dst = Path(dst)
        if dst.suffix != ".safetensors":
            raise ConfigError(f"open_clip output {str(dst)!r} must be a .safetensors file")
        custom_text = bool(model.model_cfg.get("custom_text", False))
        return save_state_dict(to_open_clip_layout(model.state_dict(), custom_text), dst)
    if to == "v1":
        dst = Path(dst)
        if dst.suffix != ".pt":
            raise ConfigError(f"v1 output {str(dst)!r} must be a .pt file, like the official mobileclip_*.pt")
        state = {k: v.detach().cpu().contiguous() for k, v in to_v1_layout(model).items()}
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dst, lambda tmp: torch.save(state, tmp))
        return dst
    raise ConfigError(f"unknown target layout {to!r} (expected 'edgevl', 'open_clip' or 'v1')")
