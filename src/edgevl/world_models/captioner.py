"""The shipped world captioner: a LightCap on the frozen image trunk of the world MCi teacher (as LightCap
reuses CLIP's image encoder), with concept embeddings from that teacher's text tower, trained with
teacher-forced cross-entropy on the clean captions of the train split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from edgevl.data.world import BACKGROUNDS, COLOR_NAMES, SHAPES, SIZE_NAMES, TEXTURES, samples
from edgevl.errors import CheckpointError

CONCEPTS = (*COLOR_NAMES, *SHAPES, *SIZE_NAMES, *TEXTURES[1:], *BACKGROUNDS)
BACKBONE_TEACHER = "teacher-mci"
STEPS, BATCH, LR = 600, 64, 1e-3
VOCAB_SAMPLES, EVAL_IMAGES = 4000, 200
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


def caption_scores(model: Any, n_images: int = EVAL_IMAGES, seed: int = 0) -> dict[str, float]:
    """CIDEr-D and BLEU-4 of greedy captions on `test` images against their 5 clean captions."""
    from edgevl.captioning import DecodeOptions, caption_tensor
    from edgevl.eval.captioning import evaluate_captions
    from edgevl.world_models.data import pixel_transform

    test = list(samples(n_images, "test", seed, model.config.image_size))
    transform = pixel_transform(model.config.mean, model.config.std)
    pixels = torch.stack([transform(s.image) for s in test])
    texts = caption_tensor(model.eval(), pixels, DecodeOptions(beam=1, max_words=MAX_CAPTION_TOKENS))
    scores = evaluate_captions({s.id: s.captions for s in test}, dict(zip((s.id for s in test), texts)),
                               use_meteor=False)
    return {"CIDEr-D": scores["CIDEr-D"], "BLEU-4": scores["BLEU-4"]}


def pretrain_captioner(out: str | Path, *, teachers: str | Path | None = None, steps: int | None = None,
                       seed: int = 0) -> dict[str, Any]:
    """Train the world captioner and write `out/captioner/` (LightCap folder + `pretrain.json`)."""
    from edgevl.models.factory import create_model
    from edgevl.models.lightcap.training import caption_ids, captioner_loss, concept_targets
    from edgevl.train.schedule import cosine_lr, set_lr
    from edgevl.train.trainer import seed_everything
    from edgevl.world_models.data import pixel_transform

    out = Path(out)
    seed_everything(seed)
    teacher_dir = _teacher_folder(out, teachers)
    teacher = create_model(f"local-dir:{teacher_dir}")
    vocab_captions = [c for s in samples(VOCAB_SAMPLES, "train", seed) for c in s.captions]
    model = build_world_captioner(teacher, vocab_captions).train()
    transform = pixel_transform(model.config.mean, model.config.std)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    steps = steps or STEPS
    start, log = time.perf_counter(), []
    rng = torch.Generator().manual_seed(seed)
    for step in range(steps):
        batch = list(samples(BATCH, "train", seed, model.config.image_size, start=step * BATCH))
        picks = torch.randint(0, len(batch[0].captions), (len(batch),), generator=rng).tolist()
        pixels = torch.stack([transform(s.image) for s in batch])
        ids = caption_ids(model.vocab, [s.captions[i] for s, i in zip(batch, picks)], MAX_CAPTION_TOKENS)
        concepts = concept_targets(model.concept_names, [s.captions for s in batch])
        set_lr(optimizer, cosine_lr(step, LR, 50, steps))
        loss = captioner_loss(model, pixels, ids, concepts)
        optimizer.zero_grad(set_to_none=True)
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.append({"step": step + 1, **{k: round(v.item(), 4) for k, v in loss.items()}})
            print(json.dumps(log[-1]), flush=True)
    seconds = time.perf_counter() - start
    folder = model.eval().save_pretrained(out / "captioner")
    record = {"name": "captioner", "backbone_teacher": str(teacher_dir), "steps": steps, "batch_size": BATCH,
              "seed": seed, "train_seconds": round(seconds, 1), "metrics": caption_scores(model, seed=seed),
              "log": log}
    (folder / "pretrain.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record
