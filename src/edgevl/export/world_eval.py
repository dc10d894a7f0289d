"""Quality of a PyTorch CLIP and its exported packages on the same freshly generated world test images.

Each world task gets a class-folder copy of the same `n` test samples in a temporary directory; the PyTorch
model and every package precision (fp32 and the variants: int8, int8w, fp16) are scored by
`edgevl.eval.benchmark.evaluate_zeroshot` on identical inputs. The headline task also gives retrieval R@1 (both
directions, all captions) and the cosine of each precision's image embeddings to PyTorch's on its images.
A variant whose zero-shot top-1 falls more than `MAX_TOP1_DROP` below PyTorch's on any task is flagged.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from edgevl.export.runners import PackageCLIP

MAX_TOP1_DROP = 0.01
RECALL_KEYS = ("image_retrieval_recall@1", "text_retrieval_recall@1")


def _image_cosines(reference: torch.nn.Module, runners: dict[str, PackageCLIP], preprocess, root: Path,
                   limit: int = 64) -> dict[str, dict[str, float]]:
    """Min and mean cosine of each runner's image embeddings to `reference`'s on the first `limit` images."""
    from edgevl.data.transforms import load_image
    from edgevl.eval.zeroshot import encode_images

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]
    pixels = torch.stack([preprocess(load_image(p)) for p in files])
    with torch.no_grad():
        ref = encode_images(reference, pixels)
        cos = {p: (encode_images(r, pixels) * ref).sum(-1) for p, r in runners.items()}
    return {p: {"min": float(c.min()), "mean": float(c.mean()), "images": len(files)} for p, c in cos.items()}


def compare_world_accuracy(model: torch.nn.Module, export_dir: str | Path, *, model_name: str, n: int = 200,
                           split: str = "test", seed: int = 0, task_names: Sequence[str] | None = None,
                           precisions: Sequence[str] = ("fp32", "int8"), progress=None) -> dict[str, Any]:
    """{"tasks": {task: {"torch": acc1, "<precision>": acc1, "delta_<precision>": acc1 - torch acc1}},
    "retrieval": {...}, "image_cosine": {precision: {min, mean}}, "top1_drop_over_limit": [precisions]}."""
    from edgevl.data.transforms import ImageTransform
    from edgevl.data.world import HEADLINE_TASK, make, tasks
    from edgevl.eval.benchmark import evaluate_retrieval, evaluate_zeroshot
    from edgevl.models.factory import preprocess_cfg_for, reparameterize
    from edgevl.tokenizer import get_tokenizer

    folded = reparameterize(model)
    preprocess = ImageTransform(preprocess_cfg_for(model))
    tokenizer = get_tokenizer(context_length=model.context_length)
    runners = {p: PackageCLIP(export_dir, p) for p in precisions}
    scored = {"torch": folded, **runners}
    results: dict[str, Any] = {"split": split, "seed": seed, "n": n, "model": model_name, "tasks": {}}
    names = list(task_names or tasks())
    with tempfile.TemporaryDirectory(prefix="edgevl-world-") as tmp:
        for name in names:
            root = Path(tmp) / name
            make(root, n, split=split, seed=seed, fmt="folder", task=name)
            spec = f"folder:{root}"
            row = {"torch": evaluate_zeroshot(folded, preprocess, tokenizer, spec)["acc1"]}
            for precision, runner in runners.items():
                row[precision] = evaluate_zeroshot(runner, preprocess, tokenizer, spec)["acc1"]
                row[f"delta_{precision}"] = row[precision] - row["torch"]
            results["tasks"][name] = row
            if progress:
                progress(f"world {name}: " + ", ".join(f"{k} {v:+.4f}" if k.startswith("delta") else f"{k} {v:.4f}"
                                                       for k, v in row.items()))
        headline = HEADLINE_TASK if HEADLINE_TASK in names else names[0]
        captions = Path(tmp) / "captions"
        make(captions, n, split=split, seed=seed, fmt="jsonl", task=headline)
        spec = f"jsonl:{captions / f'{split}.jsonl'}"
        results["retrieval"] = {"task": headline, **{
            who: {k: metrics[k] for k in RECALL_KEYS}
            for who, m in scored.items() for metrics in [evaluate_retrieval(m, preprocess, tokenizer, spec)]}}
        results["image_cosine"] = _image_cosines(folded, runners, preprocess, Path(tmp) / headline)
    results["top1_drop_over_limit"] = [p for p in precisions
                                       if any(row[f"delta_{p}"] < -MAX_TOP1_DROP for row in results["tasks"].values())]
    if progress:
        for who in scored:
            progress(f"world retrieval R@1 {who}: " + ", ".join(f"{k} {v:.4f}"
                                                               for k, v in results["retrieval"][who].items()))
        for p, c in results["image_cosine"].items():
            progress(f"image embedding cosine {p} vs PyTorch: min {c['min']:.5f}, mean {c['mean']:.5f}")
    return results


def compare_world_captions(model, export_dir: str | Path, *, n: int = 100, split: str = "test", seed: int = 0,
                           precisions: Sequence[str] = ("fp32",), max_words: int = 20) -> dict[str, Any]:
    """Greedy captions of `n` world test images by the PyTorch LightCap and each captioner package precision:
    CIDEr-D against the world's clean reference captions and the share of captions equal to PyTorch's."""
    import copy

    from edgevl.captioning import DecodeOptions, caption_tensor
    from edgevl.data.world import samples
    from edgevl.eval.captioning.cider import cider_d
    from edgevl.eval.captioning.ptb_tokenizer import ptb_tokenize
    from edgevl.export.runners import PackageCaptioner

    folded = copy.deepcopy(model).eval().fold_backbone()
    drawn = list(samples(n, split=split, seed=seed))
    references = {s.id: [ptb_tokenize(c) for c in s.captions] for s in drawn}
    options = DecodeOptions(beam=1, max_words=max_words)
    runners = {"torch": folded, **{p: PackageCaptioner(export_dir, p) for p in precisions}}
    pixels = PackageCaptioner(export_dir).preprocess().batch([s.image for s in drawn])
    with torch.no_grad():
        captions = {who: caption_tensor(runner, pixels, options) for who, runner in runners.items()}
    scores: dict[str, Any] = {"split": split, "seed": seed, "n": n, "decoding": "greedy"}
    for who, texts in captions.items():
        cider, _ = cider_d(references, {s.id: ptb_tokenize(t) for s, t in zip(drawn, texts)})
        same = sum(a == b for a, b in zip(texts, captions["torch"])) / n
        scores[who] = {"cider_d": cider, "same_as_torch": same}
    return scores
