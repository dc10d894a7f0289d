"""The demo's output folder: `metrics.json`, `report.md`, `accuracy_vs_steps.png` and `examples.png`.

Every file is written to a temporary name in the output folder and then renamed into place.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from edgevl.data.world import HEADLINE_TASK, tasks
from edgevl.io import atomic_write_bytes
from edgevl.world_models.evaluate import (
    HELDOUT_KEY,
    EvalSet,
    evaluate_world_captioner,
    image_features,
    zero_shot_predictions,
)

RUN_LABELS = {"plain": "plain CLIP (noisy captions)", "reinforced": "reinforced (teachers + synthetic captions)"}
RETRIEVAL_KEYS = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5")
# the captioner's scores in the report: key, row name, and whether it is a share (shown in %)
CAPTIONER_ROWS = (("CIDEr", "CIDEr-D", False), ("Bleu_4", "BLEU-4", False),
                  ("color_acc", "colour of the dominant object right (%)", True),
                  ("shape_acc", "shape of the dominant object right (%)", True),
                  ("color_shape_acc", "colour and shape both right (%)", True),
                  ("count_stated", "captions stating an object count (%)", True),
                  ("count_acc", "... of which the right count (%)", True))


def _save_figure(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Headline and held-out accuracy vs steps of both students, one line per seed, with each seed's plain
    final level (dashed) and the step where the reinforced student reaches it (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"plain": "tab:blue", "reinforced": "tab:orange"}
    for ax, key in zip(axes, (HEADLINE_TASK, HELDOUT_KEY)):
        for i, record in enumerate(summary["per_seed"]):
            for run, style in (("plain", "o-"), ("reinforced", "s-")):
                curve = record["curves"][run]
                ax.plot([p["step"] for p in curve], [100 * p[key] for p in curve], style, color=colors[run], ms=2,
                        lw=1, alpha=0.8, label=RUN_LABELS[run] if i == 0 else None)
        ax.set_title(f"{key} zero-shot top-1 ({len(summary['per_seed'])} seeds)")
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for i, record in enumerate(summary["per_seed"]):
        h = record["headline"]
        axes[0].axhline(100 * h["plain_final"], color="gray", ls="--", lw=0.8, label="plain final" if i == 0 else None)
        if h["reinforced_steps_to_plain_final"]:
            axes[0].axvline(h["reinforced_steps_to_plain_final"], color="gray", ls=":", lw=0.8)
    axes[0].legend(fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)


def example_rows(students: dict[str, Any], eval_set: EvalSet, captions: list[str], n: int) -> list[dict[str, Any]]:
    """Per test image: its generated caption (`captions`, in test order) and whether it names the dominant
    object's colour and shape, the first reference caption, the true label and each student's top-3."""
    from edgevl.eval.captioning import attribute_accuracy
    from edgevl.tokenizer import get_tokenizer
    from edgevl.world_models.data import pixel_transform

    picks = eval_set.test[:n]
    task = tasks()[HEADLINE_TASK]
    rows = [{"id": s.id, "caption": c, "reference": s.captions[0], "label": task.classnames[task.label(s.labels)],
             "caption_right": attribute_accuracy([c], [s.labels])["color_shape_acc"] == 1.0}
            for s, c in zip(picks, captions)]
    for run, model in students.items():
        pp = model.preprocess_cfg
        tokenizer = get_tokenizer(context_length=model.context_length)
        feats = image_features(model.eval(), [s.image for s in picks], pixel_transform(pp["mean"], pp["std"]))
        scale = float(model.logit_scale.detach().exp())  # the student's own learned scale: cosines -> logits
        top = (scale * zero_shot_predictions(model, tokenizer, feats, HEADLINE_TASK)).softmax(-1).topk(3, dim=1)
        for row, idx, prob in zip(rows, top.indices.tolist(), top.values.tolist()):
            row[run] = [(task.classnames[i], p) for i, p in zip(idx, prob)]
            row[f"{run}_scale"] = scale
    return rows


def plot_examples(rows: list[dict[str, Any]], eval_set: EvalSet, path: Path) -> None:
    """Test images with the captioner's caption and both students' top-3 zero-shot labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 4.6), squeeze=False)
    for ax, row, sample in zip(axes[0], rows, eval_set.test):
        ax.imshow(sample.image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        mark = "right" if row["caption_right"] else "wrong"
        lines = [f"true: {row['label']}", f"caption ({mark} colour+shape): {row['caption']}"]
        for run in RUN_LABELS:
            lines.append(f"{run}: " + ", ".join(f"{name} {p:.0%}" for name, p in row[run]))
        ax.set_xlabel("\n".join(_wrap(line, 34) for line in lines), fontsize=7, loc="left")
    _save_figure(fig, path)
    plt.close(fig)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _randaugment(ops: int) -> str:
    return f" + RandAugment {ops} ops, magnitude 9" if ops else ", no RandAugment"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _pm(stats: dict[str, float], n: int = 2) -> str:
    """A share in % with its spread over seeds (just the value for one seed)."""
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}" if n > 1 else f"{100 * stats['mean']:.1f}"


def _ratio(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}x"


def report_markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The text of `report.md`."""
    s, agg, seeds = summary["settings"], summary["aggregate"], summary["per_seed"]
    keys = [*tasks(), HELDOUT_KEY, *RETRIEVAL_KEYS]
    n = len(seeds)
    steps = [p["step"] for p in seeds[0]["curves"]["plain"]]

    def mean_at(run: str, key: str, i: int) -> str:
        return _pct(sum(r["curves"][run][i][key] for r in seeds) / n)

    lines = [
        "# edgevl demo: reinforced vs plain CLIP training on the procedural world",
        "",
        f"**Headline (zero-shot top-1 on the test split):** {headline_text(summary)}.",
        "",
        "## Setup",
        "",
        f"- Student: `world-student-mci` (tiny MCi image tower + 2-layer text tower), the same initial weights in "
        f"both runs of a seed; seeds {', '.join(str(r['seed']) for r in seeds)}.",
        f"- Data per seed: {s['n_train']} world `train` images (world seed = seed + 1) with *noisy* web-style "
        f"captions (noise {s['noise']}); both runs of a seed read exactly these samples.",
        f"- Both runs: {s['steps']} steps, batch {s['batch_size']}, AdamW lr {s['lr']} (warm-up {s['warmup']}, "
        f"cosine), wd 0.1, evaluated every {s['early_every']} steps up to step {s['early_steps']}, then every "
        f"{s['eval_every']}, on {s['n_test']} `test` and {s['n_heldout']} `heldout` images.",
        "- **plain**: CLIP loss on (image, noisy caption), standard augmentation (random-resized crop, scale "
        "0.9-1).",
        f"- **reinforced**: λ = {s['distill_lambda']} multi-modal reinforced loss on the reinforced shards of the "
        f"same images: {s['num_augs']} stored augmentations per image (random-resized crop scale "
        f"{s['aug_scale'][0]}-{s['aug_scale'][1]}{_randaugment(s.get('aug_ops', 0))}), embeddings of the teacher "
        f"ensemble (`teacher-mci` + `teacher-vit`, KD logit scale = each teacher's own learned scale), and "
        f"{s['num_syn_captions']} synthetic captions per image from the world LightCap captioner (top-p 0.9).",
        "- Held-out: `color_shape@heldout` is the 80-way task on the 8 colour+shape pairs never seen in training.",
        "- Retrieval: each test image against its 5 clean captions (`i2t`: image finds one of its captions; "
        "`t2i`: caption finds its image).",
        "",
        "## Per seed",
        "",
        "| seed | plain final | reinforced final | reinforced reaches plain final at step | fewer steps | final ratio "
        "|",
        "|---|---|---|---|---|---|",
        *(f"| {r['seed']} | {_pct(r['headline']['plain_final'])} | {_pct(r['headline']['reinforced_final'])} | "
          f"{r['headline']['reinforced_steps_to_plain_final'] or 'never'} | {_ratio(r['headline']['fewer_steps'])} | "
          f"{_ratio(r['headline']['final_ratio'])} |" for r in seeds),
        "",
        f"## Final metrics (%, mean ± std over {n} seeds)",
        "",
        "| metric | plain | reinforced |",
        "|---|---|---|",
        *(f"| {k} | {_pm(agg['final']['plain'][k])} | {_pm(agg['final']['reinforced'][k])} |" for k in keys),
        "",
        "## Accuracy vs steps",
        "",
        "![accuracy vs steps](accuracy_vs_steps.png)",
        "",
        f"Mean over the {n} seeds (%):",
        "",
        "| step | plain color_shape | reinforced color_shape | plain heldout | reinforced heldout |",
        "|---|---|---|---|---|",
        *(f"| {step} | {mean_at('plain', HEADLINE_TASK, i)} | {mean_at('reinforced', HEADLINE_TASK, i)} | "
          f"{mean_at('plain', HELDOUT_KEY, i)} | {mean_at('reinforced', HELDOUT_KEY, i)} |"
          for i, step in enumerate(steps)),
        "",
        "## World captioner",
        "",
        f"The shipped world captioner (greedy) on the {s['n_test']} `test` images of seed {seeds[0]['seed']}, scored "
        "against their 5 clean captions (CIDEr-D, BLEU-4) and by *caption attribute accuracy*: the colour, shape "
        "and count the caption states (its first-mentioned object is the one it describes), compared with the "
        "image's labels.",
        "",
        "| metric | value |",
        "|---|---|",
        *_captioner_lines(summary.get("captioner", {})),
        "",
        "## Examples",
        "",
        "![examples](examples.png)",
        "",
        f"Seed {seeds[0]['seed']}'s students. Label probabilities are the softmax of each student's cosine "
        "similarities times its own learned logit scale "
        + (f"(plain {rows[0]['plain_scale']:.1f}, reinforced {rows[0]['reinforced_scale']:.1f})." if rows else "."),
        "",
        "| image | true | generated caption | caption's colour+shape | plain top-3 | reinforced top-3 |",
        "|---|---|---|---|---|---|",
        *(f"| {r['id']} | {r['label']} | {r['caption']} | {'right' if r['caption_right'] else 'wrong'} | "
          + ", ".join(f"{n} {p:.0%}" for n, p in r["plain"]) + " | "
          + ", ".join(f"{n} {p:.0%}" for n, p in r["reinforced"]) + " |"
          for r in rows),
        "",
        "## Timings (s, this machine)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {k} | {v} |" for r in seeds for k, v in r["timings_s"].items()),
        *(f"| {k} | {v} |" for k, v in summary.get("timings_s", {}).items()),
        "",
    ]
    return "\n".join(lines)


def _captioner_lines(scores: dict[str, float]) -> list[str]:
    """Table rows of the captioner's scores: CIDEr-D and BLEU-4 as numbers, the accuracies in %."""
    return [f"| {name} | {_pct(scores[key]) if share else f'{scores[key]:.3f}'} |"
            for key, name, share in CAPTIONER_ROWS if key in scores]


def headline_text(summary: dict[str, Any]) -> str:
    """One line: how many times fewer steps the reinforced student needs to reach the plain one's final headline
    accuracy, and how much higher it ends, over the seeds."""
    agg, seeds = summary["aggregate"], summary["per_seed"]
    task, steps, n = seeds[0]["headline"]["task"], seeds[0]["headline"]["plain_steps"], len(seeds)
    final = f"final {_pm(agg['final']['reinforced'][task], n)} % vs {_pm(agg['final']['plain'][task], n)} %"
    stuck = [r["seed"] for r in seeds if not r["headline"]["plain_improved"]]
    if stuck:
        return (f"the plain student did not improve on its initial {task} accuracy in {steps} steps for seed(s) "
                f"{', '.join(map(str, stuck))}, so there is no step ratio; {final}")
    fewer = agg["fewer_steps"]["per_seed"]
    each = ", ".join(_ratio(v) for v in fewer)
    if None in fewer:
        return (f"the reinforced student did not reach the plain student's final {task} accuracy within {steps} "
                f"steps in every seed (per seed: {each}); {final}")
    ratio = agg["final_ratio"]
    if n == 1:
        return (f"the reinforced student reaches the plain student's final {task} accuracy in {fewer[0]:.1f}x "
                f"fewer steps ({steps} steps, seed {seeds[0]['seed']}) and ends {ratio['mean']:.1f}x higher: {final}")
    return (f"the reinforced student reaches the plain student's final {task} accuracy in "
            f"{agg['fewer_steps']['mean']:.1f} ± {agg['fewer_steps']['std']:.1f}x fewer steps (mean ± std over {n} "
            f"seeds, {steps} steps each; per seed {each}) and ends {ratio['mean']:.1f} ± {ratio['std']:.1f}x "
            f"higher: {final}")


def write_report(out: Path, summary: dict[str, Any], students: dict[str, Any], eval_set: EvalSet,
                 captioner_dir: Path) -> None:
    """Caption the test images (their scores become `summary['captioner']`) and write `metrics.json`,
    `report.md`, `accuracy_vs_steps.png` and `examples.png` into `out`."""
    from edgevl.fast import optimize_captioner
    from edgevl.models.lightcap.model import create_lightcap

    captioner = optimize_captioner(create_lightcap(captioner_dir))
    summary["captioner"], captions = evaluate_world_captioner(captioner, eval_set.test)
    rows = example_rows(students, eval_set, captions, summary["settings"]["n_examples"])
    atomic_write_bytes(out / "metrics.json", (json.dumps(summary, indent=1) + "\n").encode())
    plot_curves(summary, out / "accuracy_vs_steps.png")
    plot_examples(rows, eval_set, out / "examples.png")
    atomic_write_bytes(out / "report.md", report_markdown(summary, rows).encode())
