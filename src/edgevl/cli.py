"""The `edgevl` command line.

Each subcommand is a pair of functions: `_add_<name>(subparsers)` declares the parser (every flag has a help
text) and sets `func` to the function that runs it. Heavy imports happen inside the run functions so that
`edgevl --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from edgevl.app.commands import add_index, add_search, add_serve
from edgevl.errors import DataError, EdgevlError, NoUsableInputError
from edgevl.version import __version__

EXIT_CODES_HELP = """exit codes (docs/reliability.md):
  0    done (bad inputs, if any, were skipped and counted)
  1    `reinforce verify` found problems
  2    error: bad arguments, configuration, damaged weights, --strict and a bad input
  3    no usable input: every input was bad
  4    the output folder is in use by another edgevl process
  130  interrupted"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults next to every flag and keep description line breaks."""


def _subparser(sub: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None):
    return sub.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=_HelpFormatter
    )


# --------------------------------------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "info", "print versions, threads and the registered model configs")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    import platform

    import torch

    print(f"edgevl {__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"cuda available: {torch.cuda.is_available()}")
    try:
        from edgevl.models.registry import list_models
    except ImportError:
        return 0
    print("models: " + ", ".join(list_models()))
    return 0


# ------------------------------------------------------------------------------------- tokenize
def _add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "tokenize", "tokenize texts with the CLIP BPE tokenizer and print the ids")
    p.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    p.add_argument("--context-length", type=int, default=77, help="output row length (pad/truncate)")
    p.add_argument("--trim", action="store_true", help="print only start..end ids, without padding")
    p.set_defaults(func=_run_tokenize)


def _run_tokenize(args: argparse.Namespace) -> int:
    from edgevl.tokenizer import get_tokenizer

    tok = get_tokenizer(context_length=args.context_length)
    for text, row in zip(args.texts, tok(args.texts)):
        ids = row.tolist()
        if args.trim:
            ids = ids[: ids.index(tok.eot_token_id) + 1] if tok.eot_token_id in ids else ids
        print(f"{text!r}\t{ids}")
    return 0


# ---------------------------------------------------------------------------------------- world
def _add_world(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "world", "make or look at the procedural image-caption world (no download)")
    world_sub = p.add_subparsers(title="world commands", dest="world_command", metavar="WORLD_COMMAND")
    p.set_defaults(func=lambda _args: p.print_help() or 0)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--split", default="train", choices=("train", "val", "test", "heldout"),
                       help="which split; only heldout shows the held-out colour+shape combinations")
        q.add_argument("--seed", type=int, default=0, help="world seed; same seed gives the same bytes")
        q.add_argument("--size", type=int, default=64, help="image side in pixels")
        q.add_argument("--noise", type=float, default=0.5, help="noisy-caption noise level in [0, 1]")
        q.add_argument("--start", type=int, default=0, help="index of the first sample")

    make = _subparser(world_sub, "make", "write a split as webdataset shards, a captions table or folders")
    make.add_argument("--out", required=True, help="output directory (created if missing)")
    make.add_argument("--n", type=int, required=True, help="number of samples")
    common(make)
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
    make.set_defaults(func=_run_world_make)

    show = _subparser(world_sub, "show", "render a contact sheet PNG of samples with their captions")
    show.add_argument("--out", default="world_sheet.png", help="PNG file to write")
    show.add_argument("--n", type=int, default=12, help="number of samples")
    common(show)
    show.add_argument("--columns", type=int, default=4, help="samples per row")
    show.add_argument("--scale", type=int, default=3, help="enlargement factor of each image (nearest)")
    show.set_defaults(func=_run_world_show)

    path = _subparser(world_sub, "path", "print the folder of a shipped world model (for --teachers/--captioner)")
    path.add_argument("names", nargs="+", choices=("teacher-mci", "teacher-mci-wide", "captioner"),
                      help="shipped world models; several are printed comma-separated, as --teachers takes them")
    path.set_defaults(func=_run_world_path)

    pre = _subparser(world_sub, "pretrain", "train the shipped world teachers and captioner (the recipe)",
                     "Trains the CLIP teachers on clean captions of a large train split with the generic\n"
                     "trainer, then the LightCap captioner; see docs/demo.md for the exact times.")
    pre.add_argument("--what", default="all",
                     choices=("teacher-mci", "teacher-mci-wide", "teachers", "captioner", "all"),
                     help="which models; the teachers are independent, so they can run in parallel processes")
    pre.add_argument("--out", required=True, help="output folder, one model folder per model")
    pre.add_argument("--steps", type=int, default=None, help="override the recipe's training steps of each model")
    pre.add_argument("--seed", type=int, default=0, help="seed of the world data and the training runs")
    pre.add_argument("--teachers", default=None,
                     help="folder with the trained teacher-mci (captioner backbone and concept embeddings); "
                          "default: --out, else the shipped one")
    pre.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy CPU)")
    pre.set_defaults(func=_run_world_pretrain)


def _run_world_make(args: argparse.Namespace) -> int:
    from edgevl.data.world import make

    manifest = make(args.out, args.n, split=args.split, seed=args.seed, fmt=args.fmt, size=args.size,
                    noise=args.noise, caption=args.caption, shard_size=args.shard_size, task=args.task,
                    start=args.start, workers=args.workers, progress=True)
    print(f"wrote {manifest['n']} {args.split} samples ({args.fmt}) to {args.out}")
    return 0


def _run_world_path(args: argparse.Namespace) -> int:
    from edgevl.world_models import pretrained_dir

    print(",".join(str(pretrained_dir(name)) for name in args.names))
    return 0


def _run_world_show(args: argparse.Namespace) -> int:
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


def _run_world_pretrain(args: argparse.Namespace) -> int:
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


# ----------------------------------------------------------------------------------- data-check
def _add_data_check(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "data-check",
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
    p.set_defaults(func=_run_data_check)


def _run_data_check(args: argparse.Namespace) -> int:
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


# ------------------------------------------------------------------------ embed / classify
def _add_model_flags(p: argparse.ArgumentParser, default_model: str = "MobileCLIP-S2") -> None:
    p.add_argument("--model", default=None,
                   help=f"registered model config name (see `edgevl info`); default: the --pretrained folder's own "
                   f"model, else {default_model}")
    p.set_defaults(default_model=default_model)
    p.add_argument(
        "--pretrained",
        default=None,
        help="weights: a checkpoint file (.pt/.bin/.safetensors, any supported layout), a model folder or a "
        "training run folder (its model/ or newest checkpoint); without it the model has random weights",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images or texts per forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _warn_if_random_weights(args: argparse.Namespace) -> None:
    """Say so on stderr when a command builds `args.model` (already resolved) without --pretrained weights."""
    if args.pretrained is None:
        print(f"edgevl: warning: no --pretrained given, {args.model} has random weights", file=sys.stderr)


def _add_aot_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--aot", default=None, metavar="DIR",
        help="run the AOTInductor packages that `edgevl compile` wrote to DIR instead of the PyTorch model "
        "(--model and --pretrained then come from DIR)",
    )


def _load_for_inference(args: argparse.Namespace):
    import torch

    import edgevl

    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "aot", None):
        from edgevl.data.transforms import ImageTransform
        from edgevl.export.aot import AotCLIP

        model = AotCLIP(args.aot)
        if model.model_name is None:
            raise ValueError(f"{args.aot} was compiled without a model name, so its tokenizer is unknown")
        edgevl.keep_freed_memory()
        return model, ImageTransform(model.preprocess_cfg), edgevl.get_tokenizer(model.model_name)
    from edgevl.models.factory import resolve_model_name

    args.model = resolve_model_name(args.model, args.pretrained, args.default_model)  # results name it too
    _warn_if_random_weights(args)
    model, _, preprocess = edgevl.create_model_and_transforms(args.model, pretrained=args.pretrained)
    tokenizer = edgevl.get_tokenizer(context_length=model.context_length)
    model = edgevl.optimize_for_inference(model)
    edgevl.keep_freed_memory()  # a process that runs the model batch after batch: reuse the freed activations
    return model, preprocess, tokenizer


def _add_strict_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 2) when any input is bad, instead of skipping and counting it")


def _check_inputs(good: int, skipped: list[tuple[str, str]], strict: bool, what: str = "images") -> None:
    """List the skipped inputs; fail under --strict when there are any, and when no input was usable (exit 3)."""
    for key, reason in skipped:
        print(f"edgevl: skipped {key}: {reason}", file=sys.stderr)
    if skipped:
        print(f"edgevl: {len(skipped)} of {good + len(skipped)} {what} skipped", file=sys.stderr)
    if strict and skipped:
        key, reason = skipped[0]
        raise DataError(f"--strict: {len(skipped)} bad {what} (first: {key}: {reason})")
    if not good:
        raise NoUsableInputError(f"none of the {len(skipped)} {what} could be read; nothing to do")


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "embed",
        "embed images or texts into a .npy/.safetensors matrix (+ a .keys.json listing the rows)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", help="image files and/or folders (searched recursively)")
    src.add_argument("--texts", nargs="+", help="texts to embed (quote each)")
    src.add_argument("--texts-file", help="a UTF-8 file with one text per line")
    p.add_argument("--out", required=True, help="output file ending in .npy or .safetensors")
    p.add_argument("--no-normalize", action="store_true", help="store raw embeddings instead of L2-normalized")
    _add_model_flags(p)
    _add_aot_flag(p)
    _add_strict_flag(p)
    p.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgevl.data.files import expand_image_paths
    from edgevl.inference import embed_images, embed_texts, embeddings_suffix, save_embeddings

    embeddings_suffix(args.out)  # inputs and output are checked before the model is built
    if args.images:
        paths = expand_image_paths(args.images)
    else:
        texts = args.texts or [t for t in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if t]
    model, preprocess, tokenizer = _load_for_inference(args)
    normalize = not args.no_normalize
    if args.images:
        emb = embed_images(model, preprocess, paths, batch_size=args.batch_size, normalize=normalize, progress=True)
        _check_inputs(len(emb.keys), emb.skipped, args.strict)
    else:
        emb = embed_texts(model, tokenizer, texts, batch_size=args.batch_size, normalize=normalize, progress=True)
    out = save_embeddings(emb, args.out)
    print(f"wrote {tuple(emb.vectors.shape)} embeddings to {out} (row keys in {out.name}.keys.json)")
    return 0


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "classify", "zero-shot classify images against a list of labels")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated class names, e.g. 'cat,dog,red car'")
    labels.add_argument("--labels-file", help="class names: one per line, or a JSON list")
    p.add_argument(
        "--templates",
        default="photo",
        help="prompt template set (name, photo, photo-ensemble, world) or a file with one '{}' template per line",
    )
    p.add_argument("--top-k", type=int, default=3, help="labels shown per image")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    _add_model_flags(p)
    _add_aot_flag(p)
    _add_strict_flag(p)
    p.set_defaults(func=_run_classify)


def _run_classify(args: argparse.Namespace) -> int:
    import json

    from edgevl.data.classnames import read_classnames
    from edgevl.data.files import expand_image_paths
    from edgevl.data.templates import get_templates
    from edgevl.inference import classify_images

    if args.labels is not None:
        names = [x.strip() for x in args.labels.split(",") if x.strip()]
    else:
        names = read_classnames(args.labels_file)
    if not names:
        raise ValueError("--labels is empty")
    model, preprocess, tokenizer = _load_for_inference(args)
    preds, skipped = classify_images(
        model,
        preprocess,
        tokenizer,
        expand_image_paths(args.images),
        names,
        get_templates(args.templates),
        top_k=args.top_k,
        batch_size=args.batch_size,
    )
    _check_inputs(len(preds), skipped, args.strict)
    for pred in preds:
        if args.json:
            print(json.dumps({"image": pred.key, "labels": pred.labels, "probs": pred.probs}, ensure_ascii=False))
        else:
            ranked = ", ".join(f"{label} {prob:.3f}" for label, prob in zip(pred.labels, pred.probs))
            print(f"{pred.key}: {ranked}")
    return 0


# -------------------------------------------------------------------------------- eval-captions
def _add_eval_captions(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "eval-captions",
        "score captions with BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (coco-caption numbers)",
        "Score a COCO results file against reference captions, as coco-caption does (PTB-style tokenization,\n"
        "then BLEU-1..4, METEOR if Java is available, ROUGE-L, CIDEr-D; SPICE is reported unavailable).\n"
        "Only the images in the results are scored.",
    )
    p.add_argument("--results", required=True, help="COCO results JSON: [{image_id, caption}] or {id: caption}")
    p.add_argument(
        "--annotations",
        required=True,
        help="references: COCO captions annotation file, Karpathy dataset_*.json, or {id: [captions]}",
    )
    p.add_argument("--output", default=None, help="also write the scores to this JSON file")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (it starts Java, 10-40 s)")
    p.add_argument("--no-tokenize", action="store_true", help="captions are already tokenized: only split them")
    p.add_argument("--per-image", action="store_true", help="include per-image scores in the --output file")
    p.set_defaults(func=_run_eval_captions)


def _run_eval_captions(args: argparse.Namespace) -> int:
    from edgevl.eval.captioning import evaluate_captions, load_references, load_results, save_scores

    scores = evaluate_captions(
        load_references(args.annotations),
        load_results(args.results),
        tokenize=not args.no_tokenize,
        use_meteor=not args.no_meteor,
        per_image=args.per_image,
    )
    print(f"images scored: {scores['num_images']}")
    for name, reason in scores["unavailable"].items():
        print(f"{name}: unavailable ({reason})")
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE"):
        if scores[name] is not None:
            print(f"{name:8s} {scores[name]:.4f}")
    if args.output:
        save_scores(scores, args.output)
    return 0


# -------------------------------------------------------------------------------------- augment
def _add_augment(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "augment",
        "sample DataCompDR augmentations of an image, or replay the records of a paug.json, as PNGs",
    )
    p.add_argument("image", help="original image file")
    p.add_argument("--out", required=True, help="folder for aug_XX.png (and paug.json when sampling)")
    p.add_argument("--paug", help="paug.json to replay (list or string form); without it, records are sampled")
    p.add_argument("--num", type=int, default=8, help="number of augmentations to sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    p.add_argument("--size", type=int, default=224, help="output size (a student replays at its own size)")
    p.add_argument("--interpolation", default="bicubic", help="resize filter: bicubic, bilinear, ...")
    p.set_defaults(func=_run_augment)


def _run_augment(args: argparse.Namespace) -> int:
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


# -------------------------------------------------------------------------------------- caption
def _add_caption(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "caption",
        "caption images with a LightCap model (beam search, greedy or nucleus sampling)",
        "Caption image files (folders are expanded to their images). --num-samples N switches to nucleus\n"
        "sampling: N captions per image, each cut at the first period. --profile prints params and MACs.",
    )
    p.add_argument("images", nargs="*", help="image files or folders of images")
    p.add_argument("--model", default="lightcap-tiny",
                   help="LightCap preset (lightcap-tiny, lightcap-rn50, lightcap-mci0), config JSON or model folder")
    p.add_argument("--weights", default=None, help="LightCap .safetensors state dict loaded on top of --model")
    p.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")
    p.add_argument("--max-words", type=int, default=20, help="longest caption in words (longer ones end truncated)")
    p.add_argument("--num-samples", type=int, default=0, help="nucleus samples per image (0 = beam/greedy decoding)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus mass for sampling")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    p.add_argument("--batch-size", type=int, default=8, help="images decoded together")
    p.add_argument("--profile", action="store_true", help="print parameters and MACs per component")
    p.add_argument("--int8", action="store_true",
                   help="int8 dynamic quantization of the decoder (faster on CPU; captions may differ slightly)")
    p.add_argument("--json", action="store_true", help="print one JSON list of {image, caption(s)}")
    _add_strict_flag(p)
    p.set_defaults(func=_run_caption)


def _run_caption(args: argparse.Namespace) -> int:
    import json

    from edgevl.captioning import caption
    from edgevl.data.files import expand_image_paths
    from edgevl.data.transforms import load_image
    from edgevl.errors import ImageLoadError
    from edgevl.models.lightcap.model import create_lightcap

    model = create_lightcap(args.model, args.weights)
    if args.profile:
        from edgevl.models.lightcap.profile import format_profile, profile_lightcap

        print(format_profile(model, profile_lightcap(model, args.max_words)))
        if not args.images:
            return 0
    if not args.images:
        raise EdgevlError("no images to caption (give image files or folders containing images)")
    paths = expand_image_paths(args.images)
    model.optimize_for_inference()
    if args.int8:
        model.quantize_decoder()
    options = {"model": model, "beam": args.beam, "max_words": args.max_words, "num_samples": args.num_samples,
               "top_p": args.top_p, "temperature": args.temperature, "batch_size": args.batch_size, "seed": args.seed}
    done, captions, batch, skipped = [], [], [], []
    for path in [*paths, None]:  # batches of readable images; bad ones are skipped and counted, as embed does
        if path is not None:
            try:
                batch.append((path, load_image(path)))
            except ImageLoadError as exc:
                if args.strict:
                    raise DataError(f"--strict: bad image {path}: {exc.reason}") from None
                skipped.append((str(path), exc.reason))
        if batch and (path is None or len(batch) == args.batch_size):
            done += [p for p, _ in batch]
            captions += caption([image for _, image in batch], **options)
            batch = []
    _check_inputs(len(done), skipped, False)
    paths = done
    key = "captions" if args.num_samples > 0 else "caption"
    if args.json:
        print(json.dumps([{"image": str(p), key: c} for p, c in zip(paths, captions)], indent=2))
    else:
        for path, text in zip(paths, captions):
            for line in text if isinstance(text, list) else [text]:
                print(f"{path}\t{line}")
    return 0


# ------------------------------------------------------------------------------------------ eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "eval",
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
    _add_model_flags(p)
    _add_strict_flag(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json

    from edgevl.data.readers import SkipLog
    from edgevl.eval.benchmark import evaluate_retrieval, evaluate_zeroshot, guess_task, result_record, write_results

    model, preprocess, tokenizer = _load_for_inference(args)
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


# -------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub, "train", "train or fine-tune a CLIP model (plain, reinforced or online distillation)",
        "Train a CLIP student. Single process: `edgevl train ...`; several: `torchrun --nproc_per_node N -m "
        "edgevl train ...` (gloo on CPU, nccl on GPU). See docs/training.md.",
    )
    p.add_argument("--model", default=None, help="student model config name (edgevl info); default: the "
                   "--pretrained folder's own model, else world-student-mci")
    p.add_argument("--pretrained", default=None,
                   help="start from these weights (file, model folder or training run folder; any layout)")
    p.add_argument("--train-data", required=True, help="training reader spec (wds:..., csv:..., reinforced:...)")
    p.add_argument("--val-data", default=None,
                   help="held-out reader spec for periodic evaluation; a folder: spec is scored like `edgevl eval` "
                   "(same class names and templates: classnames.txt or ?classnames=, ?templates=; docs/eval.md)")
    _add_strict_flag(p)
    p.add_argument("--mode", choices=("clip", "reinforced", "online-distill"), default="clip",
                   help="loss: plain CLIP, reinforced shards, or teachers run online")
    p.add_argument("--name", default="run", help="run name: outputs go to <logs>/<name>/")
    p.add_argument("--logs", default="runs", help="folder holding the run folders")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps to train")
    p.add_argument("--batch-size", type=int, default=64, help="samples per micro-batch and rank")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=0.0, help="learning rate at the end of the cosine")
    p.add_argument("--wd", type=float, default=0.2, help="AdamW weight decay (not on norms, biases, logit scale)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1")
    p.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2")
    p.add_argument("--eps", type=float, default=1e-6, help="AdamW epsilon")
    p.add_argument("--grad-clip-norm", type=float, default=1.0, help="clip the gradient norm (0: off)")
    p.add_argument("--accum-freq", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = bf16 autocast")
    p.add_argument("--ema", type=float, default=None, help="keep an EMA of the weights with this decay")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations to save memory")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last weights and images (its depthwise-conv backward is 2-6x faster on CPU); "
                        "--no-channels-last keeps NCHW")
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower")
    p.add_argument("--lock-image-unlocked-groups", type=int, default=0,
                   help="with --lock-image: leave the last N layer groups trainable")
    p.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    p.add_argument("--lock-text-unlocked-layers", type=int, default=0,
                   help="with --lock-text: leave the last N layers trainable")
    p.add_argument("--pretrained-lr-scale", type=float, default=1.0,
                   help="with --pretrained: LR factor for tower bodies (projections, heads, logit scale: 1)")
    p.add_argument("--distill-lambda", type=float, default=1.0, help="λ: loss = (1-λ)·CLIP + λ·distillation")
    p.add_argument("--distill-logit-scale", type=float, nargs="+", default=None,
                   help="fixed teacher logit scales, one per teacher (default: manifest / teachers' own)")
    p.add_argument("--real-weight", type=float, default=1.0, help="weight of the (image, real caption) loss")
    p.add_argument("--syn-weight", type=float, default=1.0, help="weight of the (image, synthetic caption) loss")
    p.add_argument("--teachers", default="",
                   help="online-distill: comma-separated CLIP teachers, MODEL:WEIGHTS or model folders")
    p.add_argument("--captioner", default=None,
                   help="online-distill: LightCap MODEL:WEIGHTS or model folder for synthetic captions")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate on --val-data every N steps (0: never)")
    p.add_argument("--eval-samples", type=int, default=1000, help="held-out samples scored per evaluation")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (and always at the end)")
    p.add_argument("--keep-last", type=int, default=3, help="checkpoints kept in <run>/checkpoints/")
    p.add_argument("--log-every", type=int, default=10, help="write metrics.jsonl every N steps")
    p.add_argument("--resume", default=None, help="'latest' (this run's newest checkpoint) or a checkpoint folder")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization, data order and augmentation")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes per rank")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from edgevl.models.factory import resolve_model_name, split_model_specs
    from edgevl.train.config import TrainConfig
    from edgevl.train.launch import train

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["model"] = resolve_model_name(args.model, args.pretrained, "world-student-mci")
    values["teachers"] = list(split_model_specs(args.teachers))
    values["grad_clip_norm"] = args.grad_clip_norm or None
    metrics = train(TrainConfig(**values))
    if metrics:
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return 0


# -------------------------------------------------------------------------------------- convert
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "convert",
        "convert CLIP weights between layouts (v1 .pt, open_clip, edgevl folder), optionally folded",
    )
    p.add_argument("src", help="weights file (.pt/.pth/.bin/.safetensors) or checkpoint folder, any layout")
    p.add_argument("dst", help="output folder (--to edgevl), .safetensors file (--to open_clip) or .pt file (--to v1)")
    p.add_argument("--model", default=None,
                   help="registered model config name, e.g. MobileCLIP-S0 (default: SRC's own model, when SRC is a "
                   "model or run folder)")
    p.add_argument(
        "--to", choices=("edgevl", "open_clip", "v1"), default="edgevl",
        help="layout of the converted weights (v1: the official mobileclip_*.pt layout, MobileCLIP models only)"
    )
    p.add_argument("--reparameterize", action="store_true", help="fold re-parameterizable branches first")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from edgevl.models.factory import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, args.model, to=args.to, reparameterize=args.reparameterize)
    print(f"wrote {out}")
    return 0


# -------------------------------------------------------------------------------------- compile
def _add_compile(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "compile",
        "compile the optimized image/text towers ahead of time with AOTInductor (.pt2 packages for --aot)",
        "Export the towers of `optimize_for_inference(model)` and compile them to C++ with AOTInductor (weights "
        "frozen in), checking each against the PyTorch model. Needs a C++ compiler; ~10-30 s per tower. The "
        "packages run on this torch version and CPU type only; `edgevl embed/classify --aot DIR` use them.",
    )
    p.add_argument("--model", default=None, help="registered model config name, e.g. MobileCLIP-S0 (default: the "
                   "--pretrained folder's own model)")
    p.add_argument("--pretrained", default=None,
                   help="weights: a checkpoint file, model folder or training run folder; without it the model has "
                   "random weights")
    p.add_argument("--out", required=True, help="output folder for image.pt2, text.pt2 and aot.json")
    p.add_argument("--batch", type=int, default=1,
                   help="batch size compiled in (other sizes run in chunks of it; 1 suits one-at-a-time apps)")
    p.add_argument("--towers", default="image,text", help="comma-separated towers to compile: image, text")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: bfloat16 weights and activations (CPUs with AVX-512 bf16 or AMX; ~1e-2 relative "
                   "difference from fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for the parity check")
    p.set_defaults(func=_run_compile)


def _run_compile(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    import edgevl
    from edgevl.export.aot import compile_clip
    from edgevl.models.factory import resolve_model_name

    if args.threads:
        torch.set_num_threads(args.threads)
    args.model = resolve_model_name(args.model, args.pretrained)
    _warn_if_random_weights(args)
    model = edgevl.create_model(args.model, pretrained=args.pretrained).eval()
    towers = tuple(t.strip() for t in args.towers.split(",") if t.strip())
    manifest = compile_clip(model, args.out, batch=args.batch, towers=towers, model_name=model.model_name,
                            precision=args.precision)
    for name, entry in manifest["towers"].items():
        print(f"{name}: {Path(args.out) / entry['file']} (input {entry['shape']}, "
              f"max relative error {entry['max_rel_err']:.1e} vs PyTorch)")
    return 0


# ------------------------------------------------------------------------------------- reinforce
def _add_reinforce(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "reinforce",
        "write DataCompDR-style reinforced shards (teacher embeddings, synthetic captions, augmentations)",
        "run: for every sample of --data store N augmentation records, S synthetic captions per captioner (none\n"
        "without --captioner) and each teacher's embeddings of all of them as webdataset shards in --out\n"
        "(resumable; torchrun splits shards over ranks).\n"
        "verify: check a finished folder against its manifest.json.",
    )
    modes = p.add_subparsers(title="reinforce commands", dest="reinforce_command", metavar="REINFORCE_COMMAND")
    p.set_defaults(func=lambda _args: p.print_help() or 0)
    run = _subparser(modes, "run", "reinforce a dataset (restart the same command to resume)")
    run.add_argument("--data", required=True, help="input reader spec (wds shards, csv/tsv/jsonl/parquet, coco, ...)")
    run.add_argument("--out", required=True, help="output folder for the shards, manifest.json and sizes.json")
    run.add_argument("--teachers", required=True,
                     help="comma-separated CLIP teachers, MODEL:WEIGHTS or model folders, in stored order")
    run.add_argument("--captioner", default=None,
                     help="comma-separated LightCap captioners, MODEL:WEIGHTS or model folders, stored side by side "
                          "(syn_text, syn_text_1, ...); leave out for teacher-only data")
    run.add_argument("--num-augs", type=int, default=10, help="augmentations stored per image")
    run.add_argument("--num-syn-captions", type=int, default=None,
                     help="synthetic captions per image and captioner (default 5; 0 without --captioner)")
    run.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"), help="embedding storage dtype")
    run.add_argument("--format", dest="fmt", default=None, choices=("npz", "pth.gz"),
                     help="embedding member (default: npz, or pth.gz for bf16 which npz cannot hold)")
    run.add_argument("--seed", type=int, default=0, help="seed of augmentations and caption sampling")
    run.add_argument("--batch-size", type=int, default=32, help="samples processed together")
    run.add_argument("--shard-size", type=int, default=1000, help="samples per output shard for non-tar input")
    run.add_argument("--aug-size", type=int, default=None,
                     help="size the augmentations are sampled for (default: the first teacher's input size)")
    run.add_argument("--logit-scales", default=None,
                     help="comma-separated KD logit scales per teacher (default: each teacher's own scale)")
    run.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="compute precision of the models")
    run.add_argument("--top-p", type=float, default=0.9, help="nucleus mass of caption sampling")
    run.add_argument("--temperature", type=float, default=1.0, help="caption sampling temperature")
    run.add_argument("--no-images", action="store_true",
                     help="DataCompDR layout: leave image and txt out (read with ?images=<the input shards>)")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (torchrun: cuda:LOCAL_RANK)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_strict_flag(run)
    run.set_defaults(func=_run_reinforce)
    check = _subparser(modes, "verify", "check manifest, checksums, members and embedding shapes/norms")
    check.add_argument("folder", help="a folder written by 'edgevl reinforce run'")
    check.set_defaults(func=_run_reinforce_verify)


def _run_reinforce(args: argparse.Namespace) -> int:
    from edgevl.models.factory import split_model_specs
    from edgevl.reinforce.config import ReinforceConfig, parse_scales
    from edgevl.reinforce.generate import reinforce

    cfg = ReinforceConfig(
        data=args.data, out=args.out, teachers=split_model_specs(args.teachers), captioner=args.captioner,
        num_augs=args.num_augs, num_syn_captions=args.num_syn_captions, dtype=args.dtype, fmt=args.fmt,
        seed=args.seed, batch_size=args.batch_size, shard_size=args.shard_size, aug_size=args.aug_size,
        logit_scales=parse_scales(args.logit_scales), precision=args.precision, top_p=args.top_p,
        temperature=args.temperature, images=not args.no_images, device=args.device, progress=not args.no_progress,
        strict=args.strict,
    )
    manifest = reinforce(cfg)
    totals = manifest["totals"]
    print(f"wrote {totals['samples']} samples in {len(manifest['shards'])} shards to {args.out} "
          f"(skipped {totals['skipped']} of {totals['input']} input samples)")
    if not totals["samples"]:
        raise NoUsableInputError(f"none of the {totals['input']} input samples of {args.data} could be used")
    return 0


def _run_reinforce_verify(args: argparse.Namespace) -> int:
    from edgevl.reinforce.verify import verify

    report = verify(args.folder)
    for problem in report.problems:
        print(problem)
    state = "ok" if report.ok else f"{len(report.problems)} problems"
    print(f"{args.folder}: {report.shards} shards, {report.samples} samples checked: {state}")
    return 0 if report.ok else 1


# --------------------------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _subparser(
        sub,
        "export",
        "export reparameterized towers / the LightCap captioner to ONNX, with parity checks and int8 option",
    )
    p.add_argument("--model", default=None, help="registered CLIP config name (needed for the image/text parts "
                   "unless --pretrained is a model or run folder)")
    p.add_argument("--pretrained", default=None,
                   help="CLIP weights file, model folder or training run folder (default: random weights)")
    p.add_argument("--out", required=True, help="output folder for the .onnx files and export.json")
    p.add_argument("--parts", default="image,text", help="comma-separated parts: image, text, captioner")
    p.add_argument("--captioner", default="lightcap-tiny",
                   help="LightCap NAME[:WEIGHTS] (preset, config JSON or model folder; optional .safetensors)")
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo",
                   help="torch.onnx exporter: dynamo (opset 20, maintained) or legacy TorchScript (opset 17, faster)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 20 dynamo, 17 legacy)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="also write *.int8.onnx: onnxruntime dynamic int8 of MatMul/Gemm only")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max parity error relative to the output magnitude (PyTorch vs ONNX Runtime)")
    p.add_argument("--eval-world", action="store_true",
                   help="report world zero-shot accuracy of PyTorch vs the ONNX graphs (fp32 and int8)")
    p.add_argument("--world-samples", type=int, default=200, help="world test images per task for --eval-world")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from edgevl.export.pipeline import export_model
    from edgevl.models.factory import resolve_model_name

    if args.model is None and args.pretrained is not None:
        args.model = resolve_model_name(None, args.pretrained)
    if args.model:
        _warn_if_random_weights(args)
    manifest = export_model(
        args.out, model_name=args.model, pretrained=args.pretrained, parts=args.parts, captioner=args.captioner,
        exporter=args.exporter, opset=args.opset, quantize=args.quantize, tolerance=args.tolerance,
        eval_world=args.eval_world, world_samples=args.world_samples, progress=print,
    )
    print(f"wrote {len(manifest['graphs'])} graph(s) and export.json to {args.out}")
    return 0


# ----------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "demo", "reinforced vs plain CLIP training on the procedural world, with a report",
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
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy CPU)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import torch

    from edgevl.demo import run_demo
    from edgevl.demo_report import headline_text

    torch.set_num_threads(args.threads)
    summary = run_demo(args.out, quick=args.quick, steps=args.steps, seed=args.seed, models=args.models)
    print(f"report: {args.out}/report.md")
    print(headline_text(summary))
    return 0


# ---------------------------------------------------------------------------------- train-captioner
def _add_train_captioner(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "train-captioner", "train a LightCap captioner (CE, distillation, ensemble heads, SCST)",
                   "Train a LightCap captioner on cached frozen-backbone features: caption cross-entropy and the\n"
                   "concept loss, optional distillation from a larger LightCap teacher, sequential ensemble-head\n"
                   "distillation and self-critical CIDEr-D optimisation. Writes OUT/model (an `edgevl caption`\n"
                   "model folder), OUT/checkpoints, OUT/metrics.jsonl and OUT/result.json. The frozen backbone\n"
                   "should be a trained image tower (--backbone); a preset's random one is warned about.")
    p.add_argument("--config", default="lightcap-tiny",
                   help="LightCap preset or config JSON (trained from scratch), or a model folder (fine-tuned)")
    p.add_argument("--backbone", default=None, metavar="RUN_OR_MODEL",
                   help="trained CLIP with an MCi image tower as the frozen backbone: an `edgevl train` run folder, "
                        "a model folder or MODEL:WEIGHTS (default: the config's own, warned about when untrained)")
    p.add_argument("--train-data", required=True, help="reader spec with captions (world wds/csv, coco:, karpathy:)")
    p.add_argument("--val-data", default=None,
                   help="reader spec of the validation split: CIDEr-D/BLEU-4, plus class (and world colour/shape) "
                        "accuracy of the captions where images are labelled (world wds, folder:)")
    p.add_argument("--train-samples", type=int, default=None, help="read at most N training images")
    p.add_argument("--val-samples", type=int, default=500, help="evaluate on at most N validation images")
    p.add_argument("--steps", type=int, default=1000, help="cross-entropy (+ distillation) steps")
    p.add_argument("--batch-size", type=int, default=64, help="captions per step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate (warm-up then cosine)")
    p.add_argument("--wd", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--concept-weight", type=float, default=1.0, help="weight of the concept-extractor BCE loss")
    p.add_argument("--teacher", default=None, help="trained LightCap folder to distil from (same vocabulary)")
    p.add_argument("--kd-hidden", type=float, default=1.0, help="weight of the hidden-state MSE (with --teacher)")
    p.add_argument("--kd-attn", type=float, default=1.0, help="weight of the attention-map MSE (with --teacher)")
    p.add_argument("--kd-logits", type=float, default=1.0, help="weight of the softened-logit KL (with --teacher)")
    p.add_argument("--kd-temperature", type=float, default=2.0, help="softmax temperature of the logit KL")
    p.add_argument("--ensemble-distill", action="store_true",
                   help="after the main steps, distil each head in turn from a teacher head (others frozen)")
    p.add_argument("--ensemble-steps", type=int, default=None,
                   help="steps of ensemble distillation over all heads (default: half of --steps)")
    p.add_argument("--scst-steps", type=int, default=0, help="self-critical CIDEr-D steps at the end")
    p.add_argument("--scst-samples", type=int, default=5, help="sampled captions per image in SCST")
    p.add_argument("--scst-lr", type=float, default=5e-5, help="SCST learning rate (cosine, no warm-up)")
    p.add_argument("--no-concepts", action="store_true", help="ablation: no concept tokens and no modulator")
    p.add_argument("--no-modulator", action="store_true", help="ablation: concept tokens but no modulator")
    p.add_argument("--heads", type=int, default=None, help="number of ensemble heads (default: the config's)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate on --val-data every N steps (0: at the end)")
    p.add_argument("--eval-beam", type=int, default=1, help="beam size of evaluation decoding (1 = greedy)")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)")
    p.add_argument("--keep-last", type=int, default=3, help="keep the newest N checkpoints")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", default=None, help="'latest' (this run's newest checkpoint) or a checkpoint folder")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization and batch sampling")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_run_train_captioner)


def _run_train_captioner(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import torch

    from edgevl.train.captioner import CaptionerTrainConfig, train_captioner

    if args.threads:
        torch.set_num_threads(args.threads)
    names = {f.name for f in dataclasses.fields(CaptionerTrainConfig)}
    result = train_captioner(CaptionerTrainConfig(**{k: v for k, v in vars(args).items() if k in names}))
    print(json.dumps({"steps": result["steps"], "val": result["val"]}))
    return 0


# The order here is the order in `edgevl --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_info,
    _add_tokenize,
    _add_embed,
    _add_classify,
    _add_eval,
    _add_world,
    _add_data_check,
    _add_eval_captions,
    _add_augment,
    _add_caption,
    _add_reinforce,
    _add_train,
    _add_train_captioner,
    _add_convert,
    _add_export,
    _add_compile,
    _add_demo,
    add_index,
    add_search,
    add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the tests to check every flag has help)."""
    parser = argparse.ArgumentParser(
        prog="edgevl",
        description="edgevl: fast image-text models (MobileCLIP, LightCap) for edge devices.",
        epilog=EXIT_CODES_HELP,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgevl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (`EXIT_CODES_HELP`; errors are one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("edgevl: interrupted", file=sys.stderr)
        return 130
    except (EdgevlError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"edgevl: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)


if __name__ == "__main__":
    raise SystemExit(main())
