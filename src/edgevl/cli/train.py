"""`edgevl train` and `edgevl train-captioner`; their flags are the fields of `TrainConfig` and
`CaptionerTrainConfig` (`flags.py`)."""

from __future__ import annotations

import argparse

from edgevl.cli.common import add_threads_flag, subparser
from edgevl.cli.flags import add_config_flags, config_from_args


def add_train(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "train", "train or fine-tune a CLIP model (plain, reinforced or online distillation)",
        "Train a CLIP student. Single process: `edgevl train ...`; several: `torchrun --nproc_per_node N -m "
        "edgevl train ...` (gloo on CPU, nccl on GPU). See docs/training.md.",
    )
    p.defer(_add_train_flags)
    p.set_defaults(func=run_train)


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    from edgevl.train.config import TrainConfig

    add_config_flags(p, TrainConfig)


def run_train(args: argparse.Namespace) -> int:
    from edgevl.models.factory import resolve_model_name
    from edgevl.train.config import TrainConfig
    from edgevl.train.launch import train

    cfg = config_from_args(TrainConfig, args, model=resolve_model_name(args.model, args.pretrained, TrainConfig.model),
                           grad_clip_norm=args.grad_clip_norm or None)
    metrics = train(cfg)
    if metrics:
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return 0


def add_train_captioner(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "train-captioner", "train a LightCap captioner (CE, distillation, ensemble heads, SCST)",
                  "Train a LightCap captioner on cached frozen-backbone features: caption cross-entropy and the\n"
                  "concept loss, optional distillation from a larger LightCap teacher (or, from a CoCa teacher, its\n"
                  "captions of the training images), sequential ensemble-head\n"
                  "distillation and self-critical CIDEr-D optimisation. Writes OUT/model (an `edgevl caption`\n"
                  "model folder), OUT/checkpoints, OUT/metrics.jsonl and OUT/result.json. The frozen backbone\n"
                  "should be a trained image tower (--backbone); a preset's random one is warned about.")
    p.defer(_add_train_captioner_flags)
    p.set_defaults(func=run_train_captioner)


def _add_train_captioner_flags(p: argparse.ArgumentParser) -> None:
    from edgevl.train.captioner_config import CaptionerTrainConfig

    add_config_flags(p, CaptionerTrainConfig)
    add_threads_flag(p)


def run_train_captioner(args: argparse.Namespace) -> int:
    import json

    from edgevl.cli.common import set_threads
    from edgevl.train.captioner import CaptionerTrainConfig, train_captioner

    set_threads(args)
    result = train_captioner(config_from_args(CaptionerTrainConfig, args))
    print(json.dumps({"steps": result["steps"], "val": result["val"]}))
    return 0
