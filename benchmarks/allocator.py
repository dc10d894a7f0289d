"""Page faults and latency of one image tower (optimized, batch 1) under this process's allocator settings.

Run it once per setting, each in a fresh process, since malloc settings are process-wide:

    python benchmarks/allocator.py --model MobileCLIP-S0 --malloc default
    python benchmarks/allocator.py --model MobileCLIP-S0 --malloc keep
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/allocator.py --malloc default

The full CLIP model is built, as in `benchmarks/encoders.py`, because the faults depend on the heap's layout.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import edgevl
from edgevl.runtime import allocator_description, keep_freed_memory, minor_page_faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MobileCLIP-S0", help="registered model name")
    parser.add_argument("--malloc", default="keep", choices=["keep", "default"],
                        help="keep: call edgevl.keep_freed_memory() first; default: leave the allocator as it is")
    parser.add_argument("--repeats", type=int, default=60, help="timed calls (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as benchmarks/encoders.py: random-init weights make denormals
    model = edgevl.optimize_for_inference(edgevl.create_model(args.model).eval())
    size = model.model_cfg["vision_cfg"].get("image_size", 224)
    image = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model.encode_image(image)
        start = minor_page_faults()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.encode_image(image)
            times.append(time.perf_counter() - t0)
        faults = (minor_page_faults() - start) / args.repeats
    print(f"{args.model} image, batch 1, {allocator_description()}: {statistics.median(times) * 1000:.2f} ms median, "
          f"{faults:.0f} page faults per call")


if __name__ == "__main__":
    main()
