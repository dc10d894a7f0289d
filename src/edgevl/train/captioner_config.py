"""Options of `edgevl train-captioner`: `CaptionerTrainConfig` (imported by `edgevl.train.captioner`; kept apart
so that the command line can read its flags without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgevl.errors import ConfigError


@dataclass
class CaptionerTrainConfig:
    """Options of `edgevl train-captioner`: each field is the flag of its name (dashes for underscores) with the help
    text in its metadata (`edgevl.cli.flags`); `"cli": False` ones are for Python callers only. Defaults marked
    [assumed] are OSCAR/VinVL-style choices where the paper gives none."""

    config: str = field(default="lightcap-tiny", metadata={
        "help": "LightCap preset or config JSON (trained from scratch), or a model folder (fine-tuned)"})
    backbone: str | None = field(default=None, metadata={
        "help": "trained CLIP with an MCi image tower as the frozen backbone: an `edgevl train` run folder, a model "
                "folder or MODEL:WEIGHTS (default: the config's own, warned about when untrained)",
        "metavar": "RUN_OR_MODEL"})
    train_data: str = field(default="", metadata={
        "help": "reader spec with captions (world wds/csv, coco:, karpathy:)", "required": True})
    val_data: str | None = field(default=None, metadata={
        "help": "reader spec of the validation split: CIDEr-D/BLEU-4, plus class (and world colour/shape) accuracy "
                "of the captions where images are labelled (world wds, folder:)"})
    out: str = field(default="runs/captioner", metadata={"help": "run folder", "required": True})
    train_samples: int | None = field(default=None, metadata={"help": "read at most N training images"})
    val_samples: int = field(default=500, metadata={"help": "evaluate on at most N validation images"})
    steps: int = field(default=1000, metadata={"help": "cross-entropy (+ distillation) steps"})
    batch_size: int = field(default=64, metadata={"help": "captions per step"})
    lr: float = field(default=5e-4, metadata={  # [assumed]
        "help": "peak AdamW learning rate (warm-up then cosine)"})
    min_lr: float = field(default=0.0, metadata={"cli": False})
    wd: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup: int = field(default=50, metadata={"help": "linear warm-up steps"})
    grad_clip_norm: float = field(default=1.0, metadata={"cli": False})
    concept_weight: float = field(default=1.0, metadata={"help": "weight of the concept-extractor BCE loss"})
    teacher: str | None = field(default=None, metadata={
        "help": "teacher to distil from: a trained LightCap folder (same vocabulary: hidden-state, attention and "
                "logit KD) or an open_clip CoCa (coca_ViT-L-14:TAG, MODEL:FILE, hf-hub:ORG/REPO or a folder: its "
                "captions of the training images become the references, so the images need no captions)"})
    teacher_beam: int = field(default=3, metadata={
        "help": "beam width of a CoCa teacher's caption of each training image (1 = greedy)"})
    teacher_samples: int = field(default=0, metadata={
        "help": "extra top-p 0.9 captions per image from a CoCa teacher (DataCompDR's sampling)"})
    kd_hidden: float = field(default=1.0, metadata={"help": "weight of the hidden-state MSE (with --teacher)"})
    kd_attn: float = field(default=1.0, metadata={"help": "weight of the attention-map MSE (with --teacher)"})
    kd_logits: float = field(default=1.0, metadata={"help": "weight of the softened-logit KL (with --teacher)"})
    kd_temperature: float = field(default=2.0, metadata={  # [assumed]
        "help": "softmax temperature of the logit KL"})
    ensemble_distill: bool = field(default=False, metadata={
        "help": "after the main steps, distil each head in turn from a teacher head (others frozen)"})
    ensemble_steps: int | None = field(default=None, metadata={
        "help": "steps of ensemble distillation over all heads (default: half of --steps)"})
    scst_steps: int = field(default=0, metadata={"help": "self-critical CIDEr-D steps at the end"})
    scst_samples: int = field(default=5, metadata={"help": "sampled captions per image in SCST"})
    scst_lr: float = field(default=5e-5, metadata={  # [assumed]
        "help": "SCST learning rate (cosine, no warm-up)"})
    scst_top_p: float = field(default=1.0, metadata={"cli": False})  # 1 = plain multinomial sampling
    no_concepts: bool = field(default=False, metadata={"help": "ablation: no concept tokens and no modulator"})
    no_modulator: bool = field(default=False, metadata={"help": "ablation: concept tokens but no modulator"})
    heads: int | None = field(default=None, metadata={"help": "number of ensemble heads (default: the config's)"})
    eval_every: int = field(default=0, metadata={"help": "evaluate on --val-data every N steps (0: at the end)"})
    eval_beam: int = field(default=1, metadata={"help": "beam size of evaluation decoding (1 = greedy)"})
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps (0: only at the end)"})
    keep_last: int = field(default=3, metadata={"help": "keep the newest N checkpoints"})
    log_every: int = field(default=10, metadata={"cli": False})
    resume: str | None = field(default=None, metadata={
        "help": "'latest' (this run's newest checkpoint) or a checkpoint folder"})
    seed: int = field(default=0, metadata={"help": "seed of initialization and batch sampling"})
    progress: bool = field(default=True, metadata={"cli": False})

    def validate(self) -> CaptionerTrainConfig:
        """Raise `ConfigError` naming the first bad option; returns self."""
        for key in ("batch_size", "keep_last", "log_every", "eval_beam", "val_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.total_steps < 1:
            raise ConfigError("nothing to train: give --steps, --ensemble-steps or --scst-steps")
        for key in ("steps", "scst_steps", "warmup", "eval_every", "save_every", "kd_hidden", "kd_attn", "kd_logits",
                    "wd"):
            if getattr(self, key) < 0:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0 or self.scst_lr <= 0:
            raise ConfigError(f"--lr and --scst-lr must be positive, got {self.lr} and {self.scst_lr}")
        if self.ensemble_distill and not self.teacher:
            raise ConfigError("--ensemble-distill distils each head from a teacher head: give --teacher DIR")
        if self.teacher_beam < 1 or self.teacher_samples < 0:
            raise ConfigError(f"--teacher-beam must be >= 1 and --teacher-samples >= 0, got {self.teacher_beam} and "
                              f"{self.teacher_samples}")
        if self.scst_steps and self.scst_samples < 2:
            raise ConfigError(f"--scst-samples must be at least 2 (mean-of-others baseline), got {self.scst_samples}")
        if self.heads is not None and self.heads < 1:
            raise ConfigError(f"--heads must be at least 1, got {self.heads}")
        if self.backbone is not None and not self.backbone:
            raise ConfigError("--backbone is empty; give a run folder, a model folder or MODEL:WEIGHTS")
        return self

    @property
    def ensemble_total(self) -> int:
        if not self.ensemble_distill:
            return 0
        return self.ensemble_steps if self.ensemble_steps is not None else self.steps // 2

    @property
    def total_steps(self) -> int:
        return self.steps + self.ensemble_total + self.scst_steps
