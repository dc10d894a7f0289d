"""The world teachers' recipe: label-prompt term and labelled world pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgevl.data.world import HEADLINE_TASK
from edgevl.data.world.tasks import get_task
from edgevl.models.factory import create_model, preprocess_cfg_for
from edgevl.tokenizer import get_tokenizer
from edgevl.train.config import TrainConfig
from edgevl.train.losses import clip_loss
from edgevl.world_models.data import WorldPairs, pixel_transform
from edgevl.world_models.evaluate import EvalSet
from edgevl.world_models.pretrain import LabelPromptTrainer


def _pairs(model, n: int = 16, label_task: str | None = HEADLINE_TASK) -> WorldPairs:
    pp = preprocess_cfg_for(model)
    return WorldPairs(n, pixel_transform(pp.mean, pp.std), get_tokenizer(context_length=model.context_length),
                      caption="clean", single_object=0.5, label_task=label_task)


def test_world_pairs_label_is_the_headline_class_of_the_dominant_object():
    model = create_model("world-student-mci")
    data, task = _pairs(model), get_task(HEADLINE_TASK)
    for i in range(8):
        sample = data[i]
        assert sample.label == task.label(data.world_sample(i).labels)
        assert task.classnames[sample.label] in " ".join(data.world_sample(i).captions)
    assert _pairs(model, label_task=None)[0].label is None


def test_label_prompt_loss_is_clip_plus_weighted_prompt_cross_entropy(tmp_path):
    torch.manual_seed(0)
    model = create_model("world-student-mci")
    cfg = TrainConfig(model="world-student-mci", train_data="world", mode="clip", name="t", logs=str(tmp_path),
                      steps=1, batch_size=8, device="cpu", channels_last=False)
    trainer = LabelPromptTrainer(cfg, model, _pairs(model), tokenizer=get_tokenizer(context_length=32),
                                 label_weight=0.5, eval_set=EvalSet.make(4, 2))
    batch = next(trainer.stream)
    model.eval()  # the same forward as training for this model (no dropout), deterministic
    with torch.no_grad():
        parts = trainer.forward_loss(batch)
        img, txt, scale = model(batch["image"], batch["tokens"])
        classes = model.encode_text(trainer.prompts, normalize=True)
        want_label = F.cross_entropy(scale * img @ classes.T, batch["label"])
    assert trainer.prompts.shape[0] == len(get_task(HEADLINE_TASK).classnames)
    torch.testing.assert_close(parts["clip"], clip_loss(img, txt, scale))
    torch.testing.assert_close(parts["label"], want_label)
    torch.testing.assert_close(parts["loss"], parts["clip"] + 0.5 * parts["label"])
