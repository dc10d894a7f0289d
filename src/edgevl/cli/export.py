"""`edgevl convert`, `export` and `compile`: weights in other layouts, ONNX graphs and AOTInductor packages."""

from __future__ import annotations

import argparse

from edgevl.cli.common import set_threads, subparser, warn_if_random_weights


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "convert",
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
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from edgevl.models.factory import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, args.model, to=args.to, reparameterize=args.reparameterize)
    print(f"wrote {out}")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "export",
        "export reparameterized towers / the LightCap captioner to ONNX, ExecuTorch, LiteRT, Core ML, OpenVINO or "
        "AOT packages, with parity checks and quantized variants",
    )
    p.add_argument("--format", dest="fmt", choices=("onnx", "executorch", "litert", "coreml", "openvino", "aot"),
                   default="onnx", help="package format (each but onnx/aot is an optional extra: "
                   "pip install 'edgevl[executorch]' etc.); coreml is converted and checked here, predicts on macOS")
    p.add_argument("--variants", default="",
                   help="comma-separated extra precisions beside fp32: int8 (dynamic int8; onnx, executorch, litert), "
                   "int8w (int8 weights only; litert, coreml), fp16 (openvino, coreml)")
    p.add_argument("--model", default=None, help="registered CLIP config name (needed for the image/text parts "
                   "unless --pretrained is a model or run folder)")
    p.add_argument("--pretrained", default=None,
                   help="CLIP weights file, model folder or training run folder (default: random weights)")
    p.add_argument("--out", required=True, help="output folder for the package files, tokenizer.json and export.json")
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
                   help="report world zero-shot top-1, retrieval R@1 and embedding cosine of PyTorch vs every "
                   "precision; a variant losing more than 1 point of top-1 is deleted with a warning")
    p.add_argument("--world-samples", type=int, default=200, help="world test images per task for --eval-world")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from edgevl.export.pipeline import export_model
    from edgevl.models.factory import resolve_model_name

    if args.model is None and args.pretrained is not None:
        args.model = resolve_model_name(None, args.pretrained)
    if args.model:
        warn_if_random_weights(args)
    manifest = export_model(
        args.out, model_name=args.model, pretrained=args.pretrained, parts=args.parts, captioner=args.captioner,
        exporter=args.exporter, opset=args.opset, quantize=args.quantize, tolerance=args.tolerance,
        eval_world=args.eval_world, world_samples=args.world_samples, fmt=args.fmt, variants=args.variants,
        progress=print,
    )
    written = manifest.get("graphs", manifest.get("towers", {}))
    print(f"wrote {len(written)} {args.fmt} graph(s) and {'aot' if args.fmt == 'aot' else 'export'}.json to {args.out}")
    return 0


def add_compile(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub, "compile",
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
    p.set_defaults(func=run_compile)


def run_compile(args: argparse.Namespace) -> int:
    from pathlib import Path

    import edgevl
    from edgevl.export.aot import compile_clip
    from edgevl.models.factory import resolve_model_name

    set_threads(args)
    args.model = resolve_model_name(args.model, args.pretrained)
    warn_if_random_weights(args)
    model = edgevl.create_model(args.model, pretrained=args.pretrained).eval()
    towers = tuple(t.strip() for t in args.towers.split(",") if t.strip())
    manifest = compile_clip(model, args.out, batch=args.batch, towers=towers, model_name=model.model_name,
                            precision=args.precision)
    for name, entry in manifest["towers"].items():
        print(f"{name}: {Path(args.out) / entry['file']} (input {entry['shape']}, "
              f"max relative error {entry['max_rel_err']:.1e} vs PyTorch)")
    return 0
