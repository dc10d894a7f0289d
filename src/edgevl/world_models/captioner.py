"""The shipped world captioner: a LightCap on the frozen image trunk of the world MCi teacher (as LightCap
reuses CLIP's image encoder), with concept embeddings from that teacher's text tower, trained with
teacher-forced cross-entropy on the clean captions of the train split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from edgevl.data.world import BACKGROUNDS, COLOR_NAMES, SHAPES, SIZE_NAMES, TEXTURES, samples
from edgevl.errors import CheckpointError

CONCEPTS = (*COLOR_NAMES, *SHAPES, *SIZE_NAMES, *TEXTURES[1:], *BACKGROUNDS)
BACKBONE_TEACHER = "teacher-mci"
STEPS, BATCH, LR = 400, 64, 1e-3
VOCAB_SAMPLES, TRAIN_IMAGES, EVAL_IMAGES, GRID_BATCH = 4000, 4000, 200, 256
MAX_CAPTION_TOKENS = 32


def build_world_captioner(teacher: Any, vocab_captions: list[str]) -> Any:
    """An untrained LightCap whose frozen backbone is `teacher`'s MCi trunk (weights copied) and whose concept
    vocabulary is the world's attribute words embedded by `teacher`'s text tower."""
    from edgevl.models.lightcap.config import LightCapConfig
    from edgevl.models.lightcap.model import LightCap
    from edgevl.models.lightcap.vocab import WordVocab
    from edgevl.tokenizer import get_tokenizer

    vision = teacher.model_cfg["vision_cfg"]
    pp = teacher.preprocess_cfg
    config = LightCapConfig(
        name="lightcap-world",
        backbone={"type": "mci", "preset": vision["timm_model_name"], "overrides": vision["timm_model_kwargs"]},
        image_size=int(pp["size"]), mean=tuple(pp["mean"]), std=tuple(pp["std"]),
        interpolation=pp.get("interpolation", "bicubic"), hidden=128, layers=2, heads=4, ffn=512,
        max_caption_tokens=MAX_CAPTION_TOKENS, concept_top_k=8, concept_joint_dim=int(teacher.model_cfg["embed_dim"]),
        concept_hidden=128, num_heads=2,
    )
    model = LightCap(config, WordVocab.from_captions(vocab_captions), list(CONCEPTS))
    trunk = {k[len("visual.trunk."):]: v.float() for k, v in teacher.state_dict().items()
             if k.startswith("visual.trunk.") and not k.startswith("visual.trunk.head.")}
    result = model.backbone.trunk.load_state_dict(trunk, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"teacher trunk does not fit the captioner backbone: missing {result.missing_keys[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]}")
    with torch.no_grad():
        tokens = get_tokenizer(context_length=teacher.context_length)(list(CONCEPTS))
        model.set_concepts(list(CONCEPTS), teacher.encode_text(tokens, normalize=True).float())
    return model


def _teacher_folder(out: Path, teachers: str | Path | None) -> Path:
    from edgevl.world_models import pretrained_dir

    for folder in (Path(teachers) / BACKBONE_TEACHER if teachers else None, out / BACKBONE_TEACHER):
        if folder is not None and (folder / "model.safetensors").is_file():
            return folder
    return pretrained_dir(BACKBONE_TEACHER)


def world_caption_data(model: Any, n: int, split: str, seed: int) -> Any:
    """Samples 0..n-1 of a world split as cached frozen-backbone grids with their 5 clean captions and the labels
    a caption should name (for the colour/shape accuracy beside CIDEr)."""
    from edgevl.train.captioner_data import CaptionData, world_labels
    from edgevl.world_models.data import pixel_transform

    transform = pixel_transform(model.config.mean, model.config.std)
    keys, grids, refs, labels = [], [], [], []
    batch: list[Any] = []
    for s in samples(n, split, seed, model.config.image_size):
        batch.append(s)
        if len(batch) == GRID_BATCH or len(keys) + len(batch) == n:
            grids.append(model.grid_features(torch.stack([transform(b.image) for b in batch])))
            keys += [b.id for b in batch]
            refs += [b.captions for b in batch]
            labels += [world_labels(b.labels) for b in batch]
            batch = []
    return CaptionData(keys, torch.cat(grids), refs, labels)


def pretrain_captioner(out: str | Path, *, teachers: str | Path | None = None, steps: int | None = None,
                       seed: int = 0) -> dict[str, Any]:
    """Train the world captioner with the generic captioner trainer and write `out/captioner/` (LightCap folder
    + `pretrain.json`, whose metrics hold CIDEr-D and the caption attribute accuracy on the test images)."""
    from edgevl.eval.captioning import attribute_accuracy
    from edgevl.models.factory import create_model
    from edgevl.train.captioner import CaptionerTrainConfig, train_captioner
    from edgevl.train.captioner_eval import decode_cached
    from edgevl.train.trainer import seed_everything
    from edgevl.world_models.pretrain import atomic_json

    out = Path(out)
    seed_everything(seed)
    teacher_dir = _teacher_folder(out, teachers)
    teacher = create_model(f"local-dir:{teacher_dir}")
    vocab_captions = [c for s in samples(VOCAB_SAMPLES, "train", seed) for c in s.captions]
    model = build_world_captioner(teacher, vocab_captions).eval()
    start = time.perf_counter()
    train = world_caption_data(model, TRAIN_IMAGES, "train", seed)
    val = world_caption_data(model, EVAL_IMAGES, "test", seed)
    cfg = CaptionerTrainConfig(out=str(out / "runs" / "captioner"), steps=steps or STEPS, batch_size=BATCH, lr=LR,
                               warmup=50, log_every=50, seed=seed, progress=False)
    result = train_captioner(cfg, model, train=train, val=val)
    seconds = time.perf_counter() - start
    scenes = [s.labels for s in samples(EVAL_IMAGES, "test", seed, model.config.image_size)]
    result["val"].update(attribute_accuracy(decode_cached(model, val.grids, cfg.eval_beam), scenes))
    folder = model.eval().save_pretrained(out / "captioner")
    record = {"name": "captioner", "backbone_teacher": teacher_dir.name, "steps": cfg.steps, "batch_size": BATCH,
              "lr": LR, "train_images": TRAIN_IMAGES, "seed": seed, "train_seconds": round(seconds, 1),
              "metrics": result["val"]}
    atomic_json(folder / "pretrain.json", record)
    return record
