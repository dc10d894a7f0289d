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
    p.add_argument("--quick", action="store_true",
                   help="one seed of 400 steps (about 1.5 min on a 2-core CPU; the README's first command)")
    p.add_argument("--steps", type=int, default=None, help="training steps of each student (full: 1800, --quick: 400)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the students and the reinforcement; seed S's "
                                                        "student data uses world seed S+1")
    p.add_argument("--seeds", type=int, default=None,
                   help="how many seeds (SEED, SEED+1, ...) to run, each with its own data, reinforcement and two "
                        "students; the report gives mean ± std and each seed's ratios (full: 3, --quick: 1)")
    p.add_argument("--models", default=None,
                   help="folder with teacher-mci/, teacher-vit/, captioner/ (made by `edgevl world pretrain`; "
                        "unset: the shipped world models)")
    p.add_argument("--jobs", type=int, default=None,
                   help="students trained at once, one process and one thread each (same results; 2 when "
                        "the machine has 2 or more cores, else 1)")
    add_threads_flag(p, default=1)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import os

    import torch

    from edgevl import demo
    from edgevl.demo_report import headline_text

    torch.set_num_threads(args.threads)
    jobs = args.jobs if args.jobs is not None else min(2, os.cpu_count() or 1)
    summary = demo.run_demo(args.out, quick=args.quick, steps=args.steps, seed=args.seed,
                            seeds=args.seeds, models=args.models, jobs=jobs)
    print(f"report: {args.out}/report.md")
    print(headline_text(summary))
    return 0
