"""edgevl: fast image-text models for edge devices.

The public API mirrors open_clip: `create_model_and_transforms`, `get_tokenizer`, `list_models`, plus
`reparameterize` and `caption`. Names are imported lazily so `import edgevl` (and the CLI) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "optimize_for_inference": "edgevl.models.optimize",
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
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgevl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
