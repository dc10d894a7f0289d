"""`edgevl demo`: MobileCLIP's learning-efficiency result on the procedural world, end to end on a CPU.

1. Make a small *noisy* student dataset (web-style captions) of world images.
2. Reinforce it with the shipped world teachers and captioner (stored augmentations, teacher embeddings,
   synthetic captions) through `reinforce()`, as `edgevl reinforce run` does.
3. Train the same tiny MCi student twice through `train()`, as `edgevl train` does, same seed, steps, batch and
   samples: plain CLIP on the noisy captions, and multi-modal reinforced training on the reinforced shards.
4. Evaluate both every k steps (zero-shot accuracy on each world task, held-out compositions, retrieval),
   caption a few test images, and write `report.md` and the plots.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgevl.data.world import HEADLINE_TASK
from edgevl.errors import ConfigError
from edgevl.world_models.evaluate import CurveTrainer, EvalSet

STUDENT = "world-student-mci"
RUNS = ("plain", "reinforced")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run; both students use the same steps, batch, LR schedule and seed."""

    n_train: int = 1024
    steps: int = 750
    batch_size: int = 64
    eval_every: int = 25
    n_test: int = 400
    n_heldout: int = 160
    num_augs: int = 3
    num_syn_captions: int = 2
    lr: float = 2e-3
    warmup: int = 20
    distill_lambda: float = 1.0
    noise: float = 0.5
    aug_scale: tuple[float, float] = (0.35, 1.0)
    aug_ops: int = 0  # RandAugment ops per stored augmentation (DataCompDR: 2; its colour ops rewrite the labels)
    n_examples: int = 6


FULL = DemoSettings()
QUICK = DemoSettings(n_train=256, steps=150, batch_size=32, eval_every=50, n_test=160, n_heldout=64, num_augs=2,
                     num_syn_captions=2, warmup=10, n_examples=4)
# the plain student's training transform: open_clip's standard one, a bicubic random-resized crop at scale 0.9-1
PLAIN_AUGMENTATION = {"scale": (0.9, 1.0), "num_ops": 0, "interpolation": "bicubic"}


def steps_to_reach(curve: list[dict[str, float]], target: float, key: str = HEADLINE_TASK) -> int | None:
    """First evaluated step whose `key` accuracy is at least `target` (None if never)."""
    return next((int(point["step"]) for point in curve if point[key] >= target), None)


def _stage(timings: dict[str, float], name: str, start: float, progress: bool) -> float:
    now = time.perf_counter()
    timings[name] = round(now - start, 1)
    if progress:
        print(f"[demo] {name}: {timings[name]:.1f} s", flush=True)
    return now


def make_student_data(out: Path, settings: DemoSettings, world_seed: int) -> str:
    """Write the noisy train split as one webdataset shard; returns its reader spec."""
    from edgevl.data.world import make

    folder = out / "data" / "train"
    make(folder, settings.n_train, split="train", seed=world_seed, fmt="wds", noise=settings.noise,
         caption="noisy", shard_size=settings.n_train)
    return str(folder / "00000.tar")


def reinforce_student_data(train_tar: str, out: Path, models: dict[str, Path], settings: DemoSettings,
                           seed: int, progress: bool) -> str:
    """Reinforce the student data with the world teachers and captioner (`edgevl reinforce run`), with the stored
    augmentations' crop scale and RandAugment ops of `settings`; returns the reader spec."""
    from edgevl.reinforce.config import ReinforceConfig
    from edgevl.reinforce.generate import reinforce, shard_name
    from edgevl.world_models import TEACHER_NAMES

    folder = out / "data" / "reinforced"
    reinforce(ReinforceConfig(data=train_tar, out=str(folder), teachers=tuple(str(models[n]) for n in TEACHER_NAMES),
                              captioner=str(models["captioner"]), num_augs=settings.num_augs,
                              num_syn_captions=settings.num_syn_captions, dtype="fp16", seed=seed, batch_size=64,
                              shard_size=settings.n_train, aug_scale=settings.aug_scale, aug_ops=settings.aug_ops,
                              device="cpu", progress=progress))
    return f"reinforced:{folder / shard_name(0)}"


def train_student(mode: str, data_spec: str, out: Path, settings: DemoSettings, seed: int,
                  eval_set: EvalSet) -> tuple[Any, list[dict[str, float]]]:
    """Train the student in `mode` ('clip' or 'reinforced') with `edgevl train`'s `train()`, evaluated on the world
    tasks at step 0 and every `eval_every` steps; returns the model and its accuracy curve."""
    from edgevl.train.config import TrainConfig
    from edgevl.train.launch import train

    name = "plain" if mode == "clip" else "reinforced"
    cfg = TrainConfig(model=STUDENT, train_data=data_spec, mode=mode, name=name, logs=str(out / "runs"),
                      steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr, warmup=settings.warmup,
                      wd=0.1, eval_every=settings.eval_every, distill_lambda=settings.distill_lambda,
                      log_every=10, seed=seed, device="cpu")
    made: list[CurveTrainer] = []

    def curve_trainer(*args: Any, **kwargs: Any) -> CurveTrainer:
        """The loop `train()` runs: the generic one, scored on the world tasks (first at step 0)."""
        made.append(CurveTrainer(*args, eval_set=eval_set, **kwargs))
        made[-1].curve.append({"step": 0, **made[-1].world_eval()})
        return made[-1]

    train(cfg, aug_cfg=PLAIN_AUGMENTATION if mode == "clip" else None, trainer=curve_trainer)
    trainer = made[0]
    model = trainer.model.eval()
    final = trainer.world_eval(retrieval=True)
    return model, [*(p for p in trainer.curve if p["step"] < settings.steps), {"step": settings.steps, **final}]


def resolve_models(folder: str | Path | None) -> dict[str, Path]:
    """Folders of the teachers and captioner: `folder/<name>` when given, else the shipped ones."""
    from edgevl.world_models import NAMES, pretrained_dir

    if folder is None:
        return {name: pretrained_dir(name) for name in NAMES}
    paths = {name: Path(folder) / name for name in NAMES}
    missing = [str(p) for p in paths.values() if not (p / "model.safetensors").is_file()]
    if missing:
        raise ConfigError(f"world models not found: {', '.join(missing)} (make them with `edgevl world pretrain`)")
    return paths


def run_demo(out: str | Path, *, quick: bool = False, steps: int | None = None, seed: int = 0,
             models: str | Path | None = None, settings: DemoSettings | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run the whole demo into `out` and return the summary written to `out/metrics.json`."""
    from edgevl.demo_report import write_report

    settings = settings or (QUICK if quick else FULL)
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {steps}")
        settings = replace(settings, steps=steps, eval_every=max(1, min(settings.eval_every, steps)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = resolve_models(models)
    world_seed = seed + 1  # the shipped teachers saw world seed 0: the student data and test sets are fresh
    timings: dict[str, float] = {}
    start = t = time.perf_counter()
    train_tar = make_student_data(out, settings, world_seed)
    eval_set = EvalSet.make(settings.n_test, settings.n_heldout, seed=world_seed)
    t = _stage(timings, "make data", t, progress)
    dr_spec = reinforce_student_data(train_tar, out, paths, settings, seed, progress)
    t = _stage(timings, "reinforce", t, progress)
    students, curves = {}, {}
    for run, mode, spec in (("plain", "clip", train_tar), ("reinforced", "reinforced", dr_spec)):
        students[run], curves[run] = train_student(mode, spec, out, settings, seed, eval_set)
        t = _stage(timings, f"train {run}", t, progress)
    final = {run: curves[run][-1] for run in RUNS}
    target, initial = final["plain"][HEADLINE_TASK], curves["plain"][0][HEADLINE_TASK]
    reached = steps_to_reach([p for p in curves["reinforced"] if p["step"] > 0], target)
    improved = target > initial  # otherwise "steps to reach the plain accuracy" is meaningless
    summary = {
        "settings": asdict(settings),
        "seed": seed,
        "world_seed": world_seed,
        "models": {k: str(v) for k, v in paths.items()},
        "final": final,
        "curves": curves,
        "headline": {
            "task": HEADLINE_TASK,
            "initial": initial,
            "plain_final": target,
            "plain_improved": improved,
            "reinforced_final": final["reinforced"][HEADLINE_TASK],
            "plain_steps": settings.steps,
            "reinforced_steps_to_plain_final": reached,
            "fewer_steps": settings.steps / reached if reached and improved else None,
        },
    }
    timings["total (before the report)"] = round(time.perf_counter() - start, 1)
    summary["timings_s"] = timings
    write_report(out, summary, students, eval_set, paths["captioner"])
    return summary
