"""The training loop: a plain, readable step-based loop (nanoGPT-like) for the three training modes.

- `clip`: symmetric InfoNCE on (image, caption) batches.
- `reinforced`: the multi-modal reinforced loss on stored teacher embeddings and synthetic captions (no
  teacher compute during training).
- `online-distill`: the same loss, with the teachers (and a captioner for synthetic captions) run inside the
  step: the baseline whose cost dataset reinforcement removes.

One step = `accum_freq` micro-batches of `batch_size` per rank, then gradient clipping, AdamW, the logit-scale
clamp to ln 100 and the optional EMA update. Checkpoints hold everything needed to continue bit-for-bit.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgevl.distributed import DistInfo, barrier, init_distributed
from edgevl.errors import CheckpointError, EdgevlError
from edgevl.fast import trim_causal_padding
from edgevl.locks import output_lock
from edgevl.models.checkpoint import CONFIG_NAME, folder_config
from edgevl.progress import Progress
from edgevl.run_layout import MODEL_DIR
from edgevl.train.checkpoint import (
    load_training_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    save_model_folder,
    set_rng_state,
)
from edgevl.train.config import TrainConfig
from edgevl.train.data import Batch, BatchStream
from edgevl.train.distributed import all_reduce_mean
from edgevl.train.ema import ModelEMA
from edgevl.train.evaluate import evaluate
from edgevl.train.losses import DistillConfig, clip_loss, distill_terms, reinforced_loss
from edgevl.train.run_folder import check_resume_settings, start_run_folder
from edgevl.train.schedule import cosine_lr, set_lr

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.LocalResponseNorm)
HEAD_PARAMS = ("logit_scale", "text_projection", "proj")  # final name parts of projections and the scale
Tokenizer = Callable[[str | list[str]], torch.Tensor]


class NonFiniteLossError(EdgevlError):
    """The loss became NaN or infinite; the state before the failing step was checkpointed."""


def param_groups(model: nn.Module, wd: float, pretrained_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices/kernels only (not norms, biases, gains, logit scale).

    With `pretrained_lr_scale` != 1 the towers' bodies get `lr_scale` = that factor, while the projections
    (`text_projection`, ViT `proj`), anything under a `head` module and the logit scale keep the full LR.
    """
    no_decay: set[str] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            no_decay.update(f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters())
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (name in no_decay or p.ndim < 2 or name.endswith("bias") or "logit_scale" in name)
        parts = name.split(".")
        head = parts[-1] in HEAD_PARAMS or "head" in parts[:-1]
        scale = 1.0 if head else pretrained_lr_scale
        groups.setdefault((decay, scale), []).append(p)
    return [
        {"params": params, "weight_decay": wd if decay else 0.0, "lr_scale": scale}
        for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))
    ]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TeacherEnsemble:
    """Online teachers (edgevl CLIP models) plus an optional captioner, run without gradients in the step.

    `student_norm` is the (mean, std) the batch images were normalized with; each teacher and the captioner
    gets the images un-normalized, resized to its size and normalized its own way.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        tokenizers: Sequence[Tokenizer],
        norms: Sequence[tuple[int, Sequence[float], Sequence[float]]],
        student_norm: tuple[Sequence[float], Sequence[float]],
        scales: Sequence[float] | None = None,
        captioner: Any = None,
        captioner_norm: tuple[int, Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        self.models = [trim_causal_padding(m.eval().requires_grad_(False)) for m in models]
        self.tokenizers, self.norms, self.student_norm = list(tokenizers), list(norms), student_norm
        self.captioner, self.captioner_norm = captioner, captioner_norm
        dims = tuple(int(m.encode_text(tokenizers[i]("a")).shape[-1]) for i, m in enumerate(self.models))
        own = tuple(float(m.logit_scale.detach().exp()) for m in self.models)
        self.dims, self.scales = dims, tuple(scales) if scales else own

    def _pixels(self, images: torch.Tensor, norm: tuple[int, Sequence[float], Sequence[float]]) -> torch.Tensor:
        def col(v: Sequence[float]) -> torch.Tensor:
            return torch.tensor(v, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)

        mean, std = self.student_norm
        size, t_mean, t_std = norm
        raw = images * col(std) + col(mean)
        if raw.shape[-1] != size or raw.shape[-2] != size:
            raw = F.interpolate(raw, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        return (raw - col(t_mean)) / col(t_std)

    def captions(self, images: torch.Tensor, seed: int) -> list[str]:
        """One nucleus-sampled synthetic caption per image (top-p 0.9, as in the reference generator)."""
        from edgevl.captioning import DecodeOptions, caption_tensor

        assert self.captioner is not None and self.captioner_norm is not None
        pixels = self._pixels(images, self.captioner_norm)
        rows = caption_tensor(self.captioner, pixels, DecodeOptions(num_samples=1, top_p=0.9, seed=seed))
        return [row[0] or "a photo" for row in rows]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated normalized teacher embeddings of images and texts: ([B, Σd], [T, Σd])."""
        img, txt = [], []
        for model, tok, norm in zip(self.models, self.tokenizers, self.norms):
            img.append(model.encode_image(self._pixels(images, norm), normalize=True).float())
            txt.append(model.encode_text(tok(list(texts)).to(images.device), normalize=True).float())
        return torch.cat(img, dim=1), torch.cat(txt, dim=1)


class Trainer:
    """Owns the model, optimizer, data stream and run folder; `fit()` trains to `cfg.steps`."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train_data: Any,
        *,
        tokenizer: Tokenizer | None = None,
        val_data: Any = None,
        distill: DistillConfig | None = None,
        teachers: TeacherEnsemble | None = None,
        info: DistInfo | None = None,
    ) -> None:
        self.cfg = cfg.validate()
        self.info = info or init_distributed(cfg.device)
        self.device = self.info.device
        if self.device.type == "cpu":
            # x86 computes on subnormal floats 10-100x slower; MCi's 1e-5 layer scales make them early in training
            torch.set_flush_denormal(True)
        self.tokenizer, self.val_data, self.teachers = tokenizer, val_data, teachers
        if cfg.mode != "clip" and distill is None:
            raise EdgevlError(f"--mode {cfg.mode} needs the teacher layout (a DistillConfig)")
        self.distill = distill
        self.run_dir = cfg.run_dir
        self.model = model.to(self.device)
        if cfg.channels_last:
            # oneDNN's channels-last depthwise-conv backward is 2-6x faster than the NCHW kernels on CPU
            model.to(memory_format=torch.channels_last)
        if cfg.lock_image:
            model.lock_image_tower(unlocked_groups=cfg.lock_image_unlocked_groups)
        if cfg.lock_text:
            model.lock_text_tower(unlocked_layers=cfg.lock_text_unlocked_layers)
        if cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        trim_causal_padding(model)  # exact: the loss never sees positions after a caption's end token
        model.train()
        self.groups = param_groups(model, cfg.wd, cfg.pretrained_lr_scale if cfg.pretrained else 1.0)
        if not self.groups:
            raise EdgevlError("no trainable parameters: both towers are locked")
        # the fused kernel updates each parameter in one pass instead of a dozen elementwise ops
        self.optimizer = torch.optim.AdamW(self.groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.ema = ModelEMA(model, cfg.ema) if cfg.ema else None
        self.ddp: nn.Module = model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
        self.stream = BatchStream(
            train_data, cfg.batch_size, seed=cfg.seed, rank=self.info.rank,
            world_size=self.info.world_size, workers=cfg.workers,
        )
        self.step = 0
        self._tb = None

    # ----------------------------------------------------------------------------------- loss
    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's pixels (channels-last when configured) and caption tokens on the training device."""
        image = batch["image"].to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image, batch["tokens"].to(self.device, non_blocking=True)

    def forward_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss (and its parts) of one micro-batch for the configured mode."""
        image, tokens = self.batch_inputs(batch)
        n = tokens.shape[0]
        with self._autocast():
            if self.cfg.mode == "clip":
                img, txt, scale = self.ddp(image, tokens)
                return {"loss": clip_loss(img, txt, scale)}
            assert self.distill is not None
            if self.cfg.mode == "reinforced":
                t_img, t_real = batch["image_emb"].to(self.device), batch["text_emb"].to(self.device)
                syn, t_syn = None, None  # teacher-only data: the real-caption terms only
                if "syn_tokens" in batch:
                    syn, t_syn = batch["syn_tokens"].to(self.device), batch["syn_text_emb"].to(self.device)
            else:
                assert self.teachers is not None
                texts = list(batch["caption"])
                syn_texts = (self.teachers.captions(image, seed=self.step) if self.teachers.captioner else [])
                t_img, t_txt = self.teachers.embed(image, texts + syn_texts)
                t_real, t_syn = t_txt[:n], t_txt[n:]
                if not syn_texts:  # no captioner: distil on the real captions only
                    img, txt, scale = self.ddp(image, tokens)
                    clip, kd = distill_terms(img, txt, scale, t_img, t_real, self.distill)
                    lam = self.distill.lam
                    return {"loss": (1 - lam) * clip + lam * kd, "clip_real": clip, "kd_real": kd}
                syn = self.tokenizer(syn_texts).to(self.device)
            if syn is None:
                img, txt, scale = self.ddp(image, tokens)
                return reinforced_loss(img, txt, None, scale, t_img, t_real, None, self.distill)
            img, txt, scale = self.ddp(image, torch.cat([tokens, syn[:, : tokens.shape[1]]]))
            return reinforced_loss(img, txt[:n], txt[n:], scale, t_img, t_real, t_syn, self.distill)

    def accumulate_gradients(self, batch: Batch, sync: bool = True) -> dict[str, float]:
        """Forward + backward of one micro-batch (loss divided by `accum_freq`); returns the detached parts.

        `sync=False` skips DDP's gradient all-reduce (all but the last micro-batch of a step).
        """
        no_sync = self.info.distributed and not sync
        with self.ddp.no_sync() if no_sync else nullcontext():
            out = self.forward_loss(batch)
            (out["loss"] / self.cfg.accum_freq).backward()
        return {k: v.detach().float().item() for k, v in out.items()}

    # ----------------------------------------------------------------------------------- step
    def train_step(self) -> dict[str, float]:
        """One optimizer step at `self.step`; raises `NonFiniteLossError` before updating on NaN/Inf."""
        cfg = self.cfg
        lr = cosine_lr(self.step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(cfg.accum_freq):
            parts = self.accumulate_gradients(next(self.stream), sync=micro == cfg.accum_freq - 1)
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value / cfg.accum_freq
        finite = torch.tensor(float(math.isfinite(totals["loss"])), device=self.device)
        if all_reduce_mean(finite).item() < 1.0:
            raise NonFiniteLossError(f"non-finite loss ({totals['loss']}) at step {self.step + 1}")
        if cfg.grad_clip_norm:
            totals["grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm))
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        totals["lr"] = lr
        totals["scale"] = float(self.model.logit_scale.detach().exp())
        return totals

    # ----------------------------------------------------------------------------------- state
    def _state(self, data: dict[str, int], rng: dict[str, Any]) -> dict[str, Any]:
        mine = {"data": data, "rng": rng}
        ranks = [mine]
        if self.info.distributed:
            ranks = [None] * self.info.world_size
            torch.distributed.all_gather_object(ranks, mine)
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": {"step": self.step},
                "ranks": ranks}

    def _folder_files(self, ema: bool) -> dict[str, str]:
        """The `open_clip_config.json` that makes a checkpoint or `model/` a model folder (none for a model the
        factory did not build: it carries no config)."""
        meta = folder_config(self.model, step=self.step, ema=ema)
        return {CONFIG_NAME: json.dumps(meta, indent=2) + "\n"} if meta else {}

    def save(self, data: dict[str, int] | None = None, rng: dict[str, Any] | None = None) -> Path | None:
        """Write checkpoint `step_<step>`, a model folder too (rank 0 writes; every rank contributes its data
        position and RNG)."""
        state = self._state(data or self.stream.state_dict(), rng or rng_state())
        path = None
        if self.info.is_main:
            ema = self.ema.state_dict() if self.ema else None
            path = save_checkpoint(self.run_dir, self.step, self.model.state_dict(), state, ema, self.cfg.keep_last,
                                   files=self._folder_files(ema=False))
        barrier()
        return path

    def save_model(self) -> Path | None:
        """Write `<run>/model/`, the run's model folder: the EMA weights with `--ema`, else the trained ones."""
        files = self._folder_files(ema=self.ema is not None)
        path = None
        if self.info.is_main and files:
            weights = self.ema.state_dict() if self.ema else self.model.state_dict()
            path = save_model_folder(self.run_dir / MODEL_DIR, weights, files)
            print(f"train: model folder {path}{' (EMA weights)' if self.ema else ''}", file=sys.stderr)
        barrier()
        return path

    def load(self, path: Path) -> None:
        """Restore model, optimizer, EMA, step, this rank's data position and RNG from a checkpoint folder."""
        model_state, ema_state, state = load_training_checkpoint(path)
        try:
            self.model.load_state_dict(model_state)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path} does not fit model {self.cfg.model!r}: {exc}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if ema_state is None:
                raise CheckpointError(f"--ema is set but checkpoint {path} has no EMA weights")
            self.ema.load_state_dict(ema_state)
        self.step = int(state["step"])
        ranks = state["ranks"]
        if len(ranks) == self.info.world_size:
            self.stream.load_state_dict(ranks[self.info.rank]["data"])
            set_rng_state(ranks[self.info.rank]["rng"])
        else:  # world size changed: continue at the saved epoch, samples are re-dealt over the new ranks
            self.stream.load_state_dict({"epoch": ranks[0]["data"]["epoch"] + 1, "position": 0})
            seed_everything(self.cfg.seed + 1000 * self.step + self.info.rank)

    # ----------------------------------------------------------------------------------- logging
    def _log(self, record: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, record["step"])

    def _start_run_folder(self) -> None:
        if not self.info.is_main:
            return
        start_run_folder(self.run_dir, self.cfg.to_json(), self.step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:
            self._tb = None

    def run_eval(self) -> dict[str, float]:
        """Evaluate the (EMA, when enabled) model on the held-out data; rank 0 only."""
        metrics: dict[str, float] = {}
        if self.info.is_main and self.val_data is not None and self.tokenizer is not None:
            model = self.model
            if self.ema is not None:
                import copy

                model = copy.deepcopy(self.model)
                model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.ema.state_dict().items()})
            metrics = {f"val/{k}": v for k, v in
                       evaluate(model, self.val_data, self.tokenizer, self.device, self.cfg.eval_samples).items()}
            self._log({"step": self.step, **metrics})
        barrier()
        return metrics

    # ----------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        """Train (resuming first when `cfg.resume` is set) until `cfg.steps`; returns the last metrics."""
        with output_lock(self.run_dir, "train", enabled=self.info.is_main):
            return self._fit()

    def _fit(self) -> dict[str, float]:
        cfg = self.cfg
        if cfg.resume:
            if self.info.is_main:
                check_resume_settings(self.run_dir, json.loads(cfg.to_json()))
            path = resolve_resume(cfg.resume, self.run_dir)
            if path is not None:
                self.load(path)
        if self.step >= cfg.steps:
            if self.info.is_main:
                print(f"edgevl: {self.run_dir} already finished at step {self.step} of {cfg.steps}; nothing to train "
                      "(raise --steps to continue it)", file=sys.stderr)
            return {}
        self._start_run_folder()
        global_batch = cfg.batch_size * cfg.accum_freq * self.info.world_size
        progress = Progress(cfg.steps, desc="train", initial=self.step, enabled=self.info.is_main)
        last: dict[str, float] = {}
        try:
            while self.step < cfg.steps:
                data, rng = self.stream.state_dict(), rng_state()
                start = time.perf_counter()
                try:
                    parts = self.train_step()
                except NonFiniteLossError as exc:
                    path = self.save(data, rng)
                    raise NonFiniteLossError(f"{exc}; the state before it is saved in {path}") from None
                elapsed = time.perf_counter() - start
                last = {f"train/{k}": v for k, v in parts.items() if k not in ("lr", "scale")}
                last.update(lr=parts["lr"], scale=parts["scale"], samples_per_second=global_batch / elapsed,
                            samples_per_second_per_gpu=global_batch / elapsed / self.info.world_size)
                progress.update(samples=global_batch, loss=parts["loss"], lr=parts["lr"])
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log({"step": self.step, "epoch": self.stream.epoch, **last})
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    last.update(self.run_eval())
                if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.steps:
                    self.save()
        finally:
            progress.close()
            if self._tb is not None:
                self._tb.close()
        self.save_model()
        return last
