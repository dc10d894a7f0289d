"""The recipe behind the shipped world models (`edgevl world pretrain`): CLIP teachers of two architectures
(MCi and ViT, each >= 5x the student's FLOPs) trained on clean captions of a large train split with the generic
trainer plus a label-prompt term, then the LightCap captioner on the same captions.

Everything is seeded; the teachers are trained independently, so they can run in parallel processes.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgevl.data.world import HEADLINE_TASK
from edgevl.data.world.tasks import get_task
from edgevl.errors import ConfigError
from edgevl.io import atomic_write_text
from edgevl.train.data import Batch
from edgevl.train.losses import clip_loss
from edgevl.world_models.data import WorldPairs, pixel_transform
from edgevl.world_models.evaluate import CurveTrainer, EvalSet


@dataclass(frozen=True)
class TeacherRecipe:
    """How one shipped teacher is trained: model config, steps and batch of the clip-mode run."""

    model: str
    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    wd: float = 0.1
    single_object: float = 0.5  # share of one-object scenes (see WorldPairs): without them shape is not learned
    label_weight: float = 1.0  # weight of the label-prompt term (LabelPromptTrainer); 0 = the CLIP loss alone
    eval_every: int = 250


TEACHERS = {
    "teacher-mci": TeacherRecipe("world-teacher-mci", steps=1200),
    "teacher-vit": TeacherRecipe("world-teacher-vit-convstem", steps=1500, lr=1e-3),
}
TRAIN_SAMPLES = 200_000  # the "large clean split": more samples than the longest run reads
EVAL_TEST, EVAL_HELDOUT = 1000, 400


class LabelPromptTrainer(CurveTrainer):
    """The world curve trainer whose CLIP loss gains a label-prompt term: each image is also classified against
    the headline task's prompts ("the red circle.", embedded by the model's own text tower), target its dominant
    object. In-batch negatives rarely differ by one attribute of one object; the 80 prompts always do."""

    def __init__(self, *args: Any, label_weight: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        task = get_task(HEADLINE_TASK)
        self.label_weight = label_weight
        self.prompts = self.tokenizer([task.templates[0].format(c=c) for c in task.classnames]).to(self.device)

    def forward_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        image, tokens = self.batch_inputs(batch)
        with self._autocast():  # --precision, as the base loss applies it
            img, txt, scale = self.ddp(image, tokens)
            clip = clip_loss(img, txt, scale)
            classes = F.normalize(self.model.encode_text(self.prompts), dim=-1)
            label = F.cross_entropy(scale * img @ classes.T, batch["label"].to(self.device))
        return {"loss": clip + self.label_weight * label, "clip": clip, "label": label}


def atomic_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to a temp file next to `path`, then move it into place."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def save_half(model: torch.nn.Module, folder: Path) -> Path:
    """`save_pretrained` with float16 weights (halves the shipped size; the factory loads them into fp32)."""
    from edgevl.models.checkpoint import save_pretrained

    half = copy.deepcopy(model).half()
    return save_pretrained(half, folder, config=model.model_cfg, preprocess_cfg=model.preprocess_cfg)


def pretrain_teacher(name: str, out: str | Path, *, steps: int | None = None, seed: int = 0,
                     eval_data: EvalSet | None = None) -> dict[str, Any]:
    """Train teacher `name` of `TEACHERS` in clip mode on clean captions with the label-prompt term; write
    `out/<name>/` with its metrics and the world-task curve (evaluated every `recipe.eval_every` steps)."""
    from edgevl.models.factory import create_model, preprocess_cfg_for
    from edgevl.tokenizer import get_tokenizer
    from edgevl.train.config import TrainConfig
    from edgevl.train.trainer import seed_everything

    if name not in TEACHERS:
        raise ConfigError(f"unknown world teacher {name!r}; choose from {', '.join(TEACHERS)}")
    recipe = TEACHERS[name]
    out = Path(out)
    cfg = TrainConfig(model=recipe.model, train_data="world:train?caption=clean", mode="clip",
                      name=name, logs=str(out / "runs"), steps=steps or recipe.steps,
                      batch_size=recipe.batch_size, lr=recipe.lr, warmup=recipe.warmup, wd=recipe.wd,
                      log_every=50, eval_every=recipe.eval_every, seed=seed, device="cpu")
    seed_everything(seed)
    model = create_model(recipe.model)
    pp = preprocess_cfg_for(model)
    tokenizer = get_tokenizer(context_length=model.context_length)
    data = WorldPairs(TRAIN_SAMPLES, pixel_transform(pp.mean, pp.std), tokenizer, seed=seed, size=pp.size,
                      caption="clean", single_object=recipe.single_object, label_task=HEADLINE_TASK)
    trainer = LabelPromptTrainer(cfg, model, data, tokenizer=tokenizer, label_weight=recipe.label_weight,
                                 eval_set=eval_data or EvalSet.make(EVAL_TEST, EVAL_HELDOUT))
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start  # includes the periodic evaluations
    metrics = trainer.world_eval(retrieval=True)
    folder = save_half(model.eval(), out / name)
    record = {"name": name, "recipe": recipe.__dict__, "steps": cfg.steps, "seed": seed,
              "train_seconds": round(seconds, 1), "metrics": metrics,
              "curve": trainer.curve}
    atomic_json(folder / "pretrain.json", record)
    return record
