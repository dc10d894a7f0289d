"""Typed CLIP model configs: open_clip's JSON schema (`embed_dim`, `vision_cfg`, `text_cfg`, ...) as `ModelConfig`,
`VisionConfig` and `TextConfig`, with edgevl's own keys (`preprocess_cfg`, text `model_type`, `pos_embed_mode`).

`ModelConfig.from_dict` refuses an unknown key or a value of the wrong type with a ConfigError naming the key, the
file or model it came from, and the known keys, so a typo cannot silently fall back to a default. open_clip keys
that edgevl accepts but does not use are listed per section in `IGNORED_KEYS`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from edgevl.data.transforms import PreprocessCfg
from edgevl.errors import ConfigError

TEXT_MODEL_TYPES = ("transformer", "mct")
REQUIRED_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
PREPROCESS_KEYS = tuple(f.name for f in fields(PreprocessCfg) if f.name != "extra")

# open_clip keys read for compatibility and not used, by section. Vision: the trunk named by `timm_model_name`
# pools and projects in its own head and is built without dropout or ImageNet weights (open_clip's shipped
# MobileCLIP configs set `timm_pool` avg/token and `timm_proj` null, which is what that head does).
# Preprocessing: `mode` is the image mode, always RGB here.
IGNORED_KEYS: dict[str, tuple[str, ...]] = {
    "model": (),
    "vision_cfg": ("timm_model_pretrained", "timm_pool", "timm_proj", "timm_drop", "timm_drop_path"),
    "text_cfg": (),
    "multimodal_cfg": ("vocab_size", "mlp_ratio", "attn_pooler_heads", "n_queries", "dim_head"),
    "preprocess_cfg": ("mode",),
}


@dataclass(frozen=True)
class VisionConfig:
    """The image tower: a timm-style trunk (`timm_model_name`, extra constructor `timm_model_kwargs`) or, without
    one, open_clip's ViT from `layers`, `width`, `patch_size`, `head_width` and `mlp_ratio`."""

    image_size: int = 224
    timm_model_name: str | None = None
    timm_model_kwargs: dict[str, Any] = field(default_factory=dict)
    layers: int = 12
    width: int = 768
    patch_size: int = 16
    head_width: int = 64
    mlp_ratio: float = 4.0
    attentional_pool: bool = False
    attn_pooler_queries: int = 256
    attn_pooler_heads: int = 8
    output_tokens: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: str = "vision_cfg") -> VisionConfig:
        """Parse an open_clip `vision_cfg`; `where` names it in errors."""
        return _build(cls, data, where, IGNORED_KEYS["vision_cfg"])


@dataclass(frozen=True)
class TextConfig:
    """The text tower: open_clip's transformer, or MobileCLIP-S0's RepMixer tower (`model_type` "mct", with
    `repmixer_kernel_size`); `heads` None means `width // 64`."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int | None = None
    layers: int = 12
    mlp_ratio: float = 4.0
    no_causal_mask: bool = False
    model_type: str = "transformer"
    pos_embed_mode: str = "slice"
    repmixer_kernel_size: int = 11
    embed_cls: bool = False
    output_tokens: bool = False
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.model_type not in TEXT_MODEL_TYPES:
            raise ConfigError(f"unknown text model_type {self.model_type!r} "
                              f"(expected {' or '.join(map(repr, TEXT_MODEL_TYPES))})")

    @classmethod
    def from_dict(cls, data: Any, where: str = "text_cfg") -> TextConfig:
        """Parse an open_clip `text_cfg`; `where` names it in errors."""
        return _build(cls, data, where, IGNORED_KEYS["text_cfg"])


@dataclass(frozen=True)
class MultimodalConfig:
    """CoCa's multimodal text decoder (`multimodal_cfg`): causal self-attention over the text tower's token states
    plus cross-attention to the image tokens; its output size is the text vocabulary."""

    context_length: int = 76
    width: int = 512
    heads: int = 8
    layers: int = 12
    ls_init_value: float | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "multimodal_cfg") -> MultimodalConfig:
        """Parse an open_clip `multimodal_cfg`; `where` names it in errors."""
        return _build(cls, data, where, IGNORED_KEYS["multimodal_cfg"])


@dataclass(frozen=True)
class ModelConfig:
    """A CLIP model config: embedding width, both towers, open_clip's `quick_gelu` and `custom_text` (text weights
    under `text.`), the initial logit scale, and the inference preprocessing (`PreprocessCfg` fields). A
    `multimodal_cfg` (with `custom_text`) makes it a CoCa captioner."""

    embed_dim: int
    vision_cfg: VisionConfig
    text_cfg: TextConfig
    multimodal_cfg: MultimodalConfig | None = None
    quick_gelu: bool = False
    custom_text: bool = False
    init_logit_scale: float | None = None
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ModelConfig:
        """Parse a config dict; `source` names the file or model in errors (e.g. "model config 'x.json'")."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a JSON object, got {type(data).__name__}")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise ConfigError(f"{source} lacks required keys {missing}")
        towers = {"vision_cfg": VisionConfig.from_dict(data["vision_cfg"], f"{source}: vision_cfg"),
                  "text_cfg": TextConfig.from_dict(data["text_cfg"], f"{source}: text_cfg")}
        if data.get("multimodal_cfg") is not None:
            towers["multimodal_cfg"] = MultimodalConfig.from_dict(data["multimodal_cfg"], f"{source}: multimodal_cfg")
        config = _build(cls, {k: v for k, v in data.items() if k not in towers}, source, IGNORED_KEYS["model"],
                        **towers)
        ignored = IGNORED_KEYS["preprocess_cfg"]
        _check_keys(config.preprocess_cfg, PREPROCESS_KEYS, f"{source}: preprocess_cfg", ignored)
        return config


def _accepts(hint: Any, value: Any) -> bool:
    """Whether `value` (parsed JSON) fits the type annotation `hint` (a bool is not a number here)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_accepts(arg, value) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _check_keys(data: dict[str, Any], known: tuple[str, ...], where: str, ignored: tuple[str, ...]) -> None:
    """A ConfigError naming the first key of `data` that is neither known nor ignored, with the known ones."""
    for key in data:
        if key not in known and key not in ignored:
            also = f"; accepted and ignored (open_clip): {', '.join(ignored)}" if ignored else ""
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {', '.join(known)}{also})")


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _build(cls: type, data: Any, where: str, ignored: tuple[str, ...], **parsed: Any) -> Any:
    """Dataclass `cls` from the keys of `data` (plus the already `parsed` ones): an unknown key or a wrongly typed
    value is a ConfigError naming it and `where`; `ignored` keys are accepted and dropped."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {data!r}")
    hints = get_type_hints(cls)
    known = tuple(f.name for f in fields(cls))
    _check_keys(data, known, where, ignored)
    for key in known:
        if key in data and not _accepts(hints[key], data[key]):
            raise ConfigError(f"{where}: {key!r} must be {_type_name(hints[key])}, got {data[key]!r}")
    try:
        return cls(**{key: data[key] for key in known if key in data}, **parsed)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
