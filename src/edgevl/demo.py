"""`edgevl demo`: MobileCLIP's learning-efficiency result on the procedural world, end to end on a CPU.

For each seed:
1. Make a small *noisy* student dataset (web-style captions) of world images.
2. Reinforce it with the shipped world teachers and captioner (stored augmentations, teacher embeddings,
   synthetic captions) through `reinforce()`, as `edgevl reinforce run` does.
3. Train the same tiny MCi student twice through `train()`, as `edgevl train` does, same seed, steps, batch and
   samples: plain CLIP on the noisy captions, and multi-modal reinforced training on the reinforced shards
   (with `jobs=2`, in two processes at once).
4. Evaluate both on a grid of steps (zero-shot accuracy on each world task, held-out compositions, retrieval).
Then caption a few test images and write `report.md` (per-seed ratios, mean ± std) and the plots.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
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
    steps: int = 1800
    batch_size: int = 32
    eval_every: int = 100
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
    seeds: int = 3  # seeds seed..seed+seeds-1, each with its own student data, reinforcement and two students
    early_every: int = 5  # the evaluation grid is this fine over the first `early_steps` (where the crossing is)
    early_steps: int = 150

    def eval_steps(self) -> list[int]:
        """The steps after which both students are evaluated (step 0 too, before training)."""
        fine = range(self.early_every, min(self.early_steps, self.steps) + 1, self.early_every)
        coarse = range(self.eval_every, self.steps + 1, self.eval_every)
        return sorted({*fine, *coarse, self.steps})


FULL = DemoSettings()
QUICK = DemoSettings(steps=400, eval_every=50, early_every=10, n_examples=4, seeds=1)
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
                           seed: int, progress: bool, *, name: str = "reinforced",
                           teachers: Sequence[str] | None = None) -> str:
    """Reinforce the student data with the world teachers (all shipped ones unless `teachers` names some) and
    captioner (`edgevl reinforce run`) into `out/data/<name>`, with the stored augmentations' count, crop scale
    and RandAugment ops of `settings`; returns the reader spec."""
    from edgevl.reinforce.config import ReinforceConfig
    from edgevl.reinforce.generate import reinforce, shard_name
    from edgevl.world_models import TEACHER_NAMES

    folder = out / "data" / name
    reinforce(ReinforceConfig(data=train_tar, out=str(folder),
                              teachers=tuple(str(models[n]) for n in teachers or TEACHER_NAMES),
                              captioner=str(models["captioner"]), num_augs=settings.num_augs,
                              num_syn_captions=settings.num_syn_captions, dtype="fp16", seed=seed, batch_size=64,
                              shard_size=settings.n_train, aug_scale=settings.aug_scale, aug_ops=settings.aug_ops,
                              device="cpu", progress=progress))
    return f"reinforced:{folder / shard_name(0)}"


def train_student(mode: str, data_spec: str, out: Path, settings: DemoSettings, seed: int,
                  eval_set: EvalSet, *, name: str | None = None,
                  **overrides: Any) -> tuple[Any, list[dict[str, float]]]:
    """Train the student in `mode` ('clip' or 'reinforced') with `edgevl train`'s `train()` (`overrides` are more
    `TrainConfig` fields, e.g. `real_weight`), evaluated on the world tasks at step 0 and at
    `settings.eval_steps()`; returns the model and its accuracy curve."""
    from edgevl.train.config import TrainConfig
    from edgevl.train.launch import train

    name = name or ("plain" if mode == "clip" else "reinforced")
    cfg = TrainConfig(model=STUDENT, train_data=data_spec, mode=mode, name=name, logs=str(out / "runs"),
                      steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr, warmup=settings.warmup,
                      wd=0.1, eval_every=1, distill_lambda=settings.distill_lambda,
                      log_every=10, seed=seed, device="cpu", **overrides)
    made: list[CurveTrainer] = []

    def curve_trainer(*args: Any, **kwargs: Any) -> CurveTrainer:
        """The loop `train()` runs: the generic one, scored on the world tasks (first at step 0)."""
        made.append(CurveTrainer(*args, eval_set=eval_set, eval_steps=settings.eval_steps(), **kwargs))
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


def steps_ratio(curves: dict[str, list[dict[str, float]]], steps: int) -> dict[str, Any]:
    """The headline of one seed: the plain student's final accuracy, the first evaluated step at which the
    reinforced one reaches it, the step ratio and the ratio of the final accuracies."""
    target, initial = curves["plain"][-1][HEADLINE_TASK], curves["plain"][0][HEADLINE_TASK]
    reached = steps_to_reach([p for p in curves["reinforced"] if p["step"] > 0], target)
    improved = target > initial  # otherwise "steps to reach the plain accuracy" is meaningless
    final = curves["reinforced"][-1][HEADLINE_TASK]
    return {"task": HEADLINE_TASK, "initial": initial, "plain_final": target, "plain_improved": improved,
            "reinforced_final": final, "plain_steps": steps, "reinforced_steps_to_plain_final": reached,
            "fewer_steps": steps / reached if reached and improved else None,
            "final_ratio": final / target if target > 0 else None}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of every final metric of both runs, and of the headline ratios with their minimum
    (a seed whose reinforced student never reached the plain final counts as None: no mean, no minimum)."""
    runs = {run: {k: mean_std([r["final"][run][k] for r in per_seed]) for k in per_seed[0]["final"][run]
                  if k != "step"} for run in RUNS}
    heads = [r["headline"] for r in per_seed]
    ratios = {k: [h[k] for h in heads] for k in ("fewer_steps", "final_ratio")}
    return {"final": runs,
            **{k: {"per_seed": v, **(mean_std(v) if None not in v else {})} for k, v in ratios.items()},
            "min_fewer_steps": None if None in ratios["fewer_steps"] else min(ratios["fewer_steps"]),
            "min_final_ratio": None if None in ratios["final_ratio"] else min(ratios["final_ratio"])}


def _train_logged(run: str, mode: str, spec: str, out: Path, settings: DemoSettings, seed: int,
                  eval_set: EvalSet) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """`train_student` in a worker process with one torch thread, its progress lines going to
    `out/runs/<run>.log`; returns the student's weights and curve."""
    import contextlib

    import torch

    torch.set_num_threads(1)
    log = out / "runs" / f"{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stderr(f):
        model, curve = train_student(mode, spec, out, settings, seed, eval_set, name=run)
    return {k: v.contiguous() for k, v in model.state_dict().items()}, curve


def train_in_processes(runs: dict[str, tuple[str, str]], out: Path, settings: DemoSettings, seed: int,
                       eval_set: EvalSet) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
    """Train the students of `runs` (run -> (mode, data spec)) at once, one spawned process and one thread each:
    the same results as one after the other (each run is seeded on its own), in about half the time on 2 cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from edgevl.models.factory import create_model

    with ProcessPoolExecutor(len(runs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {run: pool.submit(_train_logged, run, mode, spec, out, settings, seed, eval_set)
                   for run, (mode, spec) in runs.items()}
        results = {run: f.result() for run, f in futures.items()}
    students = {}
    for run, (weights, _) in results.items():
        students[run] = create_model(STUDENT).eval()
        students[run].load_state_dict(weights)
    return students, {run: curve for run, (_, curve) in results.items()}


def run_seed(out: Path, settings: DemoSettings, seed: int, paths: dict[str, Path], progress: bool,
             jobs: int = 1) -> tuple[dict[str, Any], dict[str, Any], EvalSet]:
    """One seed of the demo in `out`: data, reinforcement, both students (in `jobs` > 1 processes at once);
    returns its record, the students and the evaluation set."""
    world_seed = seed + 1  # the shipped teachers saw world seed 0: the student data and test sets are fresh
    timings: dict[str, float] = {}
    t = time.perf_counter()
    train_tar = make_student_data(out, settings, world_seed)
    eval_set = EvalSet.make(settings.n_test, settings.n_heldout, seed=world_seed)
    t = _stage(timings, f"seed {seed}: make data", t, progress)
    dr_spec = reinforce_student_data(train_tar, out, paths, settings, seed, progress)
    t = _stage(timings, f"seed {seed}: reinforce", t, progress)
    runs = {"plain": ("clip", train_tar), "reinforced": ("reinforced", dr_spec)}
    students, curves = {}, {}
    if jobs > 1:
        students, curves = train_in_processes(runs, out, settings, seed, eval_set)
        t = _stage(timings, f"seed {seed}: train both students ({jobs} processes)", t, progress)
    else:
        for run, (mode, spec) in runs.items():
            students[run], curves[run] = train_student(mode, spec, out, settings, seed, eval_set)
            t = _stage(timings, f"seed {seed}: train {run}", t, progress)
    record = {"seed": seed, "world_seed": world_seed, "final": {run: curves[run][-1] for run in RUNS},
              "curves": curves, "headline": steps_ratio(curves, settings.steps), "timings_s": timings}
    return record, students, eval_set


def run_demo(out: str | Path, *, quick: bool = False, steps: int | None = None, seed: int = 0,
             seeds: int | None = None, models: str | Path | None = None, settings: DemoSettings | None = None,
             jobs: int = 1, progress: bool = True) -> dict[str, Any]:
    """Run the whole demo into `out` for seeds `seed`, ..., `seed + seeds - 1` (default: the mode's count; each
    seed's data and runs go to `out/seed-<s>/`; `jobs=2` trains a seed's two students at once) and return the
    summary written to `out/metrics.json`."""
    from edgevl.demo_report import write_report

    settings = settings or (QUICK if quick else FULL)
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {steps}")
        settings = replace(settings, steps=steps, eval_every=max(1, min(settings.eval_every, steps)))
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        settings = replace(settings, seeds=seeds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = resolve_models(models)
    start = time.perf_counter()
    per_seed, first = [], None
    for s in range(seed, seed + settings.seeds):
        record, students, eval_set = run_seed(out / f"seed-{s}", settings, s, paths, progress, jobs)
        per_seed.append(record)
        first = first or (students, eval_set)
    summary = {"settings": asdict(settings), "jobs": jobs, "models": {k: str(v) for k, v in paths.items()},
               "seeds": [r["seed"] for r in per_seed], "per_seed": per_seed, "aggregate": aggregate(per_seed),
               "timings_s": {"total (before the report)": round(time.perf_counter() - start, 1)}}
    write_report(out, summary, *first, paths["captioner"])
    return summary
