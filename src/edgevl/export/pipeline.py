"""`edgevl export` as one call: CLIP towers and/or a LightCap captioner into a folder in one package format
(ONNX, ExecuTorch, LiteRT, OpenVINO, Core ML or AOTInductor), optional variants + world quality check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgevl.export.onnx import (
    PARTS,
    base_manifest,
    check_exporter,
    export_captioner,
    export_clip,
    write_export_manifest,
)
from edgevl.export.parity import DEFAULT_TOLERANCE
from edgevl.export.runtime import ExportError
from edgevl.locks import output_lock

FORMATS = ("onnx", "executorch", "litert", "coreml", "openvino", "aot")


def parse_parts(parts: str | Sequence[str]) -> list[str]:
    """'image,text' -> ['image', 'text'] (ExportError naming unknown parts)."""
    items = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    unknown = [p for p in items if p not in PARTS]
    if unknown or not items:
        raise ExportError(f"unknown export parts {unknown or items}; choose from {', '.join(PARTS)}")
    return items


def _variants_for(fmt: str, variants: str | Sequence[str], quantize: str | None) -> list[str]:
    """The requested variants, checked against the format's (ONNX: `--quantize int8` is the int8 variant)."""
    items = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants) if v.strip()]
    if fmt == "onnx":
        if set(items) - {"int8"}:
            raise ExportError(f"ONNX has the int8 variant only, not {sorted(set(items) - {'int8'})}")
        return ["int8"] if items or quantize else []
    if quantize:
        raise ExportError("--quantize is the ONNX option; for other formats name --variants")
    from edgevl.export.backends import get_backend

    allowed = [v for v in get_backend(fmt).variants if v != "fp32"] if fmt != "aot" else []
    if set(items) - set(allowed):
        raise ExportError(f"--format {fmt} has variants {allowed or 'none'}, not {sorted(set(items) - set(allowed))}")
    return items


def _refuse_lossy_variants(out: Path, manifest: dict[str, Any], progress) -> None:
    """Delete the variants whose world zero-shot top-1 fell more than 1 point, and say so loudly with the numbers."""
    from edgevl.export.packages import remove
    from edgevl.export.world_eval import MAX_TOP1_DROP

    world = manifest["world_eval"]
    for precision in world["top1_drop_over_limit"]:
        deltas = {task: row[f"delta_{precision}"] for task, row in world["tasks"].items()}
        for record in manifest["graphs"].values():
            entry = record.pop(precision, None)
            if entry:
                remove([out / entry["file"], *(out / f for f in entry["data_files"])])
        manifest.setdefault("rejected_variants", {})[precision] = {"top1_deltas": deltas,
                                                                   "max_drop_allowed": MAX_TOP1_DROP}
        (progress or print)(f"WARNING: REFUSED the {precision} variant: world zero-shot top-1 drops "
                            + ", ".join(f"{t} {d * 100:+.1f} pts" for t, d in deltas.items())
                            + f" (> {MAX_TOP1_DROP * 100:.0f} point allowed); its files were deleted")


def _export_aot(out, model_name, pretrained, tower_parts, parts) -> dict[str, Any]:
    if "captioner" in parts:
        raise ExportError("--format aot compiles the image/text towers only; export the captioner with onnx")
    from edgevl.export.aot import compile_clip
    from edgevl.models.factory import create_model

    return compile_clip(create_model(model_name, pretrained).eval(), out, towers=tuple(tower_parts),
                        model_name=model_name)


def export_model(out: str | Path, *, model_name: str | None = None, pretrained: str | None = None,
                 parts: str | Sequence[str] = ("image", "text"), captioner: str = "lightcap-tiny",
                 exporter: str = "dynamo", opset: int | None = None, quantize: str | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, eval_world: bool = False, world_samples: int = 200,
                 fmt: str = "onnx", variants: str | Sequence[str] = (), progress=None) -> dict[str, Any]:
    """Export the requested parts into `out` as `fmt` packages and return the export.json content.

    CLIP towers come from `create_model(model_name, pretrained)`; the captioner from `create_lightcap` with a
    `NAME[:WEIGHTS]` spec or model folder. `variants` (int8, int8w, fp16: what the format supports) are written
    beside the fp32 packages; `eval_world` adds world zero-shot, retrieval and embedding-cosine figures of PyTorch
    vs every precision (needs both towers) and deletes a variant that drops top-1 by more than 1 point.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}")
    with output_lock(out, "export"):
        parts = parse_parts(parts)
        chosen = _variants_for(fmt, variants, quantize)
        tower_parts = [p for p in parts if p in ("image", "text")]
        if tower_parts and not model_name:
            raise ExportError("exporting the image/text towers needs a model name (--model)")
        if eval_world and tower_parts and tower_parts != ["image", "text"]:
            raise ExportError("--eval-world needs both the image and the text tower (--parts image,text)")
        if fmt == "aot":
            if eval_world:
                raise ExportError("--eval-world scores exported variants; --format aot has none (use onnx, openvino, "
                                  "executorch or litert)")
            return _export_aot(out, model_name, pretrained, tower_parts, parts)
        backend = None
        if fmt == "onnx":
            check_exporter(exporter, opset)
            manifest = base_manifest(exporter, opset, tolerance)
        else:
            from edgevl.export.backends import get_backend
            from edgevl.export.packages import package_manifest

            backend = get_backend(fmt)
            backend.require()
            if eval_world and not backend.runs_here:
                raise ExportError(f"--eval-world needs a runtime here; {backend.title} packages predict on macOS only")
            manifest = package_manifest(backend, tolerance)
        if "captioner" in parts:
            from edgevl.models.factory import parse_model_spec

            cap_name, cap_weights = parse_model_spec(captioner, "--captioner", require_weights=False)
        common = {"exporter": exporter, "opset": opset, "tolerance": tolerance, "quantize": "int8" if chosen else None,
                  "progress": progress, "manifest": manifest, "backend": backend, "variants": chosen}
        model = None
        if tower_parts:
            from edgevl.models.factory import create_model

            model = create_model(model_name, pretrained)
            export_clip(model, out, model_name=model_name, pretrained=pretrained, parts=tower_parts, **common)
        if "captioner" in parts:
            from edgevl.models.lightcap.model import create_lightcap

            captioner_model = create_lightcap(cap_name, cap_weights)
            export_captioner(captioner_model, out, name=cap_name, weights=cap_weights, **common)
        if eval_world and "captioner" in parts:
            from edgevl.export.world_eval import compare_world_captions

            manifest["caption_eval"] = compare_world_captions(captioner_model, out, n=world_samples,
                                                              precisions=("fp32", *chosen))
            (progress or print)("world captions CIDEr-D: " + ", ".join(
                f"{who} {row['cider_d']:.3f} ({row['same_as_torch']:.0%} same as torch)"
                for who, row in manifest["caption_eval"].items() if isinstance(row, dict)))
        if eval_world and tower_parts:
            from edgevl.export.world_eval import compare_world_accuracy

            manifest["world_eval"] = compare_world_accuracy(model, out, model_name=model_name, n=world_samples,
                                                            precisions=("fp32", *chosen), progress=progress)
            _refuse_lossy_variants(Path(out), manifest, progress)
        if eval_world:
            write_export_manifest(out, manifest)
        return manifest
