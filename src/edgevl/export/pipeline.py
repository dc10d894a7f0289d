"""`edgevl export` as one call: CLIP towers and/or a LightCap captioner into a folder, optional int8 + world eval."""

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


def parse_parts(parts: str | Sequence[str]) -> list[str]:
    """'image,text' -> ['image', 'text'] (ExportError naming unknown parts)."""
    items = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    unknown = [p for p in items if p not in PARTS]
    if unknown or not items:
        raise ExportError(f"unknown export parts {unknown or items}; choose from {', '.join(PARTS)}")
    return items


def export_model(out: str | Path, *, model_name: str | None = None, pretrained: str | None = None,
                 parts: str | Sequence[str] = ("image", "text"), captioner: str = "lightcap-tiny",
                 exporter: str = "dynamo", opset: int | None = None, quantize: str | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, eval_world: bool = False, world_samples: int = 200,
                 progress=None) -> dict[str, Any]:
    """Export the requested parts into `out` and return the export.json content.

    CLIP towers come from `create_model(model_name, pretrained)`; the captioner from `create_lightcap` with a
    `NAME[:WEIGHTS]` spec or model folder. `eval_world` adds the world zero-shot accuracies of PyTorch vs ONNX
    (needs towers).
    """
    with output_lock(out, "export"):
        check_exporter(exporter, opset)
        parts = parse_parts(parts)
        tower_parts = [p for p in parts if p in ("image", "text")]
        if tower_parts and not model_name:
            raise ExportError("exporting the image/text towers needs a model name (--model)")
        if eval_world and tower_parts != ["image", "text"]:
            raise ExportError("--eval-world needs both the image and the text tower (--parts image,text)")
        if "captioner" in parts:
            from edgevl.models.factory import parse_model_spec

            cap_name, cap_weights = parse_model_spec(captioner, "--captioner", require_weights=False)
        manifest = base_manifest(exporter, opset, tolerance)
        common = {"exporter": exporter, "opset": opset, "tolerance": tolerance, "quantize": quantize,
                  "progress": progress, "manifest": manifest}
        model = None
        if tower_parts:
            from edgevl.models.factory import create_model

            model = create_model(model_name, pretrained)
            export_clip(model, out, model_name=model_name, pretrained=pretrained, parts=tower_parts, **common)
        if "captioner" in parts:
            from edgevl.models.lightcap.model import create_lightcap

            export_captioner(create_lightcap(cap_name, cap_weights), out, name=cap_name, weights=cap_weights, **common)
        if eval_world:
            from edgevl.export.world_eval import compare_world_accuracy

            precisions = ("fp32", "int8") if quantize else ("fp32",)
            manifest["world_eval"] = compare_world_accuracy(model, out, model_name=model_name, n=world_samples,
                                                    precisions=precisions, progress=progress)
            write_export_manifest(out, manifest)
        return manifest
