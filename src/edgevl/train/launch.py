"""`train(cfg)`: build the student, data, teachers and loss layout from a `TrainConfig`, then run the loop.

This is what `edgevl train` (and `torchrun ... -m edgevl train`) and `edgevl demo` call; tests drive `Trainer`
directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from edgevl.distributed import cleanup, init_distributed
from edgevl.errors import ConfigError
from edgevl.train.config import TrainConfig
from edgevl.train.losses import DistillConfig
from edgevl.train.trainer import TeacherEnsemble, Trainer, seed_everything


def _norm(pp: Any) -> tuple[int, tuple, tuple]:
    return int(pp.size), tuple(pp.mean), tuple(pp.std)


def build_teachers(cfg: TrainConfig, student_norm: tuple, device: torch.device) -> TeacherEnsemble:
    """Online teachers from `--teachers MODEL:WEIGHTS,...` and the optional `--captioner MODEL:WEIGHTS`."""
    from edgevl.models.factory import create_model, parse_model_spec, preprocess_cfg_for
    from edgevl.tokenizer import get_tokenizer

    models, tokenizers, norms = [], [], []
    for spec in cfg.teachers:
        model = create_model(*parse_model_spec(spec, "teacher", named_weights=True), device=device)
        models.append(model)
        tokenizers.append(get_tokenizer(context_length=model.context_length))
        norms.append(_norm(preprocess_cfg_for(model)))
    captioner, captioner_norm = None, None
    if cfg.captioner:
        from edgevl.models.lightcap.model import create_lightcap

        captioner = create_lightcap(*parse_model_spec(cfg.captioner, "captioner")).to(device).eval()
        c = captioner.config
        captioner_norm = (int(c.image_size), tuple(c.mean), tuple(c.std))
    return TeacherEnsemble(models, tokenizers, norms, student_norm, cfg.distill_logit_scale, captioner, captioner_norm)


def train(cfg: TrainConfig, *, aug_cfg: dict[str, Any] | None = None,
          trainer: Callable[..., Trainer] | None = None) -> dict[str, float]:
    """Build everything named in `cfg` and train; returns the last logged metrics.

    `aug_cfg` overrides `AugmentConfig` fields of the training augmentation (clip and online-distill modes), as in
    `create_model_and_transforms`. `trainer` builds the loop from `Trainer`'s arguments instead of `Trainer`, e.g. a
    subclass that evaluates its own way every `eval_every` steps (then no `val_data` is needed).
    """
    from edgevl.data.readers import open_dataset
    from edgevl.data.transforms import normalize, to_tensor
    from edgevl.models.factory import create_model_and_transforms
    from edgevl.tokenizer import get_tokenizer

    cfg.validate()
    info = init_distributed(cfg.device)
    try:
        seed_everything(cfg.seed)  # identical initial weights on every rank
        model, preprocess, preprocess_val = create_model_and_transforms(cfg.model, cfg.pretrained, aug_cfg=aug_cfg)
        seed_everything(cfg.seed + info.rank)
        pp = preprocess_val.cfg
        tokenizer = get_tokenizer(context_length=model.context_length)
        skips = cfg.run_dir / "skips"
        common = {"tokenizer": tokenizer, "skip_log_dir": skips, "seed": cfg.seed, "strict": cfg.strict}
        distill, teachers = None, None
        if cfg.mode == "reinforced":
            from edgevl.train.manifest import check_reinforced_data

            manifest_teachers, scales = check_reinforced_data(cfg.train_data, cfg.distill_logit_scale)
            distill = DistillConfig(tuple(t.embed_dim for t in manifest_teachers), scales, cfg.distill_lambda,
                                    cfg.real_weight, cfg.syn_weight)

            def replayed(image: Any) -> torch.Tensor:
                return normalize(to_tensor(image), pp.mean, pp.std)

            train_data = open_dataset(cfg.train_data, transform=replayed, size=pp.size,
                                      interpolation=pp.interpolation, caption="random", **common)
        else:
            train_data = open_dataset(cfg.train_data, transform=preprocess, caption="random", **common)
            if cfg.mode == "online-distill":
                teachers = build_teachers(cfg, (tuple(pp.mean), tuple(pp.std)), info.device)
                distill = DistillConfig(teachers.dims, teachers.scales, cfg.distill_lambda, cfg.real_weight,
                                        cfg.syn_weight)
        val_data = None
        if cfg.val_data:
            val_data = open_dataset(cfg.val_data, transform=preprocess_val, caption="first",
                                    skip_log_dir=skips, seed=cfg.seed)
        if cfg.eval_every and val_data is None and trainer is None:
            raise ConfigError("--eval-every needs --val-data")
        loop = (trainer or Trainer)(cfg, model, train_data, tokenizer=tokenizer, val_data=val_data, distill=distill,
                                    teachers=teachers, info=info)
        return loop.fit()
    finally:
        cleanup()
