"""MobileCLIP's reinforced-training ablations on the procedural world (issue 21, item 6), 3 seeds each.

    python benchmarks/demo_ablations.py --out ablations --jobs 2      # then docs/demo.md quotes ablations/table.md

Every row trains the demo's student (`edgevl demo`'s full settings: data size, batch, optimiser, but 600 steps
instead of 1,800 to fit 3 seeds x 11 runs on 2 cores) on the same noisy images of a seed, changing one thing at a
time as in the paper's cumulative table
(`../shared/spec/reinforced-training.md` section 9), then the caption-batch and stored-augmentation sweeps.
"No strong augmentation" stores random-resized crops at the plain student's scale (0.9-1) instead of 0.35-1;
"one teacher" is the ensemble's first member (`teacher-mci`). Per seed the student data is reinforced once per
variant (teachers x augmentation strength x number of stored augmentations), so rows share their shards.

The paper's columns are ImageNet-val top-1 and Flickr30k mean R@1; ours are the 80-way `color_shape` zero-shot
top-1 and the mean of image->text and text->image R@1 against the test images' clean captions. Each (seed, row)
result is written as it finishes, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgevl.demo import (
    FULL,
    DemoSettings,
    make_student_data,
    mean_std,
    reinforce_student_data,
    resolve_models,
    train_student,
)
from edgevl.io import atomic_write_text
from edgevl.world_models.evaluate import EvalSet

WEAK_SCALE = (0.9, 1.0)  # the plain student's crop scale: "no strong augmentation"


@dataclass(frozen=True)
class Variant:
    """One reinforced dataset per seed: which teachers, crop scale and number of stored augmentations."""

    teachers: tuple[str, ...] = ("teacher-mci", "teacher-vit")
    aug_scale: tuple[float, float] = FULL.aug_scale
    num_augs: int = FULL.num_augs


@dataclass(frozen=True)
class Row:
    """One ablation row: the reinforced variant it reads (None: the plain noisy data) and its loss settings."""

    group: str
    name: str
    variant: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: tuple[float, float] | None = None  # (IN-val, Flickr30k mean R@1) of the paper's row, when it has one


VARIANTS = {
    "one-weak": Variant(teachers=("teacher-mci",), aug_scale=WEAK_SCALE),
    "one-strong": Variant(teachers=("teacher-mci",)),
    "ens": Variant(),
    "ens-1": Variant(num_augs=1),
    "ens-5": Variant(num_augs=5),
    "ens-10": Variant(num_augs=10),
}
ROWS = (
    Row("cumulative", "standard CLIP, no reinforcement (λ = 0)", None, paper=(44.5, 41.8)),
    Row("cumulative", "+ synthetic captions (λ = 0)", "one-weak", {"distill_lambda": 0.0}, paper=(51.9, 69.3)),
    Row("cumulative", "distillation only (λ = 1), one teacher", "one-weak", paper=(54.5, 66.1)),
    Row("cumulative", "+ strong image augmentation", "one-strong", paper=(59.3, 70.5)),
    Row("cumulative", "+ teacher ensemble", "ens", paper=(61.7, 72.0)),
    Row("cumulative", "λ = 0.7", "ens", {"distill_lambda": 0.7}, paper=(60.7, 74.2)),
    Row("caption batches (λ = 1)", "B_real only", "ens", {"syn_weight": 0.0}, paper=(56.4, 57.0)),
    Row("caption batches (λ = 1)", "B_syn only", "ens", {"real_weight": 0.0}, paper=(49.8, 72.2)),
    Row("caption batches (λ = 1)", "both, losses summed", "ens", paper=(61.7, 72.0)),
    Row("stored augmentations", "1 augmentation", "ens-1"),
    Row("stored augmentations", "5 augmentations", "ens-5"),
    Row("stored augmentations", "10 augmentations", "ens-10"),
)


def seed_data(out: Path, seed: int, settings: DemoSettings, models: str | None) -> dict[str, str]:
    """Write seed `seed`'s noisy student data and every reinforced variant (skipping finished ones); returns
    the reader spec of each (`plain` for the noisy shard)."""
    from edgevl.reinforce.generate import shard_name

    folder = out / f"seed-{seed}"
    paths = resolve_models(models)
    train_tar = folder / "data" / "train" / "00000.tar"
    specs = {"plain": str(train_tar)}
    if not train_tar.is_file():
        make_student_data(folder, settings, seed + 1)
    for name, v in VARIANTS.items():
        done = folder / "data" / name / shard_name(0)
        if done.is_file():
            specs[name] = f"reinforced:{done}"
            continue
        variant = replace(settings, aug_scale=v.aug_scale, num_augs=v.num_augs)
        specs[name] = reinforce_student_data(str(train_tar), folder, paths, variant, seed, False, name=name,
                                             teachers=v.teachers)
    return specs


def same_run(row: Row) -> int:
    """Index of the first row that trains exactly the same student as `row` (rows share its result)."""
    return next(i for i, r in enumerate(ROWS) if (r.variant, r.overrides) == (row.variant, row.overrides))


def run_row(out: Path, seed: int, row_index: int, spec: str, settings: DemoSettings) -> dict[str, Any]:
    """Train one (seed, row) student, evaluated only at the end; its metrics are written to a JSON file."""
    import torch

    torch.set_num_threads(1)
    path = out / f"seed-{seed}" / "results" / f"row-{row_index:02d}.json"
    if path.is_file():
        return json.loads(path.read_text())
    row = ROWS[row_index]
    eval_set = EvalSet.make(settings.n_test, settings.n_heldout, seed=seed + 1)
    mode = "clip" if row.variant is None else "reinforced"
    overrides = dict(row.overrides)
    once = replace(settings, eval_every=settings.steps, early_every=settings.steps,
                   distill_lambda=overrides.pop("distill_lambda", settings.distill_lambda))
    _, curve = train_student(mode, spec, out / f"seed-{seed}", once, seed, eval_set, name=f"row-{row_index:02d}",
                             **overrides)
    final = curve[-1]
    result = {"seed": seed, "row": row_index, "name": row.name, "color_shape": final["color_shape"],
              "heldout": final["color_shape@heldout"], "mean_R@1": (final["i2t_R@1"] + final["t2i_R@1"]) / 2,
              "final": final}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return result


def _prepare(args: tuple[Path, int, DemoSettings, str | None]) -> dict[str, str]:
    import torch

    torch.set_num_threads(1)
    return seed_data(*args)


def _train(args: tuple[Path, int, int, str, DemoSettings]) -> dict[str, Any]:
    return run_row(*args)


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table: per row mean ± std over seeds, our delta to the previous cumulative row beside the
    paper's."""
    lines = ["| group | setting | color_shape (%) | held-out (%) | mean R@1 (%) | Δ ours (cs / R@1) | "
             "paper IN / Flickr | Δ paper |", "|---|---|---|---|---|---|---|---|"]
    previous: tuple[float, float, tuple[float, float] | None] | None = None
    for i, row in enumerate(ROWS):
        mine = [r for r in results if r["row"] == i]
        if not mine:
            continue
        stats = {k: mean_std([100 * r[k] for r in mine]) for k in ("color_shape", "heldout", "mean_R@1")}
        cs, r1 = stats["color_shape"]["mean"], stats["mean_R@1"]["mean"]
        delta, paper_delta = "", ""
        if row.group == "cumulative" and previous is not None:
            delta = f"{cs - previous[0]:+.1f} / {r1 - previous[1]:+.1f}"
            if row.paper and previous[2]:
                paper_delta = f"{row.paper[0] - previous[2][0]:+.1f} / {row.paper[1] - previous[2][1]:+.1f}"
        if row.group == "cumulative":
            previous = (cs, r1, row.paper)
        paper = f"{row.paper[0]} / {row.paper[1]}" if row.paper else ""
        cells = " | ".join(f"{v['mean']:.1f} ± {v['std']:.1f}" for v in stats.values())
        lines.append(f"| {row.group} | {row.name} | {cells} | {delta} | {paper} | {paper_delta} |")
    n = len({r["seed"] for r in results})
    return "\n".join(lines) + f"\n\nmean ± std over {n} seed(s).\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="ablations", help="work folder (data, runs, results/, table.md)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run")
    parser.add_argument("--jobs", type=int, default=2, help="processes in parallel, one torch thread each")
    parser.add_argument("--steps", type=int, default=600, help="training steps of every student")
    parser.add_argument("--models", default=None, help="folder of world models (default: the shipped ones)")
    args = parser.parse_args()
    out = Path(args.out)
    settings = replace(FULL, steps=args.steps)
    with ProcessPoolExecutor(args.jobs) as pool:
        specs = dict(zip(args.seeds, pool.map(_prepare, [(out, s, settings, args.models) for s in args.seeds])))
        tasks = [(out, s, i, specs[s][row.variant or "plain"], settings) for s in args.seeds
                 for i, row in enumerate(ROWS) if same_run(row) == i]
        trained = {(r["seed"], r["row"]): r for r in pool.map(_train, tasks)}
    results = [{**trained[s, same_run(row)], "row": i, "name": row.name} for s in args.seeds
               for i, row in enumerate(ROWS)]
    text = table(results)
    atomic_write_text(out / "table.md", text)
    print(text)


if __name__ == "__main__":
    main()
