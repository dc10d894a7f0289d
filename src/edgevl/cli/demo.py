"""`edgevl demo`: reinforced vs plain CLIP training on the procedural world, with a report."""

from __future__ import annotations

import argparse

from edgevl.cli.common import add_threads_flag, subparser


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "demo", "reinforced vs plain CLIP training on the procedural world, with a report",
                  "Makes a noisy student dataset, reinforces it with the shipped world teachers and\n"
                  "captioner, trains the same tiny MCi student both ways, evaluates both and writes\n"
                  "report.md + plots to --out. See docs/demo.md.")
    p.add_argument("--out", default="demo_out", help="output folder (report.md, metrics.json, PNG plots, data)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI (a few minutes on a 2-core CPU)")
    p.add_argument("--steps", type=int, default=None, help="training steps of each student (default: the mode's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the students and the reinforcement; the student "
                                                        "data uses world seed SEED+1")
    p.add_argument("--models", default=None,
                   help="folder with teacher-mci/, teacher-mci-wide/, captioner/ (default: the shipped world models)")
    add_threads_flag(p, default=1)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from edgevl import demo
    from edgevl.demo_report import headline_text

    torch.set_num_threads(args.threads)
    summary = demo.run_demo(args.out, quick=args.quick, steps=args.steps, seed=args.seed, models=args.models)
    print(f"report: {args.out}/report.md")
    print(headline_text(summary))
    return 0
