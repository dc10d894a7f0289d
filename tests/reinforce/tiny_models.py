"""Tiny random teachers and captioner saved as model folders, and a small world dataset, for the tests."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

import edgevl
from edgevl.data.world import make
from edgevl.models.lightcap.config import get_lightcap_config
from edgevl.models.lightcap.model import LightCap
from edgevl.reinforce.config import ReinforceConfig

NUM_AUGS, NUM_SYN, BATCH = 3, 2, 4
TINY_TEXT = {"context_length": 16, "width": 32, "heads": 2, "layers": 1}
TINY_VIT = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}
TINY_MCI = {"image_size": 32, "timm_model_kwargs": {"layers": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 64]}}


def save_teachers(root: Path) -> list[str]:
    """Two random teachers of different families, sizes and dims: a 32 px ViT (dim 24), a 48 px MCi (dim 16).

    Returns their specs: a bare folder and `local-dir:FOLDER`.
    """
    torch.manual_seed(0)
    vit = edgevl.create_model("world-teacher-vit", embed_dim=24, vision_cfg=TINY_VIT, text_cfg=TINY_TEXT,
                              preprocess_cfg={"size": 32})
    mci = edgevl.create_model("world-teacher-mci", embed_dim=16, vision_cfg={**TINY_MCI, "image_size": 48},
                              text_cfg=TINY_TEXT, preprocess_cfg={"size": 48, "mean": [0.5] * 3, "std": [0.25] * 3})
    edgevl.save_pretrained(vit, root / "teacher-vit")
    edgevl.save_pretrained(mci, root / "teacher-mci")
    return [str(root / "teacher-vit"), f"local-dir:{root / 'teacher-mci'}"]


def tiny_lightcap() -> LightCap:
    """A random LightCap with a tiny fusion and an 8-token caption limit."""
    torch.manual_seed(1)
    cfg = get_lightcap_config("lightcap-tiny").replace(
        name="lightcap-test", image_size=32, hidden=32, layers=1, heads=2, ffn=64, max_caption_tokens=8,
        num_concepts=16, concept_top_k=4, concept_joint_dim=32, concept_hidden=32,
        backbone={"type": "clip_resnet", "layers": [1, 1, 1, 1], "width": 8})
    return LightCap(cfg).eval()


def save_captioner(root: Path) -> str:
    """`tiny_lightcap` saved; returns its folder."""
    tiny_lightcap().save_pretrained(root / "captioner")
    return str(root / "captioner")


def save_collapsed_captioner(root: Path, bias: float = 18.0) -> str:
    """`tiny_lightcap` with `bias` added to every head's output bias of one word, so it repeats that word in many
    captions ("[unused2] [unused2] ..."), as a collapsed captioner does; returns its folder."""
    model = tiny_lightcap()
    word = model.vocab.words.index("[unused2]")
    with torch.no_grad():
        for head in model.head.heads:
            head.bias[word] += bias
    model.save_pretrained(root / "collapsed-captioner")
    return str(root / "collapsed-captioner")


def make_world(root: Path, n: int, shard_size: int) -> str:
    """A 64 px world train split as webdataset shards, plus one undecodable sample at the end of shard 1;
    returns the shard pattern."""
    make(root / "data", n, shard_size=shard_size, size=64)
    with tarfile.open(root / "data" / "00001.tar", "a") as tar:
        for name, data in (("zz-broken.png", b"not a png"), ("zz-broken.txt", b"a broken image")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    last = -(-n // shard_size) - 1
    return str(root / "data" / f"{{00000..{last:05d}}}.tar")


@dataclass(frozen=True)
class TinySetup:
    root: Path
    data: str
    teachers: tuple[str, ...]
    captioner: str


def reinforce_config(tiny: TinySetup, out: Path, **kw) -> ReinforceConfig:
    """The settings every test uses unless it overrides some."""
    base = {"data": tiny.data, "out": str(out), "teachers": tiny.teachers, "captioner": tiny.captioner,
            "num_augs": NUM_AUGS, "num_syn_captions": NUM_SYN, "batch_size": BATCH, "progress": False}
    return ReinforceConfig(**{**base, **kw})


def cli_args(tiny: TinySetup, out: Path) -> list[str]:
    """`edgevl reinforce run` arguments equal to `reinforce_config(tiny, out)`."""
    return ["reinforce", "run", "--data", tiny.data, "--out", str(out), "--teachers", ",".join(tiny.teachers),
            "--captioner", tiny.captioner, "--num-augs", str(NUM_AUGS), "--num-syn-captions", str(NUM_SYN),
            "--batch-size", str(BATCH), "--no-progress"]
