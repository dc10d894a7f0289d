"""Synthetic captions: nucleus sampling (top-p 0.9, temperature 1) with a LightCap or an open_clip CoCa model,
cut at the first ".".

Each image samples from its own generator seeded from (seed, sample key), so its captions do not depend on
which other images share the batch or on the process that handles it. A degenerate caption
(`caption_quality.degenerate_reason`) is re-drawn up to `--caption-redraws` times from seeds derived from its image's
seed; if every re-draw is degenerate too, the first draw is kept. Both cases are counted.

A CoCa samples as DataCompDR's captioning script calls open_clip (`generate(images, generation_type="top_p",
top_p=0.9, fixed_output_length=True)`: up to 30 ids, end token blocked for the first 5), each image under its own
seed through torch's default generator, which open_clip's sampler draws from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from edgevl.errors import ConfigError
from edgevl.io import sha256_file
from edgevl.models.checkpoint import weights_file
from edgevl.reinforce.caption_quality import RULES, degenerate_reason
from edgevl.reinforce.inputs import seed_for
from edgevl.reinforce.teachers import autocast

COCA_SEQ_LEN = 30  # open_clip's default `seq_len`, which DataCompDR keeps (less for a model with a shorter context)


def syn_key(index: int) -> str:
    """The `syn.json` key of captioner `index`: `syn_text` for the first (as DataCompDR), then `syn_text_1`, ..."""
    return "syn_text" if index == 0 else f"syn_text_{index}"


def cut_caption(text: str) -> str:
    """The reference post-processing: keep the text before the first "." and strip surrounding space."""
    return text.split(".", 1)[0].strip()


def degenerate_counts(counts: Counter) -> dict[str, int]:
    """The `detected`, `redrawn` and `kept` degenerate-caption counts of `counts`, then the first draws `detected`
    per rule of `caption_quality.RULES` (0 when absent), in that order."""
    return {kind: counts[kind] for kind in ("detected", "redrawn", "kept", *RULES)}


def redraw_seed(seed: int, index: int, attempt: int) -> int:
    """The seed of re-draw `attempt` (1, 2, ...) of caption `index` of the image whose captions use `seed`."""
    return seed_for(seed, str(index), f"redraw_{attempt}")


class Captioner:
    """A caption model with the synthetic-caption recipe; `load_captioner` picks LightCap or CoCa from the spec."""

    family = ""

    def __init__(self, spec: str, weights: str | Path, device: torch.device, precision: str, top_p: float,
                 temperature: float) -> None:
        self.spec, self.weights = spec, weights
        self.weights_sha256 = sha256_file(weights_file(weights))
        self.device, self.precision = device, precision
        self.top_p, self.temperature = top_p, temperature

    def describe(self) -> dict[str, Any]:
        """The manifest entry of the captioner and its sampling settings."""
        return {
            "name": self.spec,
            "family": self.family,
            "weights": str(self.weights),
            "weights_sha256": self.weights_sha256,
            "generation": "top_p",
            "top_p": self.top_p,
            "temperature": self.temperature,
            "cut_at": ".",
            **self.describe_model(),
        }

    def describe_model(self) -> dict[str, Any]:
        """The manifest fields of the model itself (name, image size, token limit)."""
        raise NotImplementedError

    def sample(self, images: Sequence[Image.Image], seeds: Sequence[int], num_samples: int) -> list[list[str]]:
        """`num_samples` captions per image; image i draws from a generator seeded with `seeds[i]`."""
        raise NotImplementedError

    def sample_checked(self, images: Sequence[Image.Image], seeds: Sequence[int], num_samples: int, redraws: int,
                       counts: Counter) -> list[list[str]]:
        """`sample` with each degenerate caption re-drawn up to `redraws` times; adds to `counts` the captions
        `detected` degenerate (also per rule), `redrawn` (replaced by a good re-draw) and `kept` (every re-draw
        degenerate too: the first draw stays)."""
        captions = self.sample(images, seeds, num_samples)
        reasons = {(i, j): degenerate_reason(text) for i, row in enumerate(captions) for j, text in enumerate(row)}
        pending = [ij for ij, reason in reasons.items() if reason]
        counts["detected"] += len(pending)
        counts.update(reasons[ij] for ij in pending)
        for attempt in range(1, redraws + 1):
            if not pending:
                break
            drawn = self.sample([images[i] for i, _ in pending],
                                [redraw_seed(seeds[i], j, attempt) for i, j in pending], 1)
            still = []
            for (i, j), (text,) in zip(pending, drawn):
                if degenerate_reason(text):
                    still.append((i, j))
                else:
                    captions[i][j] = text
            counts["redrawn"] += len(pending) - len(still)
            pending = still
        counts["kept"] += len(pending)
        return captions


class LightCapCaptioner(Captioner):
    """A LightCap model (`MODEL:WEIGHTS` or a model folder) on its fast decoding path.

    The first sampled token may be neither EOS nor "." so no caption comes out empty (open_clip's CoCa
    `generate` likewise blocks EOS before `min_seq_len`).
    """

    family = "lightcap"

    def __init__(self, spec: str, device: torch.device, precision: str = "fp32", top_p: float = 0.9,
                 temperature: float = 1.0) -> None:
        from edgevl.data.transforms import ImageTransform
        from edgevl.fast import optimize_captioner
        from edgevl.models.factory import LOCAL_DIR, parse_model_spec
        from edgevl.models.lightcap.backbones import warn_if_untrained
        from edgevl.models.lightcap.model import create_lightcap

        name, weights = parse_model_spec(spec, "captioner")
        model = create_lightcap(name, weights)
        self.backbone_trained = not warn_if_untrained(model.backbone, f"captioner {spec!r}")
        self.model = optimize_captioner(model).to(device).eval()
        super().__init__(spec, weights or name.removeprefix(LOCAL_DIR), device, precision, top_p, temperature)
        self.transform = ImageTransform(self.model.config.preprocess)
        period = self.model.vocab.period_id
        self.stop_ids = sorted({self.model.eos_id} | ({period} if period is not None else set()))

    def describe_model(self) -> dict[str, Any]:
        """Model name, token limit, image size and whether its backbone was trained."""
        return {"model": self.model.config.name, "max_tokens": self.model.max_new_tokens,
                "image_size": self.model.config.image_size, "backbone_trained": self.backbone_trained}

    @torch.inference_mode()
    def sample(self, images: Sequence[Image.Image], seeds: Sequence[int], num_samples: int) -> list[list[str]]:
        """`num_samples` captions per image; image i draws from a generator seeded with `seeds[i]`."""
        from edgevl.models.lightcap.decoding import nucleus_probs

        model, batch = self.model, len(images)
        pixels = self.transform.batch(images).to(self.device)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        with autocast(self.device, self.precision):
            state = model.start(pixels)
        rows = torch.arange(batch, device=self.device).repeat_interleave(num_samples)
        state = state.select(rows)
        n = batch * num_samples
        tokens = torch.full((n,), model.bos_id, dtype=torch.long, device=self.device)
        done = torch.zeros(n, dtype=torch.bool)
        stops = torch.tensor(self.stop_ids)
        out = []
        for step in range(model.max_new_tokens):
            with autocast(self.device, self.precision):
                log_probs = model.step(state, tokens).float().cpu()
            if step == 0:
                log_probs[:, stops] = float("-inf")
            probs = nucleus_probs(log_probs / self.temperature, self.top_p)
            drawn = torch.cat([
                torch.multinomial(probs[i * num_samples:(i + 1) * num_samples], 1, generator=gen).squeeze(1)
                for i, gen in enumerate(generators)
            ])
            drawn = torch.where(done, model.eos_id, drawn)
            out.append(drawn)
            done |= torch.isin(drawn, stops)
            if bool(done.all()):
                break
            tokens = drawn.to(self.device)
        ids = torch.stack(out, 1).tolist()
        texts = [cut_caption(model.vocab.decode(row)) for row in ids]
        return [texts[i * num_samples:(i + 1) * num_samples] for i in range(batch)]


class CocaCaptioner(Captioner):
    """An open_clip CoCa (`coca_ViT-L-14:TAG`, `MODEL:FILE`, `hf-hub:ORG/REPO` or a model folder) sampling with
    DataCompDR's settings; its ids are decoded with the CLIP tokenizer and cleaned as ml-mobileclip does
    (`edgevl.captioning.decode_captions`)."""

    family = "coca"

    def __init__(self, model: torch.nn.Module, spec: str, device: torch.device, precision: str = "fp32",
                 top_p: float = 0.9, temperature: float = 1.0) -> None:
        from edgevl.data.transforms import ImageTransform
        from edgevl.models.factory import preprocess_cfg_for
        from edgevl.tokenizer import get_tokenizer

        vocab = model.text_decoder.text_projection.shape[1]
        self.tokenizer = get_tokenizer(context_length=model.context_length)
        if vocab != self.tokenizer.vocab_size:
            raise ConfigError(f"captioner {spec!r} has a {vocab}-token vocabulary; synthetic captions are decoded with "
                              f"the CLIP tokenizer ({self.tokenizer.vocab_size} tokens)")
        self.model = model.to(device).eval()
        self.seq_len = min(COCA_SEQ_LEN, model.max_input_ids + 1)
        super().__init__(spec, weights_file(model.pretrained_path), device, precision, top_p, temperature)
        self.preprocess = preprocess_cfg_for(model)
        self.transform = ImageTransform(self.preprocess)

    def describe_model(self) -> dict[str, Any]:
        """Model config name, token limit and image size."""
        return {"model": self.model.model_name or self.spec, "max_tokens": self.seq_len,
                "image_size": self.preprocess.size}

    @torch.inference_mode()
    def sample(self, images: Sequence[Image.Image], seeds: Sequence[int], num_samples: int) -> list[list[str]]:
        """`num_samples` captions per image; image i draws under `torch.manual_seed(seeds[i])`."""
        from edgevl.captioning import decode_captions

        pixels = self.transform.batch(images).to(self.device)
        out = []
        for image, seed in zip(pixels, seeds):
            with torch.random.fork_rng(devices=[]), autocast(self.device, self.precision):
                torch.manual_seed(int(seed))
                ids = self.model.generate(image[None], generation_type="top_p", top_p=self.top_p,
                                          temperature=self.temperature, seq_len=self.seq_len,
                                          fixed_output_length=True, samples_per_image=num_samples)
            out.append(decode_captions(ids, cut_at_period=True))
        return out


def load_captioner(spec: str, device: torch.device, precision: str = "fp32", top_p: float = 0.9,
                   temperature: float = 1.0) -> Captioner:
    """The captioner a `--captioner` spec names: a CoCa when it resolves to an open_clip model config with a
    `multimodal_cfg` (a registered name, an `hf-hub:` repository or a folder with `open_clip_config.json`), else
    a LightCap."""
    from edgevl.captioning import is_coca_spec
    from edgevl.models.coca import CoCa
    from edgevl.models.factory import LOCAL_DIR, create_model, parse_model_spec
    from edgevl.models.registry import list_models
    from edgevl.run_layout import CONFIG_NAME

    name, weights = parse_model_spec(spec, "captioner", named_weights=True)
    model = create_model(name, weights) if is_coca_spec(name) else None
    if isinstance(model, CoCa):
        return CocaCaptioner(model, spec, device, precision, top_p, temperature)
    if model is not None or name in list_models() or (Path(name.removeprefix(LOCAL_DIR)) / CONFIG_NAME).is_file():
        raise ConfigError(f"captioner {spec!r} is a CLIP model without a caption decoder; use a CoCa "
                          "(e.g. coca_ViT-L-14:TAG) or a LightCap")
    return LightCapCaptioner(spec, device, precision, top_p, temperature)
