"""All COCO caption metrics in one call, with coco-caption's names, plus loading of COCO-format files.

Like coco-caption's COCOEvalCap, the images scored are the ones in the results; each needs references.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgevl.errors import DataError, EdgevlError
from edgevl.eval.captioning.bleu import bleu
from edgevl.eval.captioning.cider import cider_d
from edgevl.eval.captioning.meteor import meteor
from edgevl.eval.captioning.ptb_tokenizer import ptb_tokenize
from edgevl.eval.captioning.rouge import rouge_l
from edgevl.io import atomic_write_text

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
SPICE_UNAVAILABLE = "SPICE is not computed: it needs Java 8 and downloads Stanford CoreNLP 3.6.0 (~385 MB) on first use"

Results = Mapping[Hashable, str] | Sequence[Mapping[str, Any]]


def evaluate_captions(
    gts: Mapping[Hashable, Sequence[str | Mapping[str, Any]]],
    res: Results,
    *,
    tokenize: bool = True,
    use_meteor: bool = True,
    per_image: bool = False,
) -> dict[str, Any]:
    """Score captions with BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (SPICE reported unavailable).

    `gts` maps image id -> reference captions (strings or {"caption": ...} dicts); `res` maps image id ->
    caption or is a COCO results list of {"image_id", "caption"}. With `tokenize`, both sides go through the
    PTB-style tokenizer first. Returns the metric names -> float or None, "unavailable" (name -> reason),
    "num_images", and with `per_image` a "per_image" map of id -> {metric: score}.
    """
    hyps = results_to_dict(res)
    refs: dict[Hashable, list[str]] = {}
    for key in hyps:
        if key not in gts:
            raise DataError(f"image {key!r} is in the results but has no reference captions")
        refs[key] = [_caption_text(key, c) for c in gts[key]]
    if tokenize:
        refs = {k: [ptb_tokenize(c) for c in v] for k, v in refs.items()}
        hyps = {k: ptb_tokenize(v) for k, v in hyps.items()}

    scores: dict[str, Any] = dict.fromkeys(METRIC_NAMES)
    unavailable = {"SPICE": SPICE_UNAVAILABLE}
    images: dict[str, list[float]] = {}
    bleu_corpus, bleu_images = bleu(refs, hyps)
    for k in range(4):
        scores[f"Bleu_{k + 1}"], images[f"Bleu_{k + 1}"] = bleu_corpus[k], bleu_images[k]
    if use_meteor:
        try:
            scores["METEOR"], images["METEOR"] = meteor(refs, hyps)
        except (EdgevlError, OSError) as exc:  # MetricUnavailableError, or Java failing midway
            unavailable["METEOR"] = str(exc)
    else:
        unavailable["METEOR"] = "METEOR was not requested"
    scores["ROUGE_L"], images["ROUGE_L"] = rouge_l(refs, hyps)
    scores["CIDEr"], images["CIDEr"] = cider_d(refs, hyps)

    out = {**scores, "unavailable": unavailable, "num_images": len(hyps)}
    if per_image:
        out["per_image"] = {key: {m: v[i] for m, v in images.items()} for i, key in enumerate(refs)}
    return out


def results_to_dict(res: Results) -> dict[Hashable, str]:
    """Image id -> caption from a mapping or a COCO results list; duplicates and missing fields are errors."""
    if isinstance(res, Mapping):
        out = dict(res)
    else:
        out = {}
        for i, item in enumerate(res):
            if not isinstance(item, Mapping) or "image_id" not in item or "caption" not in item:
                raise DataError(f"result {i} must be an object with 'image_id' and 'caption', got {item!r:.80}")
            if item["image_id"] in out:
                raise DataError(f"image {item['image_id']!r} has more than one caption in the results")
            out[item["image_id"]] = item["caption"]
    if not out:
        raise DataError("the results contain no captions")
    for key, caption in out.items():
        if not isinstance(caption, str):
            raise DataError(f"the caption of image {key!r} must be a string, got {caption!r:.80}")
    return out


def load_references(path: str | Path) -> dict[str, list[str]]:
    """Image id (as str) -> captions, from a COCO captions annotation file, a Karpathy split file
    (dataset_coco.json: `cocoid`, else `imgid`, with the raw sentences) or a plain {id: [captions]} JSON."""
    data = _read_json(path)
    refs: dict[str, list[str]] = {}
    try:
        if isinstance(data, dict) and isinstance(data.get("annotations"), list):
            for ann in data["annotations"]:
                refs.setdefault(str(ann["image_id"]), []).append(ann["caption"])
        elif isinstance(data, dict) and isinstance(data.get("images"), list):
            for image in data["images"]:
                key = image.get("cocoid", image.get("imgid"))
                refs[str(key)] = [s["raw"] for s in image["sentences"]]
        elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            refs = {str(k): list(v) for k, v in data.items()}
        else:
            raise DataError(f"{path}: not a COCO captions, Karpathy or {{id: [captions]}} file")
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed caption entry ({exc!r})") from exc
    return refs


def load_results(path: str | Path) -> dict[str, str]:
    """Image id (as str) -> caption, from a COCO results list or a plain {id: caption} JSON."""
    data = _read_json(path)
    if not isinstance(data, (list, dict)):
        raise DataError(f"{path}: expected a COCO results list or an {{id: caption}} object")
    return {str(k): v for k, v in results_to_dict(data).items()}


def save_scores(scores: Mapping[str, Any], path: str | Path) -> None:
    """Write scores as JSON atomically (temporary file in the same folder, then rename)."""
    atomic_write_text(path, json.dumps(scores, indent=2, default=str) + "\n")


def _caption_text(key: Hashable, caption: str | Mapping[str, Any]) -> str:
    if isinstance(caption, str):
        return caption
    if isinstance(caption, Mapping) and isinstance(caption.get("caption"), str):
        return caption["caption"]
    raise DataError(f"a reference of image {key!r} is neither a string nor {{'caption': str}}: {caption!r:.80}")


def _read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from exc
