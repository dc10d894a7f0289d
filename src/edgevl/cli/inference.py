"""`edgevl embed`, `classify` and `caption` (run a model on images or texts) and `eval-captions` (score captions)."""

from __future__ import annotations

import argparse

from edgevl.cli.common import (
    add_aot_flag,
    add_model_flags,
    add_strict_flag,
    check_inputs,
    load_for_inference,
    subparser,
)
from edgevl.errors import ConfigError, DataError, EdgevlError


def add_package_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--package", default=None, metavar="DIR",
                   help="run the package `edgevl export --format onnx|openvino|executorch|litert` (or `edgevl "
                   "compile`) wrote to DIR instead of the PyTorch model")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "int8w", "fp16"),
                   help="which of the package's variants --package runs (those export wrote with --variants)")


def load_clip(args: argparse.Namespace):
    """(model, preprocess, tokenizer): a --package runner, else `load_for_inference` (the model flags or --aot)."""
    if not args.package:
        return load_for_inference(args)
    import edgevl
    from edgevl.data.transforms import ImageTransform
    from edgevl.export.runners import load_package

    runner = load_package(args.package, args.precision, threads=args.threads or 2)
    preprocess = ImageTransform(runner.preprocess_cfg) if hasattr(runner, "preprocess_cfg") else runner.preprocess()
    return runner, preprocess, edgevl.get_tokenizer(context_length=runner.context_length)


def add_embed(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "embed",
        "embed images or texts into a .npy/.safetensors matrix (+ a .keys.json listing the rows)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", help="image files and/or folders (searched recursively)")
    src.add_argument("--texts", nargs="+", help="texts to embed (quote each)")
    src.add_argument("--texts-file", help="a UTF-8 file with one text per line")
    p.add_argument("--out", required=True, help="output file ending in .npy or .safetensors")
    p.add_argument("--no-normalize", action="store_true", help="store raw embeddings instead of L2-normalized")
    add_model_flags(p)
    add_aot_flag(p)
    add_package_flags(p)
    add_strict_flag(p)
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgevl.data.files import expand_image_paths
    from edgevl.inference import embed_images, embed_texts, embeddings_suffix, save_embeddings

    embeddings_suffix(args.out)  # inputs and output are checked before the model is built
    if args.images:
        paths = expand_image_paths(args.images)
    else:
        texts = args.texts or [t for t in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if t]
    model, preprocess, tokenizer = load_clip(args)
    normalize = not args.no_normalize
    if args.images:
        emb = embed_images(model, preprocess, paths, batch_size=args.batch_size, normalize=normalize, progress=True)
        check_inputs(len(emb.keys), emb.skipped, args.strict)
    else:
        emb = embed_texts(model, tokenizer, texts, batch_size=args.batch_size, normalize=normalize, progress=True)
    out = save_embeddings(emb, args.out)
    print(f"wrote {tuple(emb.vectors.shape)} embeddings to {out} (row keys in {out.name}.keys.json)")
    return 0


def add_classify(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "classify", "zero-shot classify images against a list of labels")
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
    add_model_flags(p)
    add_aot_flag(p)
    add_package_flags(p)
    add_strict_flag(p)
    p.set_defaults(func=run_classify)


def run_classify(args: argparse.Namespace) -> int:
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
    model, preprocess, tokenizer = load_clip(args)
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
    check_inputs(len(preds), skipped, args.strict)
    for pred in preds:
        if args.json:
            print(json.dumps({"image": pred.key, "labels": pred.labels, "probs": pred.probs}, ensure_ascii=False))
        else:
            ranked = ", ".join(f"{label} {prob:.3f}" for label, prob in zip(pred.labels, pred.probs))
            print(f"{pred.key}: {ranked}")
    return 0


def add_caption(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "caption",
        "caption images with a LightCap model or an open_clip CoCa (beam search, greedy or nucleus sampling)",
        "Caption image files (folders are expanded to their images). --num-samples N switches to nucleus\n"
        "sampling: N captions per image, each cut at the first period (for CoCa DataCompDR's recipe:\n"
        "--model coca_ViT-L-14 --pretrained mscoco_finetuned_laion2b_s13b_b90k --num-samples 5 --max-words 29).\n"
        "--profile prints params and MACs (LightCap).",
    )
    p.add_argument("images", nargs="*", help="image files or folders of images")
    p.add_argument("--model", default="lightcap-tiny",
                   help="LightCap preset (lightcap-tiny, lightcap-rn50, lightcap-mci0), config JSON or model folder; "
                        "or a CoCa (coca_ViT-L-14, coca_ViT-B-32, hf-hub:ORG/REPO, CoCa folder)")
    p.add_argument("--weights", "--pretrained", dest="weights", default=None,
                   help="LightCap: .safetensors state dict loaded on top of --model; CoCa: official tag "
                        "(edgevl.list_pretrained()), hf-hub: spec, weights file or folder")
    p.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")
    p.add_argument("--max-words", type=int, default=20,
                   help="longest caption in words (longer ones end truncated); for CoCa in BPE tokens")
    p.add_argument("--num-samples", type=int, default=0, help="nucleus samples per image (0 = beam/greedy decoding)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus mass for sampling")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    p.add_argument("--batch-size", type=int, default=8, help="images decoded together")
    p.add_argument("--profile", action="store_true", help="print parameters and MACs per component")
    p.add_argument("--int8", action="store_true",
                   help="int8 dynamic quantization of the decoder (faster on CPU; captions may differ slightly)")
    p.add_argument("--json", action="store_true", help="print one JSON list of {image, caption(s)}")
    add_package_flags(p)
    add_strict_flag(p)
    p.set_defaults(func=run_caption)


def run_caption(args: argparse.Namespace) -> int:
    import json

    from edgevl.captioning import caption, is_coca_spec, load_coca
    from edgevl.data.files import expand_image_paths
    from edgevl.data.transforms import load_image
    from edgevl.errors import ImageLoadError
    from edgevl.fast import optimize_captioner
    from edgevl.models.lightcap.model import create_lightcap

    coca = not args.package and is_coca_spec(args.model)
    if coca and (args.profile or args.int8):
        raise ConfigError("--profile and --int8 are for LightCap models, not CoCa")
    model = None if coca or args.package else create_lightcap(args.model, args.weights)
    if args.profile and model is not None:
        from edgevl.models.lightcap.profile import format_profile, profile_lightcap

        print(format_profile(model, profile_lightcap(model, args.max_words)))
        if not args.images:
            return 0
    if not args.images:
        raise EdgevlError("no images to caption (give image files or folders containing images)")
    paths = expand_image_paths(args.images)
    if args.package:
        caption = _package_captioner(args)
    elif coca:
        model = load_coca(args.model, args.weights)[0]
    else:
        optimize_captioner(model)
        if args.int8:
            model.quantize_decoder()
    options = {"beam": args.beam, "max_words": args.max_words, "num_samples": args.num_samples,
               "top_p": args.top_p, "temperature": args.temperature, "batch_size": args.batch_size, "seed": args.seed}
    options = options if args.package else {**options, "model": model}
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
    check_inputs(len(done), skipped, False)
    paths = done
    key = "captions" if args.num_samples > 0 else "caption"
    if args.json:
        print(json.dumps([{"image": str(p), key: c} for p, c in zip(paths, captions)], indent=2))
    else:
        for path, text in zip(paths, captions):
            for line in text if isinstance(text, list) else [text]:
                print(f"{path}\t{line}")
    return 0


def _package_captioner(args: argparse.Namespace):
    """`caption(images, **options)` for the captioner package in --package (ONNX, OpenVINO, ExecuTorch, LiteRT)."""
    from edgevl.captioning import DecodeOptions, caption_tensor
    from edgevl.export.runners import PackageCaptioner, load_package

    runner = load_package(args.package, args.precision)
    if not isinstance(runner, PackageCaptioner):
        raise EdgevlError(f"{args.package} holds no captioner package (export one with --parts captioner)")
    transform = runner.preprocess()

    def caption(images, batch_size: int, **options) -> list:
        return caption_tensor(runner, transform.batch(images), DecodeOptions(**options))

    return caption


def add_eval_captions(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "eval-captions",
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
    p.set_defaults(func=run_eval_captions)


def run_eval_captions(args: argparse.Namespace) -> int:
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
