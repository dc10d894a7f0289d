"""What `edgevl reinforce run` takes: `ReinforceConfig`, its checks and the settings a resumed run must match."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgevl.data.augment import AugmentConfig
from edgevl.errors import ConfigError
from edgevl.models.factory import split_model_specs
from edgevl.models.precision import COMPUTE_PRECISIONS
from edgevl.reinforce.storage import EMBEDDING_FORMATS, STORAGE_DTYPES, check_storage

DEFAULT_SYN_CAPTIONS = 5


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    """`--logit-scales 100,100` -> (100.0, 100.0)."""
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--logit-scales must be comma-separated numbers, got {text!r}") from None


@dataclass(frozen=True)
class ReinforceConfig:
    """Everything `edgevl reinforce run` takes; the fields except `out`, `device`, `progress` and `strict` are
    recorded in `_state/settings.json` and must match when a run is resumed. Each field is the flag of its name
    (dashes for underscores) with the help text in its metadata (`edgevl.cli.flags`).

    `captioner` is one captioner spec (CoCa or LightCap), several comma-separated, or None for teacher-only data (no
    synthetic captions); `num_syn_captions` is per captioner (default 5, and 0 without a captioner).
    """

    data: str = field(metadata={"help": "input reader spec (wds shards, csv/tsv/jsonl/parquet, coco, ...)"})
    out: str = field(metadata={"help": "output folder for the shards, manifest.json and sizes.json"})
    teachers: tuple[str, ...] = field(metadata={
        "help": ("comma-separated CLIP teachers in stored order: MODEL:WEIGHTS (a file or folder, an official "
                 "tag such as ViT-L-14:openai, or MODEL:hf-hub:ORG/REPO), hf-hub:ORG/REPO[@REV] or model folders"),
        "parse": split_model_specs})
    captioner: str | None = field(default=None, metadata={
        "help": "comma-separated captioners stored side by side (syn_text, syn_text_1, ...): open_clip CoCa models "
                "(coca_ViT-L-14:TAG or :FILE, hf-hub:ORG/REPO, a model folder; DataCompDR's top-p recipe) or LightCap "
                "models (MODEL:WEIGHTS or a model folder); leave out for teacher-only data"})
    num_augs: int = field(default=10, metadata={"help": "augmentations stored per image"})
    num_syn_captions: int | None = field(default=None, metadata={
        "help": f"synthetic captions per image and captioner (default {DEFAULT_SYN_CAPTIONS}; 0 without --captioner)"})
    dtype: str = field(default="fp16", metadata={"help": "embedding storage dtype", "choices": tuple(STORAGE_DTYPES)})
    fmt: str | None = field(default=None, metadata={
        "help": "embedding member (default: npz, or pth.gz for bf16 which npz cannot hold)", "flag": "--format",
        "choices": EMBEDDING_FORMATS})
    seed: int = field(default=0, metadata={"help": "seed of augmentations and caption sampling"})
    batch_size: int = field(default=32, metadata={"help": "samples processed together"})
    shard_size: int = field(default=1000, metadata={"help": "samples per output shard for non-tar input"})
    aug_size: int | None = field(default=None, metadata={
        "help": "size the augmentations are sampled for (default: the first teacher's input size)"})
    aug_scale: tuple[float, float] = field(default=AugmentConfig.scale, metadata={
        "help": "area range of the stored random-resized crops (lo hi); small images want a larger lo"})
    aug_ops: int = field(default=AugmentConfig.num_ops, metadata={
        "help": "RandAugment ops per stored augmentation (0: crops only, e.g. where colour is a label)"})
    logit_scales: tuple[float, ...] | None = field(default=None, metadata={
        "help": "comma-separated KD logit scales per teacher (default: each teacher's own scale)",
        "parse": parse_scales})
    precision: str = field(default="fp32", metadata={
        "help": "compute precision of the models", "choices": COMPUTE_PRECISIONS})
    top_p: float = field(default=0.9, metadata={"help": "nucleus mass of caption sampling"})
    temperature: float = field(default=1.0, metadata={"help": "caption sampling temperature"})
    caption_redraws: int = field(default=3, metadata={
        "help": "extra draws of a degenerate synthetic caption before it is kept as drawn (0: keep every caption; "
                "degenerate ones are counted either way)"})
    images: bool = field(default=True, metadata={
        "help": "DataCompDR layout: leave image and txt out (read with ?images=<the input shards>)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:N] (torchrun: cuda:LOCAL_RANK)"})
    progress: bool = field(default=True, metadata={"help": "no progress bar"})
    strict: bool = field(default=False, metadata={
        "help": "fail (exit 2) when any input is bad, instead of skipping and counting it"})

    def settings(self) -> dict[str, Any]:
        """The output-defining settings (JSON-ready)."""
        data = asdict(self)
        for name in ("out", "device", "progress", "strict"):
            data.pop(name)
        data["fmt"] = check_storage(self.dtype, self.fmt)
        data["num_syn_captions"] = self.syn_per_captioner
        data["teachers"] = list(self.teachers)
        data["logit_scales"] = list(self.logit_scales) if self.logit_scales else None
        data["aug_scale"] = list(self.aug_scale)
        return data

    @property
    def captioners(self) -> tuple[str, ...]:
        """The captioner specs in stored order (empty for teacher-only data)."""
        return split_model_specs(self.captioner or "")

    @property
    def syn_per_captioner(self) -> int:
        """Synthetic captions each captioner writes per image (0 without a captioner)."""
        if self.num_syn_captions is not None:
            return self.num_syn_captions
        return DEFAULT_SYN_CAPTIONS if self.captioners else 0

    def check(self) -> None:
        """Reject impossible settings with a message naming the flag."""
        if not self.teachers:
            raise ConfigError("--teachers: give at least one teacher (MODEL:WEIGHTS)")
        for name, value in (("--num-augs", self.num_augs), ("--batch-size", self.batch_size),
                            ("--shard-size", self.shard_size)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        syn = self.syn_per_captioner
        if self.captioners and syn < 1:
            raise ConfigError(f"--num-syn-captions must be >= 1 with --captioner, got {syn}; leave --captioner "
                              "out for teacher-only data")
        if not self.captioners and syn != 0:
            raise ConfigError(f"--num-syn-captions {syn} needs --captioner (teacher-only data stores no synthetic "
                              "captions)")
        if len(self.aug_scale) != 2 or not 0 < self.aug_scale[0] <= self.aug_scale[1] <= 1:
            raise ConfigError(f"--aug-scale must be two numbers 0 < lo <= hi <= 1, got {self.aug_scale}")
        if self.caption_redraws < 0:
            raise ConfigError(f"--caption-redraws must be >= 0, got {self.caption_redraws}")
        if self.aug_ops < 0:
            raise ConfigError(f"--aug-ops must be >= 0, got {self.aug_ops}")
        if self.logit_scales is not None and len(self.logit_scales) != len(self.teachers):
            raise ConfigError(f"--logit-scales gives {len(self.logit_scales)} values for {len(self.teachers)} teachers")
        check_storage(self.dtype, self.fmt)
