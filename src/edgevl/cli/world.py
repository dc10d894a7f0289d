"""`edgevl world make|show|path|pretrain`: the procedural image-caption world and its shipped models."""

from __future__ import annotations

import argparse

from edgevl.cli.common import add_threads_flag, group_parser, subparser
from edgevl.world_models import NAMES, TEACHER_NAMES


def _add_world_flags(q: argparse.ArgumentParser) -> None:
    """The flags of `world make` and `world show` that pick the samples."""
    q.add_argument("--split", default="train", choices=("train", "val", "test", "heldout"),
                   help="which split; only heldout shows the held-out colour+shape combinations")
    q.add_argument("--seed", type=int, default=0, help="world seed; same seed gives the same bytes")
    q.add_argument("--size", type=int, default=64, help="image side in pixels")
    q.add_argument("--noise", type=float, default=0.5, help="noisy-caption noise level in [0, 1]")
    q.add_argument("--start", type=int, default=0, help="index of the first sample")


def add_world(sub: argparse._SubParsersAction) -> None:
    _, world_sub = group_parser(sub, "world", "make or look at the procedural image-caption world (no download)",
                                title="world commands", dest="world_command")

    make = subparser(world_sub, "make", "write a split as webdataset shards, a captions table or folders")
    make.add_argument("--out", required=True, help="output directory (created if missing)")
    make.add_argument("--n", type=int, required=True, help="number of samples")
    _add_world_flags(make)
    make.add_argument("--format", dest="fmt", default="wds",
                      choices=("wds", "csv", "tsv", "jsonl", "parquet", "folder", "photos"),
                      help="wds tar shards, a captions table (+ images/), one folder per class of --task, or "
                      "photos: nested album folders of JPEG/PNG/WebP/GIF files with a few broken ones (edgevl index)")
    make.add_argument("--caption", default="noisy", choices=("noisy", "clean"),
                      help="which caption becomes txt/title: the web-style one or the first clean one")
    make.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard (wds)")
    make.add_argument("--task", default="color_shape",
                      help="zero-shot task of the .cls labels, class folders and classnames.txt")
    make.add_argument("--workers", type=int, default=1, help="processes writing shards in parallel (wds)")
    make.set_defaults(func=run_world_make)

    show = subparser(world_sub, "show", "render a contact sheet PNG of samples with their captions")
    show.add_argument("--out", default="world_sheet.png", help="PNG file to write")
    show.add_argument("--n", type=int, default=12, help="number of samples")
    _add_world_flags(show)
    show.add_argument("--columns", type=int, default=4, help="samples per row")
    show.add_argument("--scale", type=int, default=3, help="enlargement factor of each image (nearest)")
    show.set_defaults(func=run_world_show)

    path = subparser(world_sub, "path", "print the folder of a shipped world model (for --teachers/--captioner)")
    path.add_argument("names", nargs="+", choices=NAMES,
                      help="shipped world models; several are printed comma-separated, as --teachers takes them")
    path.set_defaults(func=run_world_path)

    pre = subparser(world_sub, "pretrain", "train the shipped world teachers and captioner (the recipe)",
                    "Trains the CLIP teachers on clean captions of a large train split with the generic\n"
                    "trainer, then the LightCap captioner; see docs/demo.md for the exact times.")
    pre.add_argument("--what", default="all",
                     choices=(*TEACHER_NAMES, "teachers", "captioner", "all"),
                     help="which models; the teachers are independent, so they can run in parallel processes")
    pre.add_argument("--out", required=True, help="output folder, one model folder per model")
    pre.add_argument("--steps", type=int, default=None, help="override the recipe's training steps of each model")
    pre.add_argument("--seed", type=int, default=0, help="seed of the world data and the training runs")
    pre.add_argument("--teachers", default=None,
                     help="folder with the trained teacher-mci (captioner backbone and concept embeddings); "
                          "default: --out, else the shipped one")
    add_threads_flag(pre, default=1)
    pre.set_defaults(func=run_world_pretrain)


def run_world_make(args: argparse.Namespace) -> int:
    from edgevl.data.world import make

    manifest = make(args.out, args.n, split=args.split, seed=args.seed, fmt=args.fmt, size=args.size,
                    noise=args.noise, caption=args.caption, shard_size=args.shard_size, task=args.task,
                    start=args.start, workers=args.workers, progress=True)
    print(f"wrote {manifest['n']} {args.split} samples ({args.fmt}) to {args.out}")
    return 0


def run_world_path(args: argparse.Namespace) -> int:
    from edgevl.world_models import pretrained_dir

    print(",".join(str(pretrained_dir(name)) for name in args.names))
    return 0


def run_world_show(args: argparse.Namespace) -> int:
    import io
    from pathlib import Path

    from edgevl.data.world import contact_sheet, samples
    from edgevl.io import atomic_write_bytes

    sheet = contact_sheet(list(samples(args.n, args.split, args.seed, args.size, args.noise, args.start)),
                          columns=args.columns, scale=args.scale)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(Path(args.out), buf.getvalue())
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")
    return 0


def run_world_pretrain(args: argparse.Namespace) -> int:
    import json

    import torch

    from edgevl.locks import output_lock
    from edgevl.world_models.pretrain import TEACHERS, pretrain_teacher

    torch.set_num_threads(args.threads)
    names = {"teachers": list(TEACHERS), "all": list(TEACHERS), "captioner": []}.get(args.what, [args.what])
    with output_lock(args.out, "world pretrain"):
        for name in names:
            record = pretrain_teacher(name, args.out, steps=args.steps, seed=args.seed)
            print(json.dumps(record, sort_keys=True))
        if args.what in ("captioner", "all"):
            from edgevl.world_models.captioner import pretrain_captioner

            record = pretrain_captioner(args.out, teachers=args.teachers, steps=args.steps, seed=args.seed)
            print(json.dumps(record, sort_keys=True))
    return 0
