"""edgevl: fast image-text models for edge devices.

The public API mirrors open_clip: `create_model_and_transforms`, `get_tokenizer`, `list_models`, `list_pretrained`, plus
`reparameterize` and `caption`. Names are imported lazily so `import edgevl` (and the CLI) start fast; the
`TYPE_CHECKING` block lists the same names for editors and type checkers (a test keeps the two in step).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgevl.version import __version__

if TYPE_CHECKING:  # what editors and type checkers see; at run time `__getattr__` imports each name on first use
    from edgevl.captioning import caption
    from edgevl.data.readers import open_dataset
    from edgevl.data.transforms import ImageTransform, PreprocessCfg, load_image
    from edgevl.demo import run_demo
    from edgevl.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        EdgevlError,
        FolderLockedError,
        ImageLoadError,
        NoUsableInputError,
    )
    from edgevl.eval.captioning import CiderD, evaluate_captions
    from edgevl.export.pipeline import export_model
    from edgevl.export.runners import OnnxCaptioner, OnnxCLIP
    from edgevl.fast import optimize_for_inference
    from edgevl.models.checkpoint import load_checkpoint, save_pretrained
    from edgevl.models.factory import (
        create_model,
        create_model_and_transforms,
        create_model_from_pretrained,
        reparameterize,
    )
    from edgevl.models.lightcap.model import LightCap, create_lightcap
    from edgevl.models.pretrained import PretrainedTag, list_pretrained, list_pretrained_tags_by_model
    from edgevl.models.registry import add_model_config, get_model_config, list_models
    from edgevl.runtime import keep_freed_memory
    from edgevl.tokenizer import SimpleTokenizer, decode, get_tokenizer, tokenize
    from edgevl.train.captioner import CaptionerTrainConfig, train_captioner

# public name -> module that defines it
_LAZY = {
    "optimize_for_inference": "edgevl.fast",
    "keep_freed_memory": "edgevl.runtime",
    "get_tokenizer": "edgevl.tokenizer",
    "tokenize": "edgevl.tokenizer",
    "decode": "edgevl.tokenizer",
    "SimpleTokenizer": "edgevl.tokenizer",
    "create_model": "edgevl.models.factory",
    "create_model_and_transforms": "edgevl.models.factory",
    "create_model_from_pretrained": "edgevl.models.factory",
    "reparameterize": "edgevl.models.factory",
    "list_models": "edgevl.models.registry",
    "get_model_config": "edgevl.models.registry",
    "add_model_config": "edgevl.models.registry",
    "list_pretrained": "edgevl.models.pretrained",
    "list_pretrained_tags_by_model": "edgevl.models.pretrained",
    "PretrainedTag": "edgevl.models.pretrained",
    "load_checkpoint": "edgevl.models.checkpoint",
    "save_pretrained": "edgevl.models.checkpoint",
    "load_image": "edgevl.data.transforms",
    "PreprocessCfg": "edgevl.data.transforms",
    "ImageTransform": "edgevl.data.transforms",
    "open_dataset": "edgevl.data.readers",
    "evaluate_captions": "edgevl.eval.captioning",
    "CiderD": "edgevl.eval.captioning",
    "caption": "edgevl.captioning",
    "create_lightcap": "edgevl.models.lightcap.model",
    "LightCap": "edgevl.models.lightcap.model",
    "train_captioner": "edgevl.train.captioner",
    "CaptionerTrainConfig": "edgevl.train.captioner",
    "export_model": "edgevl.export.pipeline",
    "OnnxCLIP": "edgevl.export.runners",
    "OnnxCaptioner": "edgevl.export.runners",
    "run_demo": "edgevl.demo",
    "EdgevlError": "edgevl.errors",
    "ImageLoadError": "edgevl.errors",
    "CheckpointError": "edgevl.errors",
    "ConfigError": "edgevl.errors",
    "DataError": "edgevl.errors",
    "NoUsableInputError": "edgevl.errors",
    "FolderLockedError": "edgevl.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgevl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
