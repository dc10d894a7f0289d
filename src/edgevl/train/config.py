"""All training options in one dataclass, saved as `params.json` in the run folder (open_clip's params.txt)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgevl.errors import ConfigError
from edgevl.models.precision import COMPUTE_PRECISIONS

MODES = ("clip", "reinforced", "online-distill")


@dataclass
class TrainConfig:
    """Options of `edgevl train`; field names match the CLI flags (dashes become underscores)."""

    model: str = "world-student-mci"
    pretrained: str | None = None
    train_data: str = ""
    val_data: str | None = None
    strict: bool = False
    mode: str = "clip"
    name: str = "run"
    logs: str = "runs"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 0.0
    wd: float = 0.2
    warmup: int = 100
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-6
    grad_clip_norm: float | None = 1.0
    accum_freq: int = 1
    precision: str = "fp32"
    ema: float | None = None
    grad_checkpointing: bool = False
    channels_last: bool = True
    lock_image: bool = False
    lock_image_unlocked_groups: int = 0
    lock_text: bool = False
    lock_text_unlocked_layers: int = 0
    pretrained_lr_scale: float = 1.0
    distill_lambda: float = 1.0
    distill_logit_scale: list[float] | None = None
    real_weight: float = 1.0
    syn_weight: float = 1.0
    teachers: list[str] = field(default_factory=list)
    captioner: str | None = None
    eval_every: int = 0
    eval_samples: int = 1000
    save_every: int = 0
    keep_last: int = 3
    log_every: int = 10
    resume: str | None = None
    seed: int = 0
    workers: int = 0
    device: str = "auto"

    def validate(self) -> TrainConfig:
        """Raise `ConfigError` naming the first bad option; returns self."""
        if self.mode not in MODES:
            raise ConfigError(f"unknown --mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.precision not in COMPUTE_PRECISIONS:
            raise ConfigError(f"unknown --precision {self.precision!r}; choose from {', '.join(COMPUTE_PRECISIONS)}")
        positive = {"steps": self.steps, "batch_size": self.batch_size, "accum_freq": self.accum_freq,
                    "keep_last": self.keep_last, "log_every": self.log_every}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
        if self.lr <= 0 or self.warmup < 0 or self.wd < 0:
            raise ConfigError(f"need --lr > 0, --warmup >= 0, --wd >= 0 (got {self.lr}, {self.warmup}, {self.wd})")
        if not 0.0 <= self.distill_lambda <= 1.0:
            raise ConfigError(f"--distill-lambda must be in [0, 1], got {self.distill_lambda}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ConfigError(f"--ema decay must be in (0, 1), got {self.ema}")
        if self.mode == "online-distill" and not self.teachers:
            raise ConfigError("--mode online-distill needs --teachers MODEL:WEIGHTS,...")
        if self.mode == "online-distill":
            from edgevl.models.factory import parse_model_spec

            for spec in self.teachers:
                parse_model_spec(spec, "teacher")
            if self.captioner:
                parse_model_spec(self.captioner, "captioner")
        if not self.train_data:
            raise ConfigError("--train-data is required")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.logs) / self.name

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}")
        return cls(**values)
