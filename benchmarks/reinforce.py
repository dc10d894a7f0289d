"""Cost of dataset reinforcement: generation throughput with the world teachers, and storage per sample.

Throughput: a procedural world split is reinforced shard by shard with randomly initialised `world-teacher-vit`
+ `world-teacher-mci` and a `lightcap-tiny` captioner (model loading excluded); a per-stage split of one batch
says where the time goes. Storage: the embedding member is serialized with the real writer for each dtype and
format at the world teachers' width and at DataCompDR's (2 x ViT-L/14 = 1536), and `paug.json` / `syn.json`
sizes are read from the generated shards.

    .venv/bin/python benchmarks/reinforce.py --samples 32 --num-augs 10 --num-syn 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import torch

import edgevl
from edgevl.data.augment import AugmentConfig, sample_record
from edgevl.data.world import make
from edgevl.models.lightcap.model import create_lightcap
from edgevl.reinforce.captioner import Captioner
from edgevl.reinforce.config import ReinforceConfig
from edgevl.reinforce.generate import ShardJob
from edgevl.reinforce.inputs import InputShards, seed_for
from edgevl.reinforce.storage import embedding_blob
from edgevl.reinforce.teachers import OnlineTeacher

FORMATS = (("fp16", "npz"), ("bf16", "pth.gz"), ("fp32", "npz"), ("fp16", "pth.gz"))


def save_models(root: Path) -> tuple[list[str], str]:
    torch.manual_seed(0)
    specs = []
    for name in ("world-teacher-vit", "world-teacher-mci"):
        edgevl.save_pretrained(edgevl.create_model(name), root / name)
        specs.append(str(root / name))
    create_lightcap("lightcap-tiny").save_pretrained(root / "captioner")
    return specs, str(root / "captioner")


def throughput(root: Path, args: argparse.Namespace) -> dict:
    """Samples/s (wall and per CPU-second) over all shards, and a per-stage split of one batch (seconds)."""
    teachers_specs, captioner_spec = save_models(root)
    make(root / "data", args.samples, shard_size=args.shard_size, size=64)
    last = -(-args.samples // args.shard_size) - 1
    cfg = ReinforceConfig(data=str(root / "data" / f"{{00000..{last:05d}}}.tar"), out=str(root / "out"),
                          teachers=tuple(teachers_specs), captioner=captioner_spec, num_augs=args.num_augs,
                          num_syn_captions=args.num_syn, batch_size=args.batch_size, progress=False)
    device = torch.device("cpu")
    teachers = [OnlineTeacher(spec, device) for spec in cfg.teachers]
    captioner = Captioner(cfg.captioner, device)
    aug = AugmentConfig(size=teachers[0].size)
    inputs = InputShards(cfg.data)
    (root / "out" / "_state").mkdir(parents=True)
    job = ShardJob(cfg, inputs, teachers, [captioner], aug, root / "out")
    wall, cpu = time.perf_counter(), time.process_time()
    written = sum(job.run(shard)["samples"] for shard in range(len(inputs)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    from edgevl.data.readers import SkipLog

    batch = [s for _, s in zip(range(args.batch_size), inputs.samples(0, SkipLog()))]
    images = [s.image for s in batch]
    stages: dict[str, float] = {}
    t = time.perf_counter()
    records = []
    for s in batch:
        gen = torch.Generator().manual_seed(seed_for(0, s.key, "augment"))
        records.append([sample_record(s.image.width, s.image.height, aug, gen) for _ in range(args.num_augs)])
    stages["sample records"] = time.perf_counter() - t
    t = time.perf_counter()
    syn = captioner.sample(images, [seed_for(0, s.key, "caption") for s in batch], args.num_syn)
    stages["captioner"] = time.perf_counter() - t
    texts = [x for s, row in zip(batch, syn) for x in (s.caption, *row)]
    for teacher in teachers:
        label = Path(teacher.spec).name
        t = time.perf_counter()
        pixels = teacher.replay_batch(images, records)
        stages[f"{label} replay"] = time.perf_counter() - t
        t = time.perf_counter()
        teacher.embed_images(pixels)
        stages[f"{label} images"] = time.perf_counter() - t
        t = time.perf_counter()
        teacher.embed_texts(texts)
        stages[f"{label} texts"] = time.perf_counter() - t
    per_sample = {k: v / len(batch) for k, v in stages.items()}
    return {"samples": written, "wall_s": wall, "cpu_s": cpu, "per_sample_stage_s": per_sample,
            "dims": [t.embed_dim for t in teachers], "out": root / "out"}


def metadata_sizes(out: Path, num_augs: int, num_syn: int) -> dict[str, float]:
    """Mean bytes per augmentation in paug.json and per caption in syn.json, from the written shards."""
    paug, syn, count = [], [], 0
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".paug.json"):
                    paug.append(member.size / num_augs)
                    count += 1
                elif member.name.endswith(".syn.json"):
                    syn.append(member.size / num_syn)
    return {"paug_per_aug": statistics.mean(paug), "syn_per_caption": statistics.mean(syn), "samples": count}


def storage(dim: int, num_augs: int, num_syn: int) -> list[dict]:
    """Embedding-member bytes per sample for each dtype/format, and the marginal bytes per augmentation and
    per caption (difference quotients over one extra row, on random unit vectors)."""
    def size(n_aug: int, n_txt: int, dtype: str, fmt: str) -> int:
        gen = torch.Generator().manual_seed(0)
        img = torch.nn.functional.normalize(torch.randn(n_aug, dim, generator=gen), dim=-1)
        txt = torch.nn.functional.normalize(torch.randn(n_txt, dim, generator=gen), dim=-1)
        return len(embedding_blob({"image_emb": img, "text_emb": txt}, dtype, fmt))

    rows = []
    for dtype, fmt in FORMATS:
        base = size(num_augs, 1 + num_syn, dtype, fmt)
        per_aug = (size(num_augs + 8, 1 + num_syn, dtype, fmt) - base) / 8
        per_txt = (size(num_augs, 1 + num_syn + 8, dtype, fmt) - base) / 8
        rows.append({"dtype": dtype, "format": fmt, "per_sample": base, "per_aug": per_aug, "per_caption": per_txt})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32, help="input samples (world, 64 px)")
    parser.add_argument("--shard-size", type=int, default=16, help="samples per input shard")
    parser.add_argument("--num-augs", type=int, default=10, help="augmentations per sample")
    parser.add_argument("--num-syn", type=int, default=5, help="synthetic captions per sample")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"{args.samples} samples, N={args.num_augs}, S={args.num_syn}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        res = throughput(Path(tmp), args)
        meta = metadata_sizes(res["out"], args.num_augs, args.num_syn)
    n = res["samples"]
    print(f"generation: {n} samples in {res['wall_s']:.1f} s wall = {n / res['wall_s']:.2f} samples/s; "
          f"CPU {res['cpu_s']:.1f} s = {n / res['cpu_s']:.2f} samples per CPU-second")
    print("per-sample stage times (s):", json.dumps({k: round(v, 4) for k, v in res["per_sample_stage_s"].items()}))
    print(f"paug.json {meta['paug_per_aug']:.1f} B per augmentation; syn.json {meta['syn_per_caption']:.1f} B "
          "per caption")
    for dim in (sum(res["dims"]), 1536):
        print(f"\nembedding member, D = {dim}, N = {args.num_augs}, S = {args.num_syn}:")
        print("| dtype | member | bytes per sample | bytes per augmentation | bytes per caption |")
        print("|---|---|---|---|---|")
        for row in storage(dim, args.num_augs, args.num_syn):
            print(f"| {row['dtype']} | {row['format']} | {row['per_sample']:,} | {row['per_aug']:,.0f} | "
                  f"{row['per_caption']:,.0f} |")


if __name__ == "__main__":
    main()
