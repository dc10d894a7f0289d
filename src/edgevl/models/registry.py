"""Model config registry: open_clip-style JSON files (`embed_dim`, `vision_cfg`, `text_cfg`, ...) by name.

Built-in configs live in `edgevl/models/configs/*.json`; `add_model_config` registers more files or folders. Every
file is checked when registered (`edgevl.models.config.ModelConfig`): invalid JSON, a missing required key or an
unknown key is a ConfigError naming the file, never a silent skip. Only files that name another model family
(`"architecture": "lightcap"`, the LightCap presets sharing the folder) are passed over.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from edgevl.errors import ConfigError
from edgevl.models.config import ModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"

_CONFIGS: dict[str, dict] = {}
_LOADED_BUILTIN = False


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read model config {str(path)!r}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config {str(path)!r} must hold a JSON object")
    return cfg


def _register_file(path: Path, strict: bool) -> None:
    """Check and register one config file; with `strict=False` a file of another model family is passed over."""
    cfg = _read_config(path)
    family = cfg.get("architecture")  # CLIP configs have none
    if family is not None:
        if strict:
            raise ConfigError(f"model config {str(path)!r} is a {family!r} config, not a CLIP model")
        return
    ModelConfig.from_dict(cfg, f"model config {str(path)!r}")
    _CONFIGS[path.stem] = cfg


def _ensure_builtin() -> None:
    global _LOADED_BUILTIN
    if not _LOADED_BUILTIN:
        _LOADED_BUILTIN = True
        for path in sorted(CONFIG_DIR.glob("*.json")):
            _register_file(path, strict=False)  # LightCap presets share the folder


def add_model_config(path: str | Path) -> None:
    """Register a config JSON file (name = file stem) or every CLIP config `*.json` in a folder; a file that is
    not a valid config fails naming it."""
    _ensure_builtin()
    path = Path(path)
    if path.is_dir():
        for file in sorted(path.glob("*.json")):
            _register_file(file, strict=False)
    elif path.is_file():
        _register_file(path, strict=True)
    else:
        raise ConfigError(f"model config path {str(path)!r} does not exist")


def list_models() -> list[str]:
    """Names of all registered model configs, naturally sorted (MobileCLIP-S2 before MobileCLIP-S10)."""
    _ensure_builtin()
    return sorted(_CONFIGS, key=_natural_key)


def get_model_config(name: str) -> dict:
    """A deep copy of the named config; '/' in the name is read as '-' (ViT-B/16 -> ViT-B-16)."""
    _ensure_builtin()
    key = name.replace("/", "-")
    if key not in _CONFIGS:
        close = [m for m in list_models() if m.lower() == key.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else f"; available: {', '.join(list_models())}"
        raise ConfigError(f"unknown model {name!r}{hint}")
    return copy.deepcopy(_CONFIGS[key])
