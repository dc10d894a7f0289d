"""Issue 21 probe, not a shipped recipe: a world teacher trained with the CLIP loss on clean captions plus a
label-prompt term (each image against the 80 `"the {color} {shape}."` prompts of the headline task, target its
dominant object), evaluated on the world tasks every 100 steps.

    python benchmarks/world_teacher_probe.py --arch mci --steps 1500 --aux 1.0 --out probe.json

`mci` is the `world-teacher-mci` config (an MCi [1, 2, 3, 1] x [40, 80, 160, 320] trunk, about 6x the student's
FLOPs at 64 px), `vit` the tiny OpenAI ViT `world-teacher-vit` (patch 8: it learned colour but not shape, 35 %
color_shape after 700 steps), `vit-convstem` the MobileCLIP-B-style conv-stem ViT `world-teacher-vit-convstem`
(98 % / 83 % held-out at step 1000 with --lr 1e-3); `--vision` overrides the vision tower. One torch thread,
batch 64, AdamW (lr 2e-3 unless --lr) with 50 warm-up steps and a cosine decay.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch
import torch.nn.functional as F

import edgevl
from edgevl.data.world.tasks import get_task
from edgevl.models.factory import preprocess_cfg_for
from edgevl.tokenizer import get_tokenizer
from edgevl.world_models.data import WorldPairs, pixel_transform
from edgevl.world_models.evaluate import EvalSet, evaluate_world

TRAIN_SAMPLES, BATCH, LR, WARMUP = 200_000, 64, 2e-3, 50


def build(arch: str, vision: str | None) -> torch.nn.Module:
    """The probed teacher, random init; `vision` is a JSON object of vision_cfg overrides."""
    overrides = {"vision_cfg": {"image_size": 64, **json.loads(vision)}} if vision else {}
    return edgevl.create_model(f"world-teacher-{arch}", **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("mci", "vit", "vit-convstem"), default="mci",
                        help="teacher config (world-teacher-ARCH)")
    parser.add_argument("--vision", default=None,
                        help='vision_cfg overrides as JSON, e.g. \'{"patch_size": 4, "layers": 4, "width": 64}\'')
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--aux", type=float, default=1.0, help="weight of the label-prompt term (0: CLIP loss only)")
    parser.add_argument("--lr", type=float, default=LR, help="peak AdamW learning rate")
    parser.add_argument("--out", default="probe.json", help="JSON file of the evaluation curve")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    model = build(args.arch, args.vision).train()
    pp = preprocess_cfg_for(model)
    tokenizer = get_tokenizer(context_length=model.context_length)
    transform = pixel_transform(pp.mean, pp.std)
    data = WorldPairs(TRAIN_SAMPLES, transform, tokenizer, seed=0, size=64, caption="clean", single_object=0.5)
    task = get_task("color_shape")
    prompts = tokenizer([task.templates[0].format(c=c) for c in task.classnames])
    eval_set = EvalSet.make(300, 160)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.98))
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        index = [random.randrange(TRAIN_SAMPLES) for _ in range(BATCH)]
        items = [data[i] for i in index]
        labels = torch.tensor([task.label(data.world_sample(i).labels) for i in index])
        image = F.normalize(model.encode_image(torch.stack([s.image for s in items])), dim=-1)
        text = F.normalize(model.encode_text(torch.stack([s.tokens for s in items])), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        logits, target = scale * image @ text.T, torch.arange(BATCH)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        if args.aux:
            classes = F.normalize(model.encode_text(prompts), dim=-1)
            loss = loss + args.aux * F.cross_entropy(scale * image @ classes.T, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            metrics = evaluate_world(model, tokenizer, transform, eval_set, retrieval=False)
            model.train()
            metrics.update(step=step, seconds=round(time.time() - start), loss=round(loss.item(), 3))
            curve.append(metrics)
            print(json.dumps(metrics), flush=True)
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(curve, f, indent=1)


if __name__ == "__main__":
    main()
