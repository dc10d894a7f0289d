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
    """Headline and held-out accuracy vs steps of both students, with the plain student's final level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, (HEADLINE_TASK, HELDOUT_KEY)):
        for run, style in (("plain", "o-"), ("reinforced", "s-")):
            curve = summary["curves"][run]
            ax.plot([p["step"] for p in curve], [100 * p[key] for p in curve], style, label=RUN_LABELS[run], ms=3)
        ax.set_title(f"{key} zero-shot top-1")
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    h = summary["headline"]
    axes[0].axhline(100 * h["plain_final"], color="gray", ls="--", lw=1, label="plain final")
    if h["reinforced_steps_to_plain_final"]:
        axes[0].axvline(h["reinforced_steps_to_plain_final"], color="gray", ls=":", lw=1)
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
        top = zero_shot_predictions(model, tokenizer, feats, HEADLINE_TASK).softmax(-1).topk(3, dim=1)
        for row, idx, prob in zip(rows, top.indices.tolist(), top.values.tolist()):
            row[run] = [(task.classnames[i], p) for i, p in zip(idx, prob)]
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


def report_markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The text of `report.md`."""
    s, final = summary["settings"], summary["final"]
    keys = [*tasks(), HELDOUT_KEY, *RETRIEVAL_KEYS]
    lines = [
        "# edgevl demo: reinforced vs plain CLIP training on the procedural world",
        "",
        f"**Headline (zero-shot top-1 on the test split):** {headline_text(summary)}.",
        "",
        "## Setup",
        "",
        f"- Student: `world-student-mci` (tiny MCi image tower + 2-layer text tower), same initial weights "
        f"(seed {summary['seed']}) in both runs.",
        f"- Data: {s['n_train']} world `train` images (world seed {summary['world_seed']}) with *noisy* web-style "
        f"captions (noise {s['noise']}); both runs read exactly these samples.",
        f"- Both runs: {s['steps']} steps, batch {s['batch_size']}, AdamW lr {s['lr']} (warm-up {s['warmup']}, "
        "cosine), wd 0.1, evaluated every "
        f"{s['eval_every']} steps on {s['n_test']} `test` and {s['n_heldout']} `heldout` images.",
        "- **plain**: CLIP loss on (image, noisy caption), standard augmentation (random-resized crop, scale "
        "0.9-1).",
        f"- **reinforced**: λ = {s['distill_lambda']} multi-modal reinforced loss on the reinforced shards of the "
        f"same images: {s['num_augs']} stored augmentations per image (random-resized crop scale "
        f"{s['aug_scale'][0]}-{s['aug_scale'][1]}{_randaugment(s.get('aug_ops', 0))}), embeddings of the teacher "
        f"ensemble (`teacher-mci` + `teacher-mci-wide`, KD logit scale = each teacher's own learned scale), and "
        f"{s['num_syn_captions']} synthetic captions per image from the world LightCap captioner (top-p 0.9).",
        "- Held-out: `color_shape@heldout` is the 80-way task on the 8 colour+shape pairs never seen in training.",
        "- Retrieval: each test image against its 5 clean captions (`i2t`: image finds one of its captions; "
        "`t2i`: caption finds its image).",
        "",
        "## Final metrics (%)",
        "",
        "| metric | plain | reinforced |",
        "|---|---|---|",
        *(f"| {k} | {_pct(final['plain'][k])} | {_pct(final['reinforced'][k])} |" for k in keys),
        "",
        "## Accuracy vs steps",
        "",
        "![accuracy vs steps](accuracy_vs_steps.png)",
        "",
        "| step | plain color_shape | reinforced color_shape | plain heldout | reinforced heldout |",
        "|---|---|---|---|---|",
        *(f"| {p['step']} | {_pct(p[HEADLINE_TASK])} | {_pct(r[HEADLINE_TASK])} | {_pct(p[HELDOUT_KEY])} | "
          f"{_pct(r[HELDOUT_KEY])} |" for p, r in zip(summary["curves"]["plain"], summary["curves"]["reinforced"])),
        "",
        "## World captioner",
        "",
        f"The shipped world captioner (greedy) on the {s['n_test']} `test` images, scored against their 5 clean "
        "captions (CIDEr-D, BLEU-4) and by *caption attribute accuracy*: the colour, shape and count the caption "
        "states (its first-mentioned object is the one it describes), compared with the image's labels.",
        "",
        "| metric | value |",
        "|---|---|",
        *_captioner_lines(summary.get("captioner", {})),
        "",
        "## Examples",
        "",
        "![examples](examples.png)",
        "",
        "| image | true | generated caption | caption's colour+shape | plain top-3 | reinforced top-3 |",
        "|---|---|---|---|---|---|",
        *(f"| {r['id']} | {r['label']} | {r['caption']} | {'right' if r['caption_right'] else 'wrong'} | "
          + ", ".join(n for n, _ in r["plain"]) + " | " + ", ".join(n for n, _ in r["reinforced"]) + " |"
          for r in rows),
        "",
        "## Timings (s, this machine)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in summary.get("timings_s", {}).items()),
        "",
    ]
    return "\n".join(lines)


def _captioner_lines(scores: dict[str, float]) -> list[str]:
    """Table rows of the captioner's scores: CIDEr-D and BLEU-4 as numbers, the accuracies in %."""
    return [f"| {name} | {_pct(scores[key]) if share else f'{scores[key]:.3f}'} |"
            for key, name, share in CAPTIONER_ROWS if key in scores]


def headline_text(summary: dict[str, Any]) -> str:
    """One line: how many times fewer steps the reinforced student needs to reach the plain one's accuracy."""
    h = summary["headline"]
    if not h["plain_improved"]:
        return (f"the plain student did not improve on the initial {h['task']} accuracy ({h['initial']:.1%}) in "
                f"{h['plain_steps']} steps, so there is no step ratio; reinforced final {h['reinforced_final']:.1%}")
    if not h["fewer_steps"]:
        return (f"reinforced student did not reach the plain student's final {h['task']} accuracy "
                f"({h['plain_final']:.1%}) within {h['plain_steps']} steps")
    return (f"reinforced student reaches the plain student's final {h['task']} accuracy ({h['plain_final']:.1%} "
            f"after {h['plain_steps']} steps) at step {h['reinforced_steps_to_plain_final']}: "
            f"{h['fewer_steps']:.1f}x fewer steps; final {h['reinforced_final']:.1%} vs {h['plain_final']:.1%}")


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
