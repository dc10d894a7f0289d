"""Training step time: plain CLIP vs reinforced (stored teacher outputs) vs online distillation.

Same student, batch and optimizer in all three; only the loss inputs differ. Online distillation runs a
2-teacher ensemble and (optionally) a LightCap captioner inside the step, which is the cost that dataset
reinforcement moves offline. Batches are pre-built tensors, so data loading is excluded for every mode.
Modes are interleaved round by round and medians reported, since the shared CPU drifts.

    python benchmarks/train_step.py --student world-student-mci --batch-size 32 --steps 5 --rounds 3

The paper's setting needs no downloads with `--random-weights` (a step costs the same FLOPs whatever the weights
are): two ViT-L/14 teachers and a CoCa-ViT-L/14-sized captioner (`coca-l14-sized`, see `sized_captioners.py`)
online; the student of the paper's timing table is ViT-B/16 with the Base text tower, MobileCLIP-S0 is edgevl's.

    python benchmarks/train_step.py --student ViT-B-16 --teachers ViT-L-14,ViT-L-14-quickgelu \
        --captioner coca-l14-sized --random-weights --batch-size 8 --steps 2 --rounds 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from edgevl.data.readers.reinforced import ReinforcedSample
from edgevl.data.transforms import OPENAI_MEAN, OPENAI_STD
from edgevl.distributed import DistInfo
from edgevl.models.factory import create_model, parse_model_spec, preprocess_cfg_for, split_model_specs
from edgevl.models.lightcap.decoding import sample_nucleus
from edgevl.tokenizer import get_tokenizer
from edgevl.train.config import TrainConfig
from edgevl.train.launch import _norm
from edgevl.train.losses import DistillConfig
from edgevl.train.trainer import TeacherEnsemble, Trainer
from sized_captioners import SIZED_CAPTIONERS


class SizedCaptionerTeachers(TeacherEnsemble):
    """TeacherEnsemble whose captioner is a random-weight sized baseline: one nucleus sample (top-p 0.9) of up to 20
    tokens per image, as `TeacherEnsemble.captions` does with LightCap; token ids become words of `CAPTIONS`."""

    @torch.no_grad()
    def captions(self, images: torch.Tensor, seed: int) -> list[str]:
        pixels = self._pixels(images, self.captioner_norm)
        rows = sample_nucleus(self.captioner, self.captioner.start(pixels), len(images), 1, top_p=0.9,
                              max_new_tokens=20, generator=torch.Generator().manual_seed(seed))
        words = " ".join(CAPTIONS).split()
        return [" ".join(words[t % len(words)] for t in row[0].tokens) or "a photo" for row in rows]


CAPTIONS = ["a red circle on a plain background", "two blue squares", "a green striped triangle at the top",
            "a small yellow star in the center"]


class Batches(Dataset):
    """Random images, real/synthetic caption tokens and unit teacher embeddings (the reinforced layout)."""

    def __init__(self, n: int, size: int, tokenizer, teacher_dim: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
        self.tokens = tokenizer(self.captions)
        self.syn = tokenizer([c + " photo" for c in self.captions])
        self.emb = [F.normalize(torch.randn(n, teacher_dim, generator=g), dim=-1) for _ in range(3)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> ReinforcedSample:
        return ReinforcedSample(key=str(i), image=self.images[i], caption=self.captions[i], tokens=self.tokens[i],
                                syn_tokens=self.syn[i], image_emb=self.emb[0][i], text_emb=self.emb[1][i],
                                syn_text_emb=self.emb[2][i])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="world-student-mci", help="student model config")
    ap.add_argument(
        "--teachers",
        default="",
        help="online teachers as MODEL:WEIGHTS or model folders, comma-separated (default: the shipped world teachers)",
    )
    ap.add_argument(
        "--captioner",
        default="",
        help="online captioner as MODEL:WEIGHTS or a folder (default: the shipped world one; 'none' for no captioner;"
        f" with --random-weights also a bare LightCap preset or a sized baseline: {', '.join(SIZED_CAPTIONERS)})",
    )
    ap.add_argument("--random-weights", action="store_true",
                    help="allow bare model names in --teachers/--captioner, randomly initialised (timing only)")
    ap.add_argument("--batch-size", type=int, default=32, help="samples per step")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = bf16 autocast")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="train with NCHW weights and images (the trainer's default is channels-last)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    student_pp = preprocess_cfg_for(create_model(args.student))
    tokenizer = get_tokenizer(args.student)
    from edgevl.world_models import TEACHER_NAMES, pretrained_dir

    specs = split_model_specs(args.teachers) or tuple(str(pretrained_dir(n)) for n in TEACHER_NAMES)
    need = not args.random_weights
    teacher_models = [create_model(*parse_model_spec(spec, "teacher", require_weights=need)) for spec in specs]
    norms = [_norm(preprocess_cfg_for(m)) for m in teacher_models]
    toks = [get_tokenizer(context_length=m.context_length) for m in teacher_models]
    captioner, cap_norm, teachers_cls = None, None, TeacherEnsemble
    captioner_spec = args.captioner or str(pretrained_dir("captioner"))
    if captioner_spec in SIZED_CAPTIONERS:
        if not args.random_weights:
            raise SystemExit(f"--captioner {captioner_spec} has random weights: add --random-weights")
        captioner, teachers_cls = SIZED_CAPTIONERS[captioner_spec](), SizedCaptionerTeachers
        cap_norm = (224, OPENAI_MEAN, OPENAI_STD)
    elif captioner_spec != "none":
        from edgevl.models.lightcap.model import create_lightcap

        captioner = create_lightcap(*parse_model_spec(captioner_spec, "captioner", require_weights=need)).eval()
        cap_norm = (captioner.config.image_size, tuple(captioner.config.mean), tuple(captioner.config.std))
    teachers = teachers_cls(teacher_models, toks, norms, (student_pp.mean, student_pp.std), None, captioner, cap_norm)
    distill = DistillConfig(teachers.dims, teachers.scales, lam=1.0)
    data = Batches(args.batch_size * (args.steps + 1) * args.rounds * 2, student_pp.size, tokenizer,
                   sum(teachers.dims))

    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("clip", "reinforced", "online-distill"):
            # TrainConfig only validates teacher specs (the in-memory `teachers` run); random ones have no folder
            cfg = TrainConfig(model=args.student, train_data="memory", mode=mode,
                              teachers=[tmp] if args.random_weights else list(specs),
                              batch_size=args.batch_size, steps=10**6, warmup=10, logs=tmp, device="cpu",
                              precision=args.precision, channels_last=args.channels_last)
            torch.manual_seed(0)
            student = create_model(args.student)
            trainers[mode] = Trainer(cfg, student, data, tokenizer=tokenizer, distill=distill,
                                     teachers=teachers if mode == "online-distill" else None, info=DistInfo())
            trainers[mode].train_step()  # warm-up
        times: dict[str, list[float]] = {m: [] for m in trainers}
        for _ in range(args.rounds):
            for mode, trainer in trainers.items():
                for _ in range(args.steps):
                    start = time.perf_counter()
                    trainer.train_step()
                    times[mode].append(time.perf_counter() - start)
    med = {m: statistics.median(t) for m, t in times.items()}
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}, student {args.student}, "
          f"teachers {', '.join(specs)}, captioner {captioner_spec}, {len(times['clip'])} steps/mode, "
          f"{args.precision}, {'channels-last' if args.channels_last else 'NCHW'}"
          + (", random weights" if args.random_weights else ""))
    print("| mode | median step (s) | vs plain |")
    print("|---|---|---|")
    for mode, value in med.items():
        print(f"| {mode} | {value:.3f} | {value / med['clip']:.2f}× |")
    print(f"reinforced / plain = {med['reinforced'] / med['clip']:.2f}×; "
          f"online-distill / reinforced = {med['online-distill'] / med['reinforced']:.2f}×")


if __name__ == "__main__":
    main()
