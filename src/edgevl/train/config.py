"""All training options in one dataclass, saved as `params.json` in the run folder (open_clip's params.txt)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgevl.errors import ConfigError
from edgevl.models.precision import COMPUTE_PRECISIONS

MODES = ("clip", "reinforced", "online-distill")


def _teacher_specs(text: str) -> list[str]:
    """`--teachers A:W,B:W` -> ['A:W', 'B:W']."""
    from edgevl.models.factory import split_model_specs

    return list(split_model_specs(text))


@dataclass
class TrainConfig:
    """Options of `edgevl train`: each field is the flag of its name (dashes for underscores) with the help text in
    its metadata (`edgevl.cli.flags`)."""

    model: str = field(default="world-student-mci", metadata={
        "help": "student model config name (edgevl info); default: the --pretrained folder's own model, else "
                "%(fallback)s", "cli_default": None})
    pretrained: str | None = field(default=None, metadata={
        "help": "start from these weights (file, model folder or training run folder; any layout)"})
    train_data: str = field(default="", metadata={
        "help": "training reader spec (wds:..., csv:..., reinforced:...)", "required": True})
    val_data: str | None = field(default=None, metadata={
        "help": "held-out reader spec for periodic evaluation; a folder: spec is scored like `edgevl eval` (same "
                "class names and templates: classnames.txt or ?classnames=, ?templates=; docs/eval.md)"})
    strict: bool = field(default=False, metadata={
        "help": "fail (exit 2) when any input is bad, instead of skipping and counting it"})
    mode: str = field(default="clip", metadata={
        "help": "loss: plain CLIP, reinforced shards, or teachers run online", "choices": MODES})
    name: str = field(default="run", metadata={"help": "run name: outputs go to <logs>/<name>/"})
    logs: str = field(default="runs", metadata={"help": "folder holding the run folders"})
    steps: int = field(default=1000, metadata={"help": "optimizer steps to train"})
    batch_size: int = field(default=64, metadata={"help": "samples per micro-batch and rank"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    min_lr: float = field(default=0.0, metadata={"help": "learning rate at the end of the cosine"})
    wd: float = field(default=0.2, metadata={"help": "AdamW weight decay (not on norms, biases, logit scale)"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    eps: float = field(default=1e-6, metadata={"help": "AdamW epsilon"})
    grad_clip_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm (0: off)"})
    accum_freq: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    precision: str = field(default="fp32", metadata={"help": "bf16 = bf16 autocast", "choices": COMPUTE_PRECISIONS})
    ema: float | None = field(default=None, metadata={"help": "keep an EMA of the weights with this decay"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "recompute activations to save memory"})
    channels_last: bool = field(default=True, metadata={
        "help": "channels-last weights and images (its depthwise-conv backward is 2-6x faster on CPU); "
                "--no-channels-last keeps NCHW", "negatable": True})
    lock_image: bool = field(default=False, metadata={"help": "freeze the image tower"})
    lock_image_unlocked_groups: int = field(default=0, metadata={
        "help": "with --lock-image: leave the last N layer groups trainable"})
    lock_text: bool = field(default=False, metadata={"help": "freeze the text tower"})
    lock_text_unlocked_layers: int = field(default=0, metadata={
        "help": "with --lock-text: leave the last N layers trainable"})
    pretrained_lr_scale: float = field(default=1.0, metadata={
        "help": "with --pretrained: LR factor for tower bodies (projections, heads, logit scale: 1)"})
    distill_lambda: float = field(default=1.0, metadata={"help": "λ: loss = (1-λ)·CLIP + λ·distillation"})
    distill_logit_scale: list[float] | None = field(default=None, metadata={
        "help": "fixed teacher logit scales, one per teacher (default: manifest / teachers' own)"})
    real_weight: float = field(default=1.0, metadata={"help": "weight of the (image, real caption) loss"})
    syn_weight: float = field(default=1.0, metadata={"help": "weight of the (image, synthetic caption) loss"})
    teachers: list[str] = field(default_factory=list, metadata={
        "help": ("online-distill: comma-separated CLIP teachers, MODEL:WEIGHTS (file, folder or official tag "
                 "such as ViT-L-14:openai), hf-hub:ORG/REPO[@REV] or model folders"),
        "parse": _teacher_specs})
    captioner: str | None = field(default=None, metadata={
        "help": "online-distill: LightCap MODEL:WEIGHTS or model folder for synthetic captions"})
    eval_every: int = field(default=0, metadata={"help": "evaluate on --val-data every N steps (0: never)"})
    eval_samples: int = field(default=1000, metadata={"help": "held-out samples scored per evaluation"})
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps (and always at the end)"})
    keep_last: int = field(default=3, metadata={"help": "checkpoints kept in <run>/checkpoints/"})
    log_every: int = field(default=10, metadata={"help": "write metrics.jsonl every N steps"})
    resume: str | None = field(default=None, metadata={
        "help": "'latest' (this run's newest checkpoint) or a checkpoint folder"})
    seed: int = field(default=0, metadata={"help": "seed of initialization, data order and augmentation"})
    workers: int = field(default=0, metadata={"help": "data-loading worker processes per rank"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:N]"})

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
                parse_model_spec(spec, "teacher", named_weights=True)
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
