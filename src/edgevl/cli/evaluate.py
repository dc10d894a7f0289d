"""`edgevl eval`: zero-shot classification and image-text retrieval scores in clip_benchmark's schema."""

from __future__ import annotations

import argparse
import sys

from edgevl.cli.common import add_model_flags, add_strict_flag, load_for_inference, subparser


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "eval",
        "zero-shot classification / image-text retrieval on datasets, JSON in clip_benchmark's schema "
        "(caption metrics: `edgevl eval-captions`)",
        "Scores a model on reader specs; see docs/eval.md. A folder: spec takes ?classnames= and ?templates=;\n"
        "every spec takes ?alpha=white|black|gray (composite transparent images onto a background; default\n"
        "drop, as open_clip does).",
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        help="reader spec of a dataset, e.g. folder:/data/val (classification) or csv:/data/test.csv (retrieval); "
        "repeat for several",
    )
    p.add_argument(
        "--task",
        default="auto",
        choices=["auto", "zeroshot_classification", "zeroshot_retrieval"],
        help="auto: class folders -> classification, caption datasets -> retrieval",
    )
    p.add_argument("--classnames", default=None,
                   help="class-name file: 'folder<TAB>name' lines or a JSON {folder: name} object, or one name per "
                   "line, which is paired with the class folders in ALPHABETICAL order (clip_benchmark's "
                   "classnames.txt; refused when its order is clearly another). Default: classnames.txt in the "
                   "folder, else the folder names. The spec's ?classnames= wins (docs/eval.md)")
    p.add_argument("--templates", default=None, help="template set name or file (default: "
                   "zeroshot_classification_templates.txt in the folder, else 'photo'); the spec's ?templates= wins")
    p.add_argument("--recall-k", default="1,5,10", help="comma-separated K values for retrieval recall@K")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--output", default=None, help="write the results JSON here (else print it)")
    add_model_flags(p)
    add_strict_flag(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import json

    from edgevl.data.readers import SkipLog
    from edgevl.eval.benchmark import evaluate_retrieval, evaluate_zeroshot, guess_task, result_record, write_results

    model, preprocess, tokenizer = load_for_inference(args)
    records = []
    for spec in args.data:
        task = guess_task(spec) if args.task == "auto" else args.task
        log = SkipLog(strict=args.strict)
        common = {"batch_size": args.batch_size, "workers": args.workers, "skip_log": log, "progress": True}
        if task == "zeroshot_classification":
            metrics = evaluate_zeroshot(
                model, preprocess, tokenizer, spec, classnames=args.classnames, templates=args.templates, **common
            )
        else:
            ks = tuple(int(k) for k in args.recall_k.split(","))
            metrics = evaluate_retrieval(model, preprocess, tokenizer, spec, ks=ks, **common)
        print(f"{spec}: {log.summary()}", file=sys.stderr)
        name = getattr(model, "model_name", None) or args.model  # a folder's recorded model, not local-dir:PATH
        records.append(result_record(spec, name, args.pretrained, task, metrics))
    if args.output:
        write_results(records, args.output)
        print(f"wrote {args.output}")
    else:
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
    return 0
