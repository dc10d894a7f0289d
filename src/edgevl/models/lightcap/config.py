"""LightCap configuration: a JSON file (named preset in `edgevl/models/configs/lightcap-*.json` or a model folder)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevl.data.transforms import OPENAI_MEAN, OPENAI_STD, PreprocessCfg
from edgevl.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PREFIX = "lightcap-"


@dataclass(frozen=True)
class LightCapConfig:
    """Every size/option of a LightCap captioner. Fields marked [inferred] in the spec are options here."""

    name: str = "lightcap"
    architecture: str = "lightcap"
    backbone: dict[str, Any] = field(default_factory=lambda: {"type": "clip_resnet", "layers": [3, 4, 6, 3],
                                                               "width": 64})
    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    vocab_size: int = 30522  # size of the untrained placeholder vocabulary; a vocab.json overrides it
    hidden: int = 312
    layers: int = 4
    heads: int = 12
    ffn: int = 1200
    max_caption_tokens: int = 40  # BOS + words; positions 0..max_caption_tokens-1
    num_concepts: int = 1600  # placeholder concept vocabulary size (VG-1600-like); vocab.json overrides it
    concept_top_k: int = 20
    concept_joint_dim: int = 1024
    concept_hidden: int = 1024
    modulator_reduction: int = 8
    modulator_combine: str = "mean_attention"  # [inferred] how the K concept attentions merge
    num_heads: int = 3  # [unverified] size of the ensemble head
    use_concepts: bool = True  # ablation switch: False drops the concept tokens (and the modulator)
    use_modulator: bool = True  # ablation switch: False feeds the grid to the fusion unmodulated

    def __post_init__(self) -> None:
        for key in ("image_size", "vocab_size", "hidden", "layers", "heads", "ffn", "max_caption_tokens",
                    "concept_top_k", "concept_joint_dim", "concept_hidden", "modulator_reduction", "num_heads"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"LightCap config {self.name!r}: {key} must be positive, got {getattr(self, key)}")
        if self.num_concepts < 1:
            raise ConfigError(f"LightCap config {self.name!r}: the concept vocabulary is empty (num_concepts=0)")
        if self.image_size % 32:
            raise ConfigError(f"LightCap config {self.name!r}: image_size must be a multiple of 32")

    @property
    def preprocess(self) -> PreprocessCfg:
        return PreprocessCfg(size=self.image_size, mean=tuple(self.mean), std=tuple(self.std),
                             interpolation=self.interpolation)

    @property
    def grid_tokens(self) -> int:
        return (self.image_size // 32) ** 2

    def replace(self, **changes: Any) -> LightCapConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> LightCapConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"LightCap config {source}: unknown keys {unknown}")
        if data.get("architecture", "lightcap") != "lightcap":
            raise ConfigError(f"config {source} is not a LightCap config (architecture={data['architecture']!r})")
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> LightCapConfig:
        """Read a config JSON file (ConfigError naming the file when it is missing or malformed)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read LightCap config {str(path)!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"LightCap config {str(path)!r} must be a JSON object")
        return cls.from_dict(data, repr(str(path)))


def list_lightcap_configs() -> list[str]:
    """Names of the bundled LightCap presets (`lightcap-*.json`)."""
    return sorted(p.stem for p in CONFIG_DIR.glob(f"{PREFIX}*.json"))


def get_lightcap_config(name: str) -> LightCapConfig:
    """A bundled preset by name, e.g. 'lightcap-rn50'."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown LightCap model {name!r}; available: {', '.join(list_lightcap_configs())}")
    return LightCapConfig.load(path)
