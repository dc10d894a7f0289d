"""`edgevl reinforce run|verify`; the flags of `run` are the fields of `ReinforceConfig` (`flags.py`)."""

from __future__ import annotations

import argparse

from edgevl.cli.common import group_parser, subparser
from edgevl.cli.flags import add_config_flags, config_from_args
from edgevl.errors import NoUsableInputError


def add_reinforce(sub: argparse._SubParsersAction) -> None:
    _, modes = group_parser(
        sub,
        "reinforce",
        "write DataCompDR-style reinforced shards (teacher embeddings, synthetic captions, augmentations)",
        "run: for every sample of --data store N augmentation records, S synthetic captions per captioner (none\n"
        "without --captioner) and each teacher's embeddings of all of them as webdataset shards in --out\n"
        "(resumable; torchrun splits shards over ranks).\n"
        "verify: check a finished folder against its manifest.json.",
        title="reinforce commands", dest="reinforce_command",
    )
    run = subparser(modes, "run", "reinforce a dataset (restart the same command to resume)")
    run.defer(_add_run_flags)
    run.set_defaults(func=run_reinforce)
    check = subparser(modes, "verify", "check manifest, checksums, members and embedding shapes/norms")
    check.add_argument("folder", help="a folder written by 'edgevl reinforce run'")
    check.set_defaults(func=run_reinforce_verify)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    from edgevl.reinforce.config import ReinforceConfig

    add_config_flags(p, ReinforceConfig)


def run_reinforce(args: argparse.Namespace) -> int:
    from edgevl.reinforce.caption_quality import RULES
    from edgevl.reinforce.config import ReinforceConfig
    from edgevl.reinforce.generate import reinforce

    manifest = reinforce(config_from_args(ReinforceConfig, args))
    totals = manifest["totals"]
    print(f"wrote {totals['samples']} samples in {len(manifest['shards'])} shards to {args.out} "
          f"(skipped {totals['skipped']} of {totals['input']} input samples)")
    for captioner in manifest.get("captioners") or []:
        counts = captioner.get("degenerate_captions", {})
        rules = ", ".join(f"{rule} {counts[rule]}" for rule in RULES if counts.get(rule))
        print(f"{captioner['key']}: {counts.get('detected', 0)} degenerate captions{f' ({rules})' if rules else ''}, "
              f"{counts.get('redrawn', 0)} re-drawn, {counts.get('kept', 0)} kept (written as drawn)")
    if not totals["samples"]:
        raise NoUsableInputError(f"none of the {totals['input']} input samples of {args.data} could be used")
    return 0


def run_reinforce_verify(args: argparse.Namespace) -> int:
    from edgevl.reinforce.verify import verify

    report = verify(args.folder)
    for problem in report.problems:
        print(problem)
    state = "ok" if report.ok else f"{len(report.problems)} problems"
    print(f"{args.folder}: {report.shards} shards, {report.samples} samples checked: {state}")
    if report.degenerate_captions:
        print(f"{report.degenerate_captions} degenerate synthetic captions (written as drawn; see "
              "docs/reinforcement.md, Degenerate captions)")
    return 0 if report.ok else 1
