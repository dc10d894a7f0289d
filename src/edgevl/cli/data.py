"""`edgevl data-check` and `edgevl augment`: look at a dataset and at DataCompDR augmentations."""

from __future__ import annotations

import argparse
import sys

from edgevl.cli.common import subparser
from edgevl.errors import NoUsableInputError


def add_data_check(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "data-check",
        "read a dataset given by a reader spec, report its size and every skipped sample",
        "Reads every sample (decoding images) of e.g. wds:/data/{000..009}.tar, csv:train.csv,\n"
        "coco:captions_val2014.json?images=/coco/val2014, folder:/data/val; see docs/data.md.\n"
        "A folder: spec also prints each class folder with its image count and class name, and where the\n"
        "names came from (docs/eval.md). Images whose transparent pixels would hide their content are counted.",
    )
    p.add_argument("spec", help="reader spec: [kind:]path[?option=value&...]")
    p.add_argument("--limit", type=int, default=0, help="stop after this many good samples (0: read all)")
    p.add_argument("--show", type=int, default=3,
                   help="print the key and caption/label (and class name) of the first N samples")
    p.add_argument("--skip-log", default=None, help="directory for the JSONL log of skipped samples")
    p.add_argument("--strict", action="store_true", help="stop with an error at the first bad sample")
    p.set_defaults(func=run_data_check)


def run_data_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from edgevl.data.readers import open_dataset
    from edgevl.data.transforms import alpha_risk

    ds = open_dataset(args.spec, strict=args.strict, skip_log_dir=args.skip_log)
    setup = getattr(ds, "zeroshot", None)
    if setup is not None:
        print("\n".join(ds.class_table()))
    count_alpha = getattr(ds, "alpha", "drop") == "drop"  # composited images hide nothing
    risks: Counter[str | None] = Counter()
    count = 0
    for sample in ds:
        if count < args.show:
            label = sample.caption if sample.label is None else sample.label
            print(f"{sample.key}\t{label}" + (f"\t{setup.names[sample.label]}" if setup is not None else ""))
        if count_alpha and "path" in sample.meta:
            risks[alpha_risk(sample.meta["path"])] += 1
        count += 1
        if count == args.limit:
            break
    transparent = risks["hidden"] + risks["visible"]
    if transparent:
        print(f"transparency: {transparent} of {count} images have transparent pixels, dropped as in open_clip's "
              f"convert('RGB'); in {risks['hidden']} the stored colour under them matches most of the content")
    if risks["hidden"]:
        fix = "add ?alpha=white (or black, gray) to the data spec"
        print(f"edgevl: warning: {risks['hidden']} of {count} images lose their content when alpha is dropped "
              f"(e.g. a black shape on transparent black); {fix} (docs/data.md)", file=sys.stderr)
    print(f"read {count} samples from {args.spec}; {ds.skip_log.summary()}")
    if not count:
        raise NoUsableInputError(f"no usable samples in {args.spec}")
    return 0


def add_augment(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "augment",
        "sample DataCompDR augmentations of an image, or replay the records of a paug.json, as PNGs",
    )
    p.add_argument("image", help="original image file")
    p.add_argument("--out", required=True, help="folder for aug_XX.png (and paug.json when sampling)")
    p.add_argument("--paug", help="paug.json to replay (list or string form); without it, records are sampled")
    p.add_argument("--num", type=int, default=8, help="number of augmentations to sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    p.add_argument("--size", type=int, default=224, help="output size (a student replays at its own size)")
    p.add_argument("--interpolation", default="bicubic", help="resize filter: bicubic, bilinear, ...")
    p.set_defaults(func=run_augment)


def run_augment(args: argparse.Namespace) -> int:
    import io
    from pathlib import Path

    import torch

    from edgevl.data import augment
    from edgevl.data.transforms import load_image
    from edgevl.errors import ConfigError
    from edgevl.io import atomic_write_bytes, atomic_write_text

    img = load_image(args.image)
    cfg = augment.AugmentConfig(size=args.size, interpolation=args.interpolation)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.paug:
        records = augment.decode_paug(Path(args.paug).read_bytes())
    else:
        if args.num < 1:
            raise ConfigError(f"--num must be >= 1, got {args.num}")
        gen = torch.Generator().manual_seed(args.seed)
        records = [augment.sample_record(img.width, img.height, cfg, gen) for _ in range(args.num)]
        atomic_write_text(out / "paug.json", augment.encode_paug(records))
    for k, record in enumerate(records):
        buf = io.BytesIO()
        augment.replay(img, record, cfg.size, cfg.interpolation).save(buf, format="PNG")
        atomic_write_bytes(out / f"aug_{k:02d}.png", buf.getvalue())
    print(f"wrote {len(records)} augmentations of {args.image} to {out}")
    return 0
