"""Official weight sets by name (open_clip's pretrained tags): repository, file and preprocessing of each.

`create_model(name, pretrained=TAG)` looks the tag up here and fetches the file through `edgevl.models.hub`. Tags
are matched lower-case with '-' read as '_'. Facts come from open_clip 3.3.0's table and the ml-mobileclip READMEs;
`filename=None` means open_clip's default names (`open_clip_model.safetensors`, else `open_clip_pytorch_model.bin`).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgevl.errors import ConfigError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MOBILECLIP_MEAN = (0.0, 0.0, 0.0)
MOBILECLIP_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class PretrainedTag:
    """One official weight set: where it lives on the Hugging Face hub and how its images are preprocessed."""

    model: str
    tag: str
    hf_hub: str
    filename: str | None = None  # None: open_clip's default names; "": not known (see `note`)
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    quick_gelu: bool = False
    note: str = ""

    @property
    def preprocess_cfg(self) -> dict:
        """The preprocessing keys this tag sets (size comes from the model config)."""
        return {"mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
                "resize_mode": self.resize_mode}


def _mobileclip(model: str, tag: str, repo: str, filename: str | None = None, note: str = "") -> PretrainedTag:
    return PretrainedTag(model, tag, repo, filename, MOBILECLIP_MEAN, MOBILECLIP_STD, "bilinear", note=note)


def _openai_norm(model: str, tag: str, repo: str, filename: str | None = None, interpolation: str = "bilinear",
                 quick_gelu: bool = False, note: str = "") -> PretrainedTag:
    return PretrainedTag(model, tag, repo, filename, interpolation=interpolation, quick_gelu=quick_gelu, note=note)


_VIT_L14_TEACHERS = (  # (tag, repository, quick_gelu, role)
    ("openai", "timm/vit_large_patch14_clip_224.openai", True, "DataCompDR teacher"),
    ("datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K", False, "DataCompDR teacher"),
    ("dfn2b", "apple/DFN2B-CLIP-ViT-L-14", True, "MobileCLIP2 teacher"),
    ("dfn2b_s39b", "apple/DFN2B-CLIP-ViT-L-14-39B", False, "MobileCLIP2 teacher"),
)
_INFERRED = "preprocessing inferred from MobileCLIP2 (not recorded upstream)"
_TAGS: tuple[PretrainedTag, ...] = (
    _mobileclip("MobileCLIP-S0", "datacompdr", "apple/MobileCLIP-S0", "mobileclip_s0.pt", "v1 layout"),
    _mobileclip("MobileCLIP-S1", "datacompdr", "apple/MobileCLIP-S1-OpenCLIP"),
    _mobileclip("MobileCLIP-S2", "datacompdr", "apple/MobileCLIP-S2-OpenCLIP"),
    _mobileclip("MobileCLIP-B", "datacompdr", "apple/MobileCLIP-B-OpenCLIP"),
    _mobileclip("MobileCLIP-B", "datacompdr_lt", "apple/MobileCLIP-B-LT-OpenCLIP"),
    _openai_norm("MobileCLIP-S3", "datacompdr", "apple/MobileCLIP-S3", "mobileclip_s3.pt", note=_INFERRED),
    _openai_norm("MobileCLIP-S4", "datacompdr", "apple/MobileCLIP-S4", "mobileclip_s4.pt", note=_INFERRED),
    _openai_norm("MobileCLIP-L-14", "datacompdr", "apple/MobileCLIP-L-14", "", "bicubic",
                 note="file name unknown: pass hf-hub:apple/MobileCLIP-L-14/FILE; " + _INFERRED),
    _mobileclip("MobileCLIP2-S0", "dfndr2b", "timm/MobileCLIP2-S0-OpenCLIP"),
    _mobileclip("MobileCLIP2-S2", "dfndr2b", "timm/MobileCLIP2-S2-OpenCLIP"),
    _mobileclip("MobileCLIP2-B", "dfndr2b", "timm/MobileCLIP2-B-OpenCLIP"),
    _openai_norm("MobileCLIP2-S3", "dfndr2b", "timm/MobileCLIP2-S3-OpenCLIP"),
    _openai_norm("MobileCLIP2-S4", "dfndr2b", "timm/MobileCLIP2-S4-OpenCLIP"),
    _openai_norm("MobileCLIP2-L-14", "dfndr2b", "timm/MobileCLIP2-L-14-OpenCLIP", interpolation="bicubic"),
    *(
        _openai_norm(name, tag, repo, interpolation="bicubic", quick_gelu=gelu, note=note)
        for tag, repo, gelu, note in _VIT_L14_TEACHERS
        for name in ("ViT-L-14", "ViT-L-14-quickgelu")
        if gelu or name == "ViT-L-14"  # open_clip repeats QuickGELU tags under the -quickgelu name
    ),
    *(
        _openai_norm(f"coca_ViT-{size}", tag, f"laion/{prefix}CoCa-ViT-{size}-laion2B-s13B-b90k",
                     interpolation="bicubic", note=note)
        for size in ("L-14", "B-32")
        for tag, prefix, note in (
            ("laion2b_s13b_b90k", "", "captioner"),
            ("mscoco_finetuned_laion2b_s13b_b90k", "mscoco_finetuned_",
             "DataCompDR captioner" if size == "L-14" else "captioner"),
        )
    ),
)


def _key(text: str) -> str:
    return text.lower().replace("-", "_")


def list_pretrained() -> list[PretrainedTag]:
    """Every official weight set edgevl knows, with its repository, file and preprocessing."""
    return list(_TAGS)


def list_pretrained_tags_by_model(model: str) -> list[str]:
    """The tags of one model name ('/' read as '-'), in table order."""
    name = model.replace("/", "-")
    return [t.tag for t in _TAGS if t.model == name]


def is_pretrained_tag(model: str, tag: str) -> bool:
    """True when `tag` (any case, '-' or '_') names an official weight set of `model`."""
    return _key(tag) in {_key(t) for t in list_pretrained_tags_by_model(model)}


def get_pretrained_tag(model: str, tag: str) -> PretrainedTag:
    """The weight set `tag` of `model`; an unknown tag is a `ConfigError` listing the model's known tags."""
    name = model.replace("/", "-")
    for entry in _TAGS:
        if entry.model == name and _key(entry.tag) == _key(tag):
            return entry
    known = list_pretrained_tags_by_model(name)
    listing = f"known tags: {', '.join(known)}" if known else "it has no official weights; pass a file or folder"
    raise ConfigError(f"unknown pretrained tag {tag!r} for model {name!r} and no such file or folder; {listing}")
