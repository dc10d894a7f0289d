"""What the int8 decoder costs in caption quality: the shipped world captioner, float vs `quantize_decoder()`.

Captions the world test split (a fresh world seed), scores both with BLEU-4 / ROUGE-L / CIDEr-D against the five
clean references per image, counts identical captions, and times batch-1 greedy captioning of both, interleaved.

    python benchmarks/captioner_int8.py [--images 500] [--beam 1] [--runs 20]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from edgevl.captioning import DecodeOptions, caption_tensor
from edgevl.data.transforms import ImageTransform
from edgevl.data.world import samples
from edgevl.eval.captioning.evaluate import evaluate_captions
from edgevl.world_models import load_captioner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500, help="world test images to caption and score")
    parser.add_argument("--seed", type=int, default=1, help="world seed of the test images")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--runs", type=int, default=20, help="timed batch-1 runs per model (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {"float": load_captioner()}
    models["int8"] = copy.deepcopy(models["float"]).quantize_decoder()
    data = list(samples(args.images, "test", args.seed))
    pixels = ImageTransform(models["float"].config.preprocess).batch([s.image for s in data])
    refs = {s.id: s.captions for s in data}
    options = DecodeOptions(beam=args.beam, max_words=20)
    captions = {name: caption_tensor(m, pixels, options) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.runs + 2):
        for name, model in models.items():
            start = time.perf_counter()
            caption_tensor(model, pixels[i % len(data):][:1], options)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    print(f"# world captioner, {args.images} test images (world seed {args.seed}), beam {args.beam}, "
          f"{args.threads} threads, torch {torch.__version__}")
    print("| decoder | BLEU-4 | ROUGE-L | CIDEr-D | batch-1 ms (median) |")
    print("|---|---|---|---|---|")
    for name in models:
        res = {k: c for k, c in zip(refs, captions[name])}
        scores = evaluate_captions(refs, res, use_meteor=False)
        print(f"| {name} | {100 * scores['Bleu_4']:.1f} | {100 * scores['ROUGE_L']:.1f} | "
              f"{100 * scores['CIDEr']:.1f} | {1e3 * statistics.median(times[name]):.1f} |")
    same = sum(a == b for a, b in zip(captions["float"], captions["int8"]))
    print(f"identical captions: {same}/{len(data)}")


if __name__ == "__main__":
    main()
