"""Checkpoint files and layouts: reading weights safely, detecting and converting key layouts, saving folders.

Layouts understood (detected from the keys):
- "v1": official `mobileclip_*.pt` files (`image_encoder.model.*`, `text_encoder.*`, `logit_scale`);
- "open_clip": open_clip `CLIP` with the text tower at top level (`token_embedding.weight`, `transformer.*`);
- "edgevl": edgevl's native layout, identical to open_clip `CustomTextCLIP` (`visual.*`, `text.*`).
Files: `.safetensors`, or `.pt`/`.pth`/`.bin` through `torch.load(weights_only=True)` only. A folder holds
`open_clip_config.json` (`model_cfg`, `preprocess_cfg`, and from edgevl an `edgevl` block naming the model the
weights were made for) and a weights file, searched in open_clip's order. A training run folder stands for its
model folder (`describe_pretrained`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgevl.errors import CheckpointError, ConfigError
from edgevl.io import atomic_write, atomic_write_text
from edgevl.run_layout import CONFIG_NAME, EDGEVL_KEY, run_model_folder, run_params_model
from edgevl.tensor_files import read_safetensors, read_torch

WEIGHTS_NAME = "model.safetensors"
WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
LAYOUTS = ("edgevl", "open_clip", "v1")
# text-tower entries that open_clip's plain `CLIP` keeps at the top level of its state dict
_OPEN_CLIP_TEXT_ROOTS = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
_REPARAM_MARKERS = (".reparam_conv.", ".lkb_reparam.")


# ------------------------------------------------------------------------------------------- reading
def find_weights(folder: str | Path) -> Path:
    """The weights file of a checkpoint folder, first match in open_clip's search order."""
    folder = Path(folder)
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no weights file in {str(folder)!r}; expected one of {', '.join(WEIGHT_NAMES)}")


def read_folder_config(folder: str | Path) -> dict | None:
    """The parsed `open_clip_config.json` of a folder ({"model_cfg", "preprocess_cfg"}), or None if absent."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise CheckpointError(f"{str(path)!r} has no 'model_cfg' object")
    return cfg


@dataclass(frozen=True)
class ModelSource:
    """What a `pretrained` path holds: the weights to read, the folder config describing them (if any) and the
    model they were made for, with the file that says so (`open_clip_config.json` or a run's `params.json`)."""

    weights: Path
    config: dict | None = None
    model: str | None = None
    origin: Path | None = None

    def made_for(self, given: str | None = None) -> str:
        """'checkpoint X was made for model Y (FILE)[, not for --model GIVEN]; use --model Y or pass the folder
        without --model'."""
        other = f", not for --model {given}" if given else ""
        return (f"checkpoint {str(self.weights)!r} was made for model {self.model!r} ({self.origin}){other}; use "
                f"--model {self.model} or pass the folder without --model")


def describe_pretrained(path: str | Path) -> ModelSource:
    """Resolve `pretrained` (a weights file, model folder or training run folder) into a `ModelSource`.

    A run folder becomes its model folder (`edgevl.run_layout.run_model_folder`); the config is read from
    the folder, or for a file from the folder holding it when edgevl wrote that config (an open_clip folder's may
    describe other weights); the model name from its `edgevl` block, or for a checkpoint of a run older than
    those blocks from the run's `params.json`.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"pretrained weights {str(path)!r} not found (pass a file or folder path)")
    path = (run_model_folder(path) if path.is_dir() else None) or path
    folder = path if path.is_dir() else path.parent
    config = read_folder_config(folder)
    if config is not None and path.is_file() and EDGEVL_KEY not in config:
        config = None
    name = ((config or {}).get(EDGEVL_KEY) or {}).get("model")
    if name:
        return ModelSource(path, config, name, folder / CONFIG_NAME)
    return ModelSource(path, config, *(run_params_model(folder) or (None, None)))


def weights_file(path: str | Path) -> Path:
    """The file holding the weights of a weights path: the file itself, a model folder's weights file, or a
    training run folder's newest model (what a manifest names and hashes)."""
    path = describe_pretrained(path).weights
    return find_weights(path) if path.is_dir() else path


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source!r} does not contain a state dict")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key[len("module.") :] if key.startswith("module.") else key] = value
    return out


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file or checkpoint folder into a flat {key: tensor} dict (on CPU).

    A `state_dict` wrapper key and DataParallel `module.` prefixes are removed. Pickled files are read with
    `weights_only=True`, so files holding arbitrary Python objects are refused; damaged files and non-finite
    weights raise `CheckpointError` (see `edgevl.tensor_files`).
    """
    path = Path(path)
    if path.is_dir():
        path = find_weights(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return _unwrap(read_safetensors(path), str(path))
    obj = read_torch(path)
    return _unwrap(obj, str(path))


# ------------------------------------------------------------------------------------------- layouts
def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """ "v1", "open_clip" (plain CLIP, top-level text tower) or "edgevl" (also open_clip CustomTextCLIP)."""
    keys = state_dict.keys()
    if any(k.startswith(("image_encoder.", "text_encoder.")) for k in keys):
        return "v1"
    if "token_embedding.weight" in state_dict:
        return "open_clip"
    return "edgevl"


def is_reparameterized(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the weights come from a folded (re-parameterized) model."""
    return any(marker in f".{k}" for k in state_dict for marker in _REPARAM_MARKERS)


def _v1_image_converter(image_sd: Mapping[str, torch.Tensor]):
    if "patch_emb.0.block.conv.weight" in image_sd:
        from edgevl.models.vit import convert_v1_state_dict
    else:
        from edgevl.models.mci import convert_v1_state_dict
    return convert_v1_state_dict


def _from_v1(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from edgevl.models.text import convert_v1_state_dict as convert_text

    image = {
        k[len("image_encoder.model.") :]: v for k, v in state_dict.items() if k.startswith("image_encoder.")
    }
    text = {k[len("text_encoder.") :]: v for k, v in state_dict.items() if k.startswith("text_encoder.")}
    rest = [
        k for k in state_dict if not k.startswith(("image_encoder.model.", "text_encoder.", "logit_scale"))
    ]
    if rest:
        raise CheckpointError(f"unrecognized v1 keys ({len(rest)}): {', '.join(rest[:5])}")
    out: dict[str, torch.Tensor] = {}
    if "logit_scale" in state_dict:
        out["logit_scale"] = state_dict["logit_scale"]
    if image:
        out.update({f"visual.trunk.{k}": v for k, v in _v1_image_converter(image)(image).items()})
    out.update({f"text.{k}": v for k, v in convert_text(text).items()})
    return out


def to_edgevl_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a state dict in any known layout to edgevl's native layout (a new dict; tensors shared)."""
    layout = detect_layout(state_dict)
    if layout == "v1":
        return _from_v1(state_dict)
    if layout == "open_clip":
        return {(f"text.{k}" if k.startswith(_OPEN_CLIP_TEXT_ROOTS) else k): v for k, v in state_dict.items()}
    return dict(state_dict)


def to_open_clip_layout(state_dict: Mapping[str, torch.Tensor], custom_text: bool) -> dict[str, torch.Tensor]:
    """edgevl layout -> open_clip: unchanged for CustomTextCLIP configs, top-level text for plain CLIP."""
    if custom_text:
        return dict(state_dict)
    return {(k[len("text.") :] if k.startswith("text.") else k): v for k, v in state_dict.items()}


def to_v1_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """A MobileCLIP model's weights in the official v1 `mobileclip_*.pt` layout (inverse of the v1 loader):
    `image_encoder.model.*` (MCi or MobileCLIP-B ViT trunk), `text_encoder.*`, `logit_scale`."""
    from edgevl.models.mci import MCi
    from edgevl.models.mci import to_v1_state_dict as mci_to_v1
    from edgevl.models.text import to_v1_state_dict as text_to_v1
    from edgevl.models.vit import TimmViT
    from edgevl.models.vit import to_v1_state_dict as vit_to_v1

    trunk = getattr(model.visual, "trunk", None)
    if not isinstance(trunk, (MCi, TimmViT)):
        raise ConfigError(f"only MobileCLIP models (MCi or MobileCLIP-B trunks) have a v1 layout, not "
                          f"{type(trunk or model.visual).__name__}")
    sd = model.state_dict()
    image = {k[len("visual.trunk.") :]: v for k, v in sd.items() if k.startswith("visual.trunk.")}
    text = {k[len("text.") :]: v for k, v in sd.items() if k.startswith("text.")}
    rest = [k for k in sd if not k.startswith(("visual.trunk.", "text.")) and k != "logit_scale"]
    if rest:
        raise ConfigError(f"keys without a v1 name: {', '.join(rest[:5])}")
    image_v1 = mci_to_v1(trunk, image) if isinstance(trunk, MCi) else vit_to_v1(image)
    out = {"logit_scale": sd["logit_scale"]}
    out.update({f"image_encoder.model.{k}": v for k, v in image_v1.items()})
    out.update({f"text_encoder.{k}": v for k, v in text_to_v1(text).items()})
    return out


# --------------------------------------------------------------------------------------------- loading
def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:5]) + (", ..." if len(items) > 5 else "")
    return f"{len(items)} {title} ({shown})"


def check_compatible(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing, unexpected, shape-mismatched) keys of `state_dict` relative to `model.state_dict()`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {_shape(state_dict[k])} vs model {_shape(expected[k])}"
        for k in expected
        if k in state_dict and _shape(state_dict[k]) != _shape(expected[k])
    ]
    return missing, unexpected, mismatched


def _scalars_shaped_like(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`logit_scale` / `logit_bias` stored as () or (1,) take the model's shape, as open_clip's loader does."""
    own = dict(model.named_parameters())
    for key in ("logit_scale", "logit_bias"):
        if key in state_dict and key in own and state_dict[key].numel() == own[key].numel() == 1:
            state_dict[key] = state_dict[key].reshape(own[key].shape)
    return state_dict


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    *,
    source: ModelSource | None = None,
) -> dict[str, list[str]]:
    """Load weights (file, model or run folder, or state dict; any known layout) into `model`.

    Strict by default: any missing, unexpected or shape-mismatched key raises one `CheckpointError` that
    lists the first few of each, and names the model the weights were made for when their folder or run records
    one that is not `model.model_name` (`source` describes where a state dict came from). With `strict=False`
    the matching entries are loaded and the report returned.
    """
    if not isinstance(checkpoint, Mapping) and source is None and Path(checkpoint).exists():
        source = describe_pretrained(checkpoint)
    if isinstance(checkpoint, Mapping):
        raw, label = checkpoint, str(source.weights) if source else "state dict"
    else:
        raw, label = load_state_dict(source.weights if source else checkpoint), str(checkpoint)
    state_dict = _scalars_shaped_like(model, to_edgevl_layout(raw))
    missing, unexpected, mismatched = check_compatible(model, state_dict)
    if strict and (missing or unexpected or mismatched):
        parts = [
            _listing(title, items)
            for title, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape-mismatched", mismatched),
            )
            if items
        ]
        if source is not None and source.model and source.model != getattr(model, "model_name", None):
            raise CheckpointError(f"{source.made_for()} ({'; '.join(parts)})")
        hint = (
            " (the checkpoint is re-parameterized: build the model with reparameterize=True)"
            if (is_reparameterized(state_dict) and missing)
            else ""
        )
        raise CheckpointError(f"checkpoint {label!r} does not match the model: {'; '.join(parts)}{hint}")
    bad = {m.split(":")[0] for m in mismatched}
    model.load_state_dict(
        {k: v for k, v in state_dict.items() if k not in bad and k not in unexpected}, strict=False
    )
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}


# ---------------------------------------------------------------------------------------------- saving
def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write tensors to a `.safetensors` file atomically (temp file in the same folder, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    return path


def folder_config(model: nn.Module, **provenance) -> dict | None:
    """The `open_clip_config.json` content of a factory-built `model` (None without `model.model_cfg`):
    its config, preprocessing, and an `edgevl` block with `model.model_name` and `provenance` (step=, ema=)."""
    config = getattr(model, "model_cfg", None)
    if config is None:
        return None
    meta = {"model_cfg": config, "preprocess_cfg": getattr(model, "preprocess_cfg", None) or {}}
    name = getattr(model, "model_name", None)
    block = {**({"model": name} if name else {}), **provenance}
    if block:
        meta[EDGEVL_KEY] = block
    return meta


def save_pretrained(
    model: nn.Module, folder: str | Path, config: dict | None = None, preprocess_cfg: dict | None = None
) -> Path:
    """Save `model` as an edgevl/open_clip local-dir folder: `open_clip_config.json` + `model.safetensors`.

    `config` defaults to the config the factory attached to the model (`model.model_cfg`, then with the model's
    name recorded), and `preprocess_cfg` to `model.preprocess_cfg`. Both files are written atomically.
    """
    meta = (folder_config(model) if config is None else {"model_cfg": config}) or {}
    if "model_cfg" not in meta:
        raise CheckpointError("save_pretrained needs the model config (pass config=...)")
    if preprocess_cfg is not None:
        meta["preprocess_cfg"] = preprocess_cfg
    meta.setdefault("preprocess_cfg", getattr(model, "preprocess_cfg", None) or {})
    folder = Path(folder)
    save_state_dict(model.state_dict(), folder / WEIGHTS_NAME)
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write_text(folder / CONFIG_NAME, text)
    return folder
