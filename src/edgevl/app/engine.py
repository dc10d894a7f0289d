"""The models a photo index is built and searched with, loaded through edgevl's public API.

An `Engine` bundles the CLIP encoders (with their tokenizer and preprocessing), an optional LightCap captioner
and the zero-shot labels of the auto-tags. `ModelSpec` is what the database stores, so `search` and `serve` load
the very models `index` used; `Engine.fingerprint` says when a database was made with something else.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import torch

import edgevl
from edgevl.app.catalog import Catalog
from edgevl.data.transforms import ImageTransform, PreprocessCfg
from edgevl.errors import ConfigError
from edgevl.io import sha256_file

WORLD_MODELS = {"world": "teacher-mci", "world-vit": "teacher-vit"}  # shipped world teachers by app name
DEFAULT_MODEL = "world"
SCHEMA_VERSION = 1  # bump when what an index stores, or how images are decoded for it, changes
TAG_COUNT = 3  # labels stored per image


@dataclass(frozen=True)
class ModelSpec:
    """How to load the models: `model` is 'world', 'world-vit' or a registered config (with `pretrained`), or
    `package` an `edgevl compile` folder; `captioner` is 'world', 'none' or a LightCap preset/folder."""

    model: str | None = DEFAULT_MODEL
    pretrained: str | None = None
    package: str | None = None
    captioner: str = "auto"
    labels: str | None = None
    templates: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls(**json.loads(text))


def _is_world(spec: ModelSpec) -> bool:
    return spec.package is None and spec.model in WORLD_MODELS


def _hash_path(path: Path) -> str:
    """SHA-256 of a weights file, or of every file (name and content) in a weights folder."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def default_labels(spec: ModelSpec) -> tuple[list[str], list[str]]:
    """(labels, templates) of the auto-tags: the world's colour+shape names for world models, else the shipped
    list of everyday photo subjects (`labels.txt`, edit a copy and pass it as --labels)."""
    from edgevl.data.templates import get_templates

    if spec.labels is None and _is_world(spec):
        from edgevl.data.world import get_task

        task = get_task("color_shape")
        return list(task.classnames), [t.replace("{c}", "{}") for t in task.templates]
    if spec.labels is not None:
        path = Path(spec.labels)
        if not path.is_file():
            raise ConfigError(f"labels file {path} does not exist")
        text = path.read_text(encoding="utf-8")
    else:
        text = resources.files("edgevl.app").joinpath("labels.txt").read_text(encoding="utf-8")
    labels = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not labels:
        raise ConfigError(f"the labels file {spec.labels} lists no labels")
    return labels, spec.templates or get_templates("photo")


class Engine:
    """The loaded models of one `ModelSpec`; `encode_images/encode_texts` return L2-normalised float32 rows."""

    def __init__(self, spec: ModelSpec, *, captions: bool = True) -> None:
        self.spec = spec
        if spec.package is not None:
            from edgevl.export.aot import AotCLIP

            self.model: Any = AotCLIP(spec.package)
            self.preprocess_cfg = self.model.preprocess_cfg
            self.name, self.weights = f"package:{self.model.model_name}", _hash_path(Path(spec.package))
        else:
            if _is_world(spec):
                from edgevl.world_models import pretrained_dir

                folder = pretrained_dir(WORLD_MODELS[str(spec.model)])
                name, weights = f"local-dir:{folder}", folder / "model.safetensors"
                self.name = f"world:{WORLD_MODELS[str(spec.model)]}"
            elif spec.pretrained is None:
                raise ConfigError(f"--model {spec.model} needs --pretrained FILE (edgevl never downloads weights); "
                                  "or use --model world for the shipped world model")
            else:
                name, weights, self.name = str(spec.model), Path(spec.pretrained), str(spec.model)
            model, _, preprocess = edgevl.create_model_and_transforms(name, pretrained=spec.pretrained)
            self.model = edgevl.optimize_for_inference(model)
            self.preprocess_cfg, self.weights = preprocess.cfg, _hash_path(weights)
        self.preprocess = ImageTransform(self.preprocess_cfg)
        self.tokenizer = edgevl.get_tokenizer(context_length=self.model.context_length)
        self.dim = int(self.encode_texts(["a photo"]).shape[1])
        self.captioner, self.captioner_id = self._load_captioner() if captions else (None, "none")
        self._label_matrix: torch.Tensor | None = None

    def _load_captioner(self) -> tuple[Any, str]:
        choice = self.spec.captioner
        if choice == "auto":
            choice = "world" if _is_world(self.spec) else "none"
        if choice == "none":
            return None, "none"
        if choice == "world":
            from edgevl.world_models import load_captioner, pretrained_dir

            return load_captioner(), "world:" + _hash_path(pretrained_dir("captioner"))
        net = edgevl.optimize_for_inference(edgevl.create_lightcap(choice))
        return net, f"{choice}:" + (_hash_path(Path(choice)) if os.path.exists(choice) else "preset")

    @property
    def caption_cfg(self) -> PreprocessCfg | None:
        """The captioner's preprocessing, or None without a captioner."""
        return None if self.captioner is None else self.captioner.config.preprocess

    def fingerprint(self) -> dict[str, Any]:
        """Everything the stored embeddings and captions depend on; a database with another one is re-indexed."""
        return {"schema": SCHEMA_VERSION, "edgevl": edgevl.__version__, "model": self.name,
                "weights": self.weights, "dim": self.dim, "preprocess": self.preprocess_cfg.to_dict(),
                "captioner": self.captioner_id}

    @cached_property
    def label_set(self) -> tuple[list[str], list[str]]:
        """(labels, templates) of the auto-tags, read on first use (search never needs them)."""
        return default_labels(self.spec)

    def labels_fingerprint(self) -> str:
        """Hash of the auto-tag labels and templates: when it changes, tags are recomputed from stored vectors."""
        return hashlib.sha256(json.dumps(self.label_set).encode()).hexdigest()[:16]

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, normalize=True).float()

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts), normalize=True).float()

    def label_matrix(self) -> torch.Tensor:
        """[labels, dim]: each label's prompts embedded, averaged and re-normalised (the zero-shot classifier)."""
        if self._label_matrix is None:
            labels, templates = self.label_set
            prompts = self.encode_texts([t.format(label) for label in labels for t in templates])
            rows = prompts.view(len(labels), len(templates), -1).mean(1)
            self._label_matrix = torch.nn.functional.normalize(rows, dim=-1)
        return self._label_matrix

    def tags(self, vectors: torch.Tensor) -> list[list[tuple[str, float]]]:
        """Top `TAG_COUNT` labels of each image with their softmax probability at the model's logit scale."""
        logit_scale = getattr(self.model, "logit_scale", None)
        scale = 100.0 if logit_scale is None else float(logit_scale.detach().exp().clamp(max=100))
        labels = self.label_set[0]
        probs = (scale * torch.as_tensor(vectors) @ self.label_matrix().T).softmax(-1)
        top = probs.topk(min(TAG_COUNT, len(labels)), dim=-1)
        return [[(labels[j], round(float(p), 4)) for j, p in zip(idx.tolist(), val.tolist())]
                for idx, val in zip(top.indices, top.values)]

    @torch.inference_mode()
    def captions(self, images: list) -> list[str]:
        """One greedy LightCap caption per (already cropped) PIL image; empty strings without a captioner."""
        if self.captioner is None or not images:
            return [""] * len(images)
        return list(edgevl.caption(images, model=self.captioner, beam=1, batch_size=len(images)))


def open_engine(catalog: Catalog) -> Engine:
    """The models that built `catalog` (from its stored spec), checked against its fingerprint."""
    stored = catalog.meta("spec")
    if stored is None:
        raise ConfigError(f"{catalog.path} has no indexed photos yet; run `edgevl index FOLDER` first")
    engine = Engine(ModelSpec(**stored), captions=False)
    mismatch = catalog.mismatch({k: v for k, v in engine.fingerprint().items() if k != "captioner"})
    if mismatch:
        raise ConfigError(f"{catalog.path} was indexed with other models or another edgevl ({mismatch}); run "
                          "`edgevl index` again")
    return engine
