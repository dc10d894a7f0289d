"""`edgevl train-captioner`: LightCap training on cached frozen-backbone grids.

The frozen backbone is a trained CLIP image tower (`backbone`, see `captioner_backbone`) or the config's own; an
untrained one (a preset's random initialisation) gets a loud warning, as its captions cannot describe images.

A run is up to three phases over one global step counter (so a checkpoint is resumable anywhere):
1. `main` (`steps`): teacher-forced caption cross-entropy of every head + the concept-extractor loss, plus the
   distillation terms when a LightCap teacher is given (hidden-state MSE, attention-map MSE, softened-logit KL).
   A CoCa teacher instead captions the training images once (`caption_teacher`): sequence-level distillation.
2. `ensemble` (`ensemble_steps`, with `ensemble_distill`): sequential ensemble-head distillation; the steps are
   split into one segment per head, and only that head trains (everything else frozen), distilled from teacher
   head h mod H_t so that the student heads learn different targets.
3. `scst` (`scst_steps`): self-critical CIDEr-D optimisation of the ensemble distribution.
Batches are drawn from a generator seeded by (seed, step), so the data order needs no state to resume.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgevl.errors import CheckpointError, ConfigError
from edgevl.io import atomic_write_text
from edgevl.locks import output_lock
from edgevl.models.lightcap.concepts import concept_loss
from edgevl.models.lightcap.model import LightCap
from edgevl.progress import Progress
from edgevl.run_layout import MODEL_DIR
from edgevl.train.caption_teacher import TeacherRecipe, is_caption_teacher, teacher_captions
from edgevl.train.captioner_backbone import ConceptText, with_clip_backbone
from edgevl.train.captioner_config import CaptionerTrainConfig
from edgevl.train.captioner_data import (
    CaptionData,
    caption_ids,
    concept_targets,
    concept_vocabulary,
    load_caption_data,
)
from edgevl.train.captioner_eval import caption_scores
from edgevl.train.captioner_losses import (
    attention_maps,
    caption_cross_entropy,
    cider_rewards,
    kd_attention,
    kd_hidden,
    kd_logits,
    layer_map,
    scst_loss,
    softened_log_probs,
)
from edgevl.train.checkpoint import load_training_checkpoint, resolve_resume, rng_state, save_checkpoint, set_rng_state
from edgevl.train.run_folder import check_resume_settings, start_run_folder
from edgevl.train.schedule import cosine_lr, set_lr

PROJECTION_PREFIX = "kd_projection."


@dataclass(frozen=True)
class Phase:
    """Where a global step falls: phase name, step within the phase segment, segment length, active head."""

    name: str
    step: int
    length: int
    head: int = -1


def phase_of(cfg: CaptionerTrainConfig, step: int, num_heads: int) -> Phase:
    """The phase of 0-based global `step` (main, then one ensemble segment per head, then scst)."""
    if step < cfg.steps:
        return Phase("main", step, cfg.steps)
    step -= cfg.steps
    if step < cfg.ensemble_total:
        bounds = [cfg.ensemble_total * h // num_heads for h in range(num_heads + 1)]
        head = max(h for h in range(num_heads) if bounds[h] <= step)
        return Phase("ensemble", step - bounds[head], bounds[head + 1] - bounds[head], head)
    return Phase("scst", step - cfg.ensemble_total, cfg.scst_steps)


def build_student(cfg: CaptionerTrainConfig, train_captions: list[str], teacher: LightCap | None,
                  backbone: LightCap, concept_text: ConceptText | None = None) -> LightCap:
    """The student LightCap: a preset/JSON config gets the teacher's (or the training captions') vocabulary and
    concepts and `backbone`'s frozen trunk; a model folder is fine-tuned as is. Ablation switches applied.
    `concept_text` embeds the concept names of a new vocabulary (the `--backbone` model's text tower)."""
    changes: dict[str, Any] = {}
    if cfg.no_concepts:
        changes["use_concepts"] = False
    if cfg.no_modulator:
        changes["use_modulator"] = False
    if cfg.heads is not None:
        changes["num_heads"] = cfg.heads
    if Path(cfg.config).is_dir():
        if changes.get("num_heads", backbone.config.num_heads) != backbone.config.num_heads:
            raise ConfigError(f"--heads cannot change the head count of the trained model {cfg.config!r}")
        model = backbone
        model.config = model.config.replace(**changes)
    else:
        config = backbone.config.replace(**changes)
        if teacher is not None:
            vocab, concepts = teacher.vocab, teacher.concept_names
        else:
            from edgevl.models.lightcap.vocab import WordVocab

            vocab = WordVocab.from_captions(train_captions)
            concepts = concept_vocabulary(train_captions, config.num_concepts)
        model = LightCap(config, vocab, concepts)
        model.backbone.load_state_dict(backbone.backbone.state_dict())
        if teacher is not None and teacher.concepts.text_embeddings.shape == model.concepts.text_embeddings.shape:
            model.concepts.set_text_embeddings(teacher.concepts.text_embeddings)
        elif concept_text is not None:
            model.set_concepts(model.concept_names, concept_text(model.concept_names))
    if teacher is not None and model.vocab.words != teacher.vocab.words:
        raise ConfigError("the student and the teacher must share the caption vocabulary for logit distillation")
    return model


def same_backbone(a: LightCap, b: LightCap) -> bool:
    """True when two captioners compute the same grid features (same preprocessing and frozen weights)."""
    if a.config.preprocess != b.config.preprocess or a.config.backbone != b.config.backbone:
        return False
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class CaptionerTrainer:
    """Owns model, optional teacher, cached data, optimizer and run folder; `fit()` trains all phases."""

    def __init__(self, cfg: CaptionerTrainConfig, model: LightCap | None = None, *,
                 train: CaptionData | None = None, val: CaptionData | None = None) -> None:
        """`train`/`val` are already cached grids of `cfg.train_data`/`cfg.val_data` for this model's backbone
        (experiments that train many captioners on one backbone read the data once)."""
        from edgevl.models.lightcap.backbones import warn_if_untrained
        from edgevl.models.lightcap.model import create_lightcap
        from edgevl.train.trainer import seed_everything

        self.cfg = cfg.validate()
        if train is None and not cfg.train_data:
            raise ConfigError("--train-data is required")
        if model is not None and cfg.backbone:
            raise ConfigError("--backbone builds the model; it cannot be combined with a given LightCap model")
        self.run_dir = Path(cfg.out)
        coca_teacher = is_caption_teacher(cfg.teacher)
        if coca_teacher and cfg.ensemble_distill:
            raise ConfigError("--ensemble-distill distils heads from a LightCap teacher's heads; a CoCa teacher "
                              "gives captions only")
        use_lightcap = cfg.teacher and not coca_teacher
        self.teacher = create_lightcap(cfg.teacher).requires_grad_(False) if use_lightcap else None
        seed_everything(0)  # an untrained preset's frozen backbone is the same in every run (seed-independent)
        base = model if model is not None else create_lightcap(cfg.config)
        concept_text = None
        if cfg.backbone:
            base, concept_text = with_clip_backbone(base, cfg.backbone, fine_tune=Path(cfg.config).is_dir())
        warn_if_untrained(base.backbone, f"captioner --config {cfg.config!r}" if model is None else "the captioner")
        seed_everything(cfg.seed)
        references = None
        if coca_teacher and train is None:
            with output_lock(self.run_dir, "train-captioner"):
                references = teacher_captions(cfg.teacher, cfg.train_data, self.run_dir, limit=cfg.train_samples,
                                              recipe=TeacherRecipe(beam=cfg.teacher_beam, samples=cfg.teacher_samples),
                                              seed=cfg.seed, progress=cfg.progress)
        self.train = train or load_caption_data(cfg.train_data, base, limit=cfg.train_samples, progress=cfg.progress,
                                                references=references)
        captions = [c for refs in self.train.references for c in refs]
        self.model = model if model is not None else build_student(cfg, captions, self.teacher, base, concept_text)
        self.model.train()
        self.val = val
        if val is None and cfg.val_data:
            self.val = load_caption_data(cfg.val_data, self.model, limit=cfg.val_samples, progress=cfg.progress,
                                         require_captions=False)
        self.teacher_grids = None
        if self.teacher is not None:
            self.teacher_grids = (self.train.grids if same_backbone(self.model, self.teacher) else
                                  load_caption_data(cfg.train_data, self.teacher, limit=cfg.train_samples).grids)
        self.targets = concept_targets(self.model.concept_names, self.train.references)
        self.projection = None
        if self.teacher is not None:
            hidden, t_hidden = self.model.config.hidden, self.teacher.config.hidden
            self.projection = nn.Identity() if hidden == t_hidden else nn.Linear(hidden, t_hidden)
            self.pairs = layer_map(self.model.config.layers, self.teacher.config.layers)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.projection is not None:
            params += list(self.projection.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.wd)
        self.scorer = None
        self.step = 0

    # ------------------------------------------------------------------------------------------ batches
    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)

    def batch(self, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Image indices [size] and their teacher-forcing ids [size, T + 1] (one random reference each)."""
        index = torch.randint(len(self.train), (size,), generator=gen)
        refs = [self.train.references[i] for i in index.tolist()]
        picks = [refs[j][int(torch.randint(len(refs[j]), (1,), generator=gen))] for j in range(size)]
        return index, caption_ids(self.model.vocab, picks, self.model.config.max_caption_tokens)

    @staticmethod
    def forward(model: LightCap, grid: torch.Tensor, ids: torch.Tensor, states: list | None = None
                ) -> tuple[torch.Tensor, int]:
        """Teacher-forced per-head logits [H, B, T, V] from cached grids, and the prefix length."""
        prefix, _ = model.encode_grid(grid)
        hidden = model.fusion(prefix, model.embed_caption(ids, 0), states)
        return model.head(hidden, model.fusion.word_embeddings.weight), prefix.shape[1]

    # ------------------------------------------------------------------------------------------ losses
    def main_loss(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Caption CE + concept BCE (+ distillation terms with a teacher) on one batch."""
        cfg, model = self.cfg, self.model
        index, ids = self.batch(cfg.batch_size, gen)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        mask = targets != model.vocab.pad_id
        grid = self.train.grids[index]
        states: list[torch.Tensor] | None = [] if self.teacher is not None else None
        logits, prefix = self.forward(model, grid, inputs, states)
        out = {"caption": caption_cross_entropy(logits, targets, mask)}
        loss = out["caption"]
        if model.config.use_concepts and cfg.concept_weight:
            out["concept"] = concept_loss(model.concepts.concept_logits(grid), self.targets[index])
            loss = loss + cfg.concept_weight * out["concept"]
        if self.teacher is not None:
            assert states is not None and self.teacher_grids is not None
            t_states: list[torch.Tensor] = []
            with torch.no_grad():
                t_logits, t_prefix = self.forward(self.teacher, self.teacher_grids[index], inputs, t_states)
            if cfg.kd_logits:
                soft = softened_log_probs(t_logits, cfg.kd_temperature)
                out["kd_logits"] = kd_logits(logits, soft, mask, cfg.kd_temperature)
                loss = loss + cfg.kd_logits * out["kd_logits"]
            if cfg.kd_hidden:
                out["kd_hidden"] = kd_hidden(states, t_states, self.projection, self.pairs, (prefix, t_prefix), mask)
                loss = loss + cfg.kd_hidden * out["kd_hidden"]
            if cfg.kd_attn:
                layers = [(s - 1, t - 1) for s, t in self.pairs[1:]]
                s_maps = [attention_maps(model.fusion.layers[s], states[s], prefix) for s, _ in layers]
                with torch.no_grad():
                    t_maps = [attention_maps(self.teacher.fusion.layers[t], t_states[t], t_prefix) for _, t in layers]
                out["kd_attn"] = kd_attention(s_maps, t_maps, mask)
                loss = loss + cfg.kd_attn * out["kd_attn"]
        out["loss"] = loss
        return out

    def ensemble_loss(self, head: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Distil student head `head` alone from teacher head `head mod H_t` (body and other heads frozen)."""
        cfg, model = self.cfg, self.model
        assert self.teacher is not None and self.teacher_grids is not None
        index, ids = self.batch(cfg.batch_size, gen)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        mask = targets != model.vocab.pad_id
        with torch.no_grad():
            prefix, _ = model.encode_grid(self.train.grids[index])
            hidden = model.fusion(prefix, model.embed_caption(inputs, 0))
            t_logits, _ = self.forward(self.teacher, self.teacher_grids[index], inputs)
        active = model.head.heads[head]
        logits = (F.linear(active(hidden), model.fusion.word_embeddings.weight.detach()) + active.bias)[None]
        t_head = t_logits[head % t_logits.shape[0]][None]
        out = {"caption": caption_cross_entropy(logits, targets, mask),
               "kd_logits": kd_logits(logits, softened_log_probs(t_head, cfg.kd_temperature), mask,
                                      cfg.kd_temperature)}
        out["loss"] = out["caption"] + max(cfg.kd_logits, 1.0) * out["kd_logits"]
        return out

    def scst_loss(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Self-critical step: sample n captions per image, CIDEr-D rewards, mean-of-others baseline."""
        from edgevl.eval.captioning import CiderD, ptb_tokenize
        from edgevl.models.lightcap.decoding import sample_nucleus

        cfg, model = self.cfg, self.model
        if self.scorer is None:  # document frequencies of the training references
            self.tokenized_refs = [[ptb_tokenize(r) for r in refs] for refs in self.train.references]
            self.scorer = CiderD(self.tokenized_refs)
        n = cfg.scst_samples
        index = torch.randint(len(self.train), (max(1, cfg.batch_size // n),), generator=gen)
        grid = self.train.grids[index]
        with torch.no_grad():
            rows = sample_nucleus(model, model.start_grid(grid), len(index), n, cfg.scst_top_p,
                                  max_new_tokens=model.config.max_caption_tokens, generator=gen)
        hyps = [h for row in rows for h in row]
        texts = [model.vocab.decode(h.tokens) for h in hyps]
        refs = [self.tokenized_refs[i] for i in index.tolist() for _ in range(n)]
        rewards = torch.from_numpy(cider_rewards(self.scorer, texts, refs)).float().view(len(index), n)
        width = max(len(h.tokens) + 1 for h in hyps)
        ids = torch.full((len(hyps), width + 1), model.vocab.pad_id, dtype=torch.long)
        for row, h in enumerate(hyps):
            seq = [model.vocab.bos_id, *h.tokens, *([model.vocab.eos_id] if h.finished else [])]
            ids[row, : len(seq)] = torch.tensor(seq)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        mask = targets != model.vocab.pad_id
        prefix, _ = model.encode_grid(grid.repeat_interleave(n, dim=0))
        hidden = model.fusion(prefix, model.embed_caption(inputs, 0))
        log_probs = model.head.log_probs(hidden, model.fusion.word_embeddings.weight)
        token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return {"loss": scst_loss(token_lp, mask, rewards), "reward": rewards.mean()}

    # ------------------------------------------------------------------------------------------ step
    def train_step(self) -> dict[str, float]:
        """One optimizer step at `self.step` in whatever phase it falls."""
        cfg = self.cfg
        phase = phase_of(cfg, self.step, self.model.config.num_heads)
        gen = self._generator()
        if phase.name == "main":
            lr = cosine_lr(phase.step, cfg.lr, cfg.warmup, phase.length, cfg.min_lr)
            parts = self.main_loss(gen)
        elif phase.name == "ensemble":
            lr = cosine_lr(phase.step, cfg.lr, min(cfg.warmup, phase.length // 4), phase.length, cfg.min_lr)
            parts = self.ensemble_loss(phase.head, gen)
        else:
            lr = cosine_lr(phase.step, cfg.scst_lr, 0, phase.length, cfg.min_lr)
            parts = self.scst_loss(gen)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if not torch.isfinite(parts["loss"]):
            raise ConfigError(f"non-finite loss at step {self.step + 1} ({phase.name}); lower --lr")
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = float(nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)) if cfg.grad_clip_norm else 0.0
        self.optimizer.step()
        self.step += 1
        record = {k: float(v.detach()) for k, v in parts.items()}
        return {**record, "lr": lr, "grad_norm": grad_norm, "phase": phase.name, "head": phase.head}

    # ------------------------------------------------------------------------------------------ state
    def save(self) -> Path:
        """Write checkpoint `step_<step>`: a LightCap model folder (weights, config.json, vocab.json) that also
        holds the training state (optimizer, RNG and the distillation projection, in `state.pt`)."""
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "rng": rng_state()}
        if self.projection is not None:
            state["projection"] = self.projection.state_dict()
        return save_checkpoint(self.run_dir, self.step, self.model.state_dict(), state, None, self.cfg.keep_last,
                               files=self.model.folder_files())

    def load(self, path: Path) -> None:
        """Restore model, distillation projection, optimizer, step and RNG from a checkpoint folder."""
        weights, _, state = load_training_checkpoint(path)
        own = {k: v for k, v in weights.items() if not k.startswith(PROJECTION_PREFIX)}
        # checkpoints before model-folder checkpoints kept the projection in the weights, under a prefix
        projection = state.get("projection") or {k[len(PROJECTION_PREFIX):]: v for k, v in weights.items()
                                                 if k.startswith(PROJECTION_PREFIX)}
        try:
            self.model.load_state_dict(own)
            if self.projection is not None:
                self.projection.load_state_dict(projection)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this captioner run: {exc}") from None
        self.step = int(state["step"])
        set_rng_state(state["rng"])

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


    def evaluate(self, data: CaptionData | None = None, beam: int | None = None) -> dict[str, float]:
        """CIDEr-D / BLEU-4 of decoded captions (greedy or beam) on cached data (default: the val split), and
        the class/colour/shape accuracy of the captions where the data has labels (`caption_scores`)."""
        data = data if data is not None else self.val
        if data is None:
            return {}
        return caption_scores(self.model, data, beam or self.cfg.eval_beam)

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train (resuming first when `cfg.resume` is set) to the last step; writes `out/model` and `result.json`."""
        with output_lock(self.run_dir, "train-captioner"):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        params = dataclasses.asdict(cfg)
        if cfg.resume:
            check_resume_settings(self.run_dir, params)
            path = resolve_resume(cfg.resume, self.run_dir)
            if path is not None:
                self.load(path)
        start_run_folder(self.run_dir, json.dumps(params, indent=1) + "\n", self.step)
        total = cfg.total_steps
        progress = Progress(total, desc="train-captioner", initial=self.step, enabled=cfg.progress)
        start = time.perf_counter()
        last: dict[str, Any] = {}
        try:
            while self.step < total:
                last = self.train_step()
                progress.update(samples=cfg.batch_size, loss=last["loss"])
                if self.step % cfg.log_every == 0 or self.step == total:
                    self._log({"step": self.step, **last})
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.val is not None:
                    self._log({"step": self.step, **{f"val/{k}": v for k, v in self.evaluate().items()}})
                if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == total:
                    self.save()
        finally:
            progress.close()
        self.model.eval().save_pretrained(self.run_dir / MODEL_DIR)
        result = {"steps": self.step, "train_images": len(self.train), "train_seconds": time.perf_counter() - start,
                  "last": last, "val": self.evaluate()}
        atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=1) + "\n")
        return result


def train_captioner(cfg: CaptionerTrainConfig, model: LightCap | None = None, *, train: CaptionData | None = None,
                    val: CaptionData | None = None) -> dict[str, Any]:
    """Run `edgevl train-captioner`; `model` (an untrained or pretrained LightCap) replaces `cfg.config`, and
    `train`/`val` (cached grids for that backbone) replace reading the data specs."""
    return CaptionerTrainer(cfg, model, train=train, val=val).fit()
