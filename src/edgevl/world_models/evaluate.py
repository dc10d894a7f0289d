"""World evaluation of a CLIP model (zero-shot accuracy on every world task, image-text retrieval R@K) and of a
captioner (CIDEr-D and caption attribute accuracy).

In-distribution numbers use the `test` split; `heldout` scores the headline `color_shape` task on the 8
colour+shape combinations never seen in training (against all 80 class names).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from edgevl.data.world import HEADLINE_TASK, WorldSample, samples, tasks
from edgevl.eval.retrieval import retrieval_metrics
from edgevl.eval.zeroshot import build_zero_shot_classifier
from edgevl.train.trainer import Trainer

HELDOUT_KEY = f"{HEADLINE_TASK}@heldout"


@dataclass
class EvalSet:
    """Fixed evaluation samples: the `test` split (all tasks, retrieval) and the `heldout` split."""

    test: list[WorldSample]
    heldout: list[WorldSample]

    @classmethod
    def make(cls, n_test: int, n_heldout: int, seed: int = 0, size: int = 64) -> EvalSet:
        return cls(list(samples(n_test, "test", seed, size)), list(samples(n_heldout, "heldout", seed, size)))


@torch.no_grad()
def image_features(model: nn.Module, images: Sequence[Image.Image],
                   transform: Callable[[Image.Image], torch.Tensor], batch_size: int = 256) -> torch.Tensor:
    """L2-normalized image embeddings [N, D] in eval mode."""
    out = []
    for i in range(0, len(images), batch_size):
        pixels = torch.stack([transform(im) for im in images[i:i + batch_size]])
        out.append(model.encode_image(pixels, normalize=True).float())
    return torch.cat(out)


@torch.no_grad()
def text_features(model: nn.Module, tokenizer: Callable, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """L2-normalized text embeddings [N, D] in eval mode."""
    return torch.cat([model.encode_text(tokenizer(list(texts[i:i + batch_size])), normalize=True).float()
                      for i in range(0, len(texts), batch_size)])


def zero_shot_predictions(model: nn.Module, tokenizer: Callable, feats: torch.Tensor, task_name: str) -> torch.Tensor:
    """Class scores [N, classes] of image features for one world task (templates averaged)."""
    task = tasks()[task_name]
    templates = [lambda c, t=t: t.format(c=c) for t in task.templates]  # world templates use a {c} field
    classifier = build_zero_shot_classifier(model, tokenizer, task.classnames, templates)
    return feats @ classifier


@torch.no_grad()
def evaluate_world(model: nn.Module, tokenizer: Callable, transform: Callable[[Image.Image], torch.Tensor],
                   data: EvalSet, retrieval: bool = True) -> dict[str, float]:
    """Top-1 zero-shot accuracy per task on `test`, `color_shape@heldout`, and retrieval R@1/R@5 against the
    5 clean captions per test image (`i2t_R@k`: image finds one of its captions; `t2i_R@k`: caption finds its
    image)."""
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    feats = image_features(model, [s.image for s in data.test], transform)
    for name, task in tasks().items():
        target = torch.tensor([task.label(s.labels) for s in data.test])
        pred = zero_shot_predictions(model, tokenizer, feats, name).argmax(dim=1)
        metrics[name] = (pred == target).float().mean().item()
    if data.heldout:
        task = tasks()[HEADLINE_TASK]
        held = image_features(model, [s.image for s in data.heldout], transform)
        target = torch.tensor([task.label(s.labels) for s in data.heldout])
        pred = zero_shot_predictions(model, tokenizer, held, HEADLINE_TASK).argmax(dim=1)
        metrics[HELDOUT_KEY] = (pred == target).float().mean().item()
    if retrieval:
        texts = [c for s in data.test for c in s.captions]
        owners = [i for i, s in enumerate(data.test) for _ in s.captions]
        r = retrieval_metrics(feats, text_features(model, tokenizer, texts), owners, ks=(1, 5))
        for k in (1, 5):
            metrics[f"i2t_R@{k}"] = r[f"text_retrieval_recall@{k}"]
            metrics[f"t2i_R@{k}"] = r[f"image_retrieval_recall@{k}"]
    model.train(was_training)
    return metrics


@torch.no_grad()
def caption_world(captioner: Any, items: Sequence[WorldSample], beam: int = 1, batch_size: int = 64) -> list[str]:
    """The captioner's caption of each world sample (greedy with beam 1, up to its longest caption)."""
    from edgevl.captioning import DecodeOptions, caption_tensor
    from edgevl.world_models.data import pixel_transform

    transform = pixel_transform(captioner.config.mean, captioner.config.std)
    options = DecodeOptions(beam=beam, max_words=captioner.max_new_tokens)
    texts: list[str] = []
    for i in range(0, len(items), batch_size):
        texts += caption_tensor(captioner, torch.stack([transform(s.image) for s in items[i:i + batch_size]]), options)
    return texts


def evaluate_world_captioner(captioner: Any, items: Sequence[WorldSample], beam: int = 1
                             ) -> tuple[dict[str, float], list[str]]:
    """CIDEr-D and BLEU-4 of the captioner's captions against each sample's 5 clean captions, and their attribute
    accuracy (`color_acc`, `shape_acc`, `color_shape_acc` of the dominant object, `count_acc`, `count_stated`);
    returns the scores and the captions."""
    from edgevl.eval.captioning import attribute_accuracy, evaluate_captions

    texts = caption_world(captioner, items, beam)
    found = evaluate_captions({s.id: s.captions for s in items}, dict(zip((s.id for s in items), texts)),
                              use_meteor=False)
    scores = {"CIDEr": found["CIDEr"], "Bleu_4": found["Bleu_4"],
              **attribute_accuracy(texts, [s.labels for s in items])}
    return scores, texts


class CurveTrainer(Trainer):
    """The generic trainer, evaluated on the world tasks of `eval_set` every `eval_every` steps, or only at those
    of them in `eval_steps` when given (its accuracy `curve`); `world_eval()` scores the model as it is now."""

    def __init__(self, *args: Any, eval_set: EvalSet, eval_steps: Sequence[int] | None = None,
                 **kwargs: Any) -> None:
        from edgevl.models.factory import preprocess_cfg_for
        from edgevl.world_models.data import pixel_transform

        super().__init__(*args, **kwargs)
        pp = preprocess_cfg_for(self.model)
        self.eval_set, self.transform = eval_set, pixel_transform(pp.mean, pp.std)
        self.curve: list[dict[str, float]] = []
        self.eval_steps = set(eval_steps) if eval_steps is not None else None

    def world_eval(self, retrieval: bool = False) -> dict[str, float]:
        """`evaluate_world` of the model on `eval_set` (retrieval R@K only when asked)."""
        return evaluate_world(self.model, self.tokenizer, self.transform, self.eval_set, retrieval=retrieval)

    def run_eval(self) -> dict[str, float]:
        if self.eval_steps is not None and self.step not in self.eval_steps:
            return {}
        metrics = self.world_eval()
        self.curve.append({"step": self.step, **metrics})
        self._log({"step": self.step, **{f"world/{k}": v for k, v in metrics.items()}})
        return {}
