"""Throughput of augmentation replay (RandomResizedCrop + RandAugment) through a multi-worker DataLoader.

Measures augmented 224x224 images per second end to end: worker-side record replay on Pillow, uint8 collate,
then the batched uint8 -> normalized float32 conversion in the main process. Images are procedurally drawn
(content does not change Pillow's resize/affine cost); `--source jpeg` includes JPEG decoding per sample.

    .venv/bin/python benchmarks/augment.py --workers 2 --images 512 --width 512 --height 384
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import time
from datetime import date

import numpy as np
import torch
from PIL import Image

from edgevl.data import augment as A


def make_images(count: int, width: int, height: int, jpeg: bool) -> list:
    """Procedural RGB images (colour ramps, a flat block, mild noise so JPEG sizes are photo-like), as PIL
    images or quality-90 JPEG bytes."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    out = []
    for i in range(count):
        arr = np.stack([xs * 200 // width, ys * 200 // height, (xs + ys + 7 * i) % 200], axis=-1) + 28
        arr = arr + rng.integers(-8, 9, size=arr.shape)
        arr[height // 4 : height // 2, width // 3 : width // 2] = (40 + i % 150, 90, 200)
        arr = arr.clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        if jpeg:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
        else:
            out.append(img)
    return out


def per_image_ms(images: list, records: list, size: int) -> tuple[float, float]:
    """Single-process replay time per image (no DataLoader): (wall ms, CPU ms)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for img, record in zip(images, records):
        A.to_uint8_tensor(A.replay(img if isinstance(img, Image.Image) else A.load_image(img), record, size))
    n = len(images)
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def loader_throughput(dataset: A.AugmentDataset, workers: int, batch_size: int, epochs: int) -> tuple[float, float]:
    """(wall images/s, images per CPU-second) through a DataLoader over `epochs` passes, worker start-up
    included. CPU time = main process + workers (joined at the end of each pass, so getrusage sees them);
    on a shared machine it is the load-independent measure, and `cpus x images per CPU-second` bounds what
    that many dedicated cores reach."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=A.collate_augmented,
        prefetch_factor=4 if workers > 0 else None,
    )
    cfg = dataset.config
    seen = 0
    wall, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(epochs):
        for batch, _records in loader:
            seen += A.to_float_batch(batch, cfg.mean, cfg.std).shape[0]
    return seen / (time.perf_counter() - wall), seen / (_cpu_seconds() - cpu)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="distinct source images (one record each)")
    parser.add_argument("--width", type=int, default=512, help="source image width")
    parser.add_argument("--height", type=int, default=384, help="source image height")
    parser.add_argument("--size", type=int, default=224, help="augmented output size")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, default=64, help="DataLoader batch size")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the images per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements (fresh workers each); median reported")
    parser.add_argument("--source", choices=("pil", "jpeg"), default="pil", help="decoded images or JPEG bytes")
    args = parser.parse_args()

    torch.set_num_threads(1)
    load = os.getloadavg()
    images = make_images(args.images, args.width, args.height, jpeg=args.source == "jpeg")
    gen = torch.Generator().manual_seed(0)
    records = [A.sample_record(args.width, args.height, generator=gen) for _ in images]
    dataset = A.AugmentDataset(images, records, A.AugmentConfig(size=args.size))

    single_wall, single_cpu = per_image_ms(images[:128], records[:128], args.size)
    runs = [loader_throughput(dataset, args.workers, args.batch_size, args.epochs) for _ in range(args.repeats)]
    wall_rates, cpu_rates = zip(*runs)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus available: {cpus}")
    print(f"torch {torch.__version__}, Pillow {Image.__version__}, date {date.today()}")
    print(f"load average before: {load[0]:.2f}, after: {os.getloadavg()[0]:.2f}")
    print(
        f"source {args.source} {args.width}x{args.height} -> {args.size}, 1 process: "
        f"{single_wall:.2f} ms/image wall, {single_cpu:.2f} ms/image CPU"
    )
    print(
        f"DataLoader {args.workers} workers, batch {args.batch_size}: median {np.median(wall_rates):.0f} images/s "
        f"wall ({', '.join(f'{r:.0f}' for r in wall_rates)}); {np.median(cpu_rates):.0f} images per CPU-second "
        f"-> {cpus} dedicated cores: ~{cpus * np.median(cpu_rates):.0f} images/s"
    )


if __name__ == "__main__":
    main()
