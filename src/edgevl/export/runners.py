"""Run exported graphs with ONNX Runtime behind the PyTorch models' interfaces.

`OnnxCLIP` has `encode_image` / `encode_text` on torch tensors, so `edgevl.eval` helpers accept it in place of
a CLIP. `OnnxCaptioner` is a step model for `edgevl.models.lightcap.decoding` (greedy, beam, nucleus): its
state holds the fusion KV cache as numpy arrays and each `step` is one run of the decoder-step graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgevl.data.transforms import ImageTransform, PreprocessCfg
from edgevl.export.onnx import read_export_manifest
from edgevl.export.runtime import DEFAULT_THREADS, ExportError, session

ONNX_VARIANTS = ("fp32", "int8")


def _graph_session(folder: Path, manifest: dict, name: str, precision: str, threads: int):
    if precision not in ONNX_VARIANTS:
        raise ExportError(f"unknown precision {precision!r}; choose from {ONNX_VARIANTS}")
    record = manifest.get("graphs", {}).get(name)
    if record is None:
        raise ExportError(f"{str(folder)!r} has no exported {name!r} graph (export it with --parts)")
    if precision == "int8" and "int8" not in record:
        raise ExportError(f"{str(folder)!r} has no int8 {name!r} graph (export with --quantize int8)")
    file = record["int8"]["file"] if precision == "int8" else record["file"]
    return session(folder / file, threads)


def _numpy(x: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=dtype)


class OnnxCLIP:
    """The image/text towers of an export folder in ONNX Runtime (fp32 or int8 graphs)."""

    def __init__(self, folder: str | Path, precision: str = "fp32", threads: int = DEFAULT_THREADS) -> None:
        self.folder = Path(folder)
        self.manifest = read_export_manifest(self.folder)
        graphs = self.manifest.get("graphs", {})
        self.image_session = (_graph_session(self.folder, self.manifest, "image", precision, threads)
                              if "image" in graphs else None)
        self.text_session = (_graph_session(self.folder, self.manifest, "text", precision, threads)
                             if "text" in graphs else None)
        self.context_length = int(self.manifest.get("context_length", 77))

    def preprocess(self) -> ImageTransform:
        """The model's inference image transform, as recorded at export."""
        pp = dict(self.manifest["preprocess"])
        pp["mean"], pp["std"] = tuple(pp["mean"]), tuple(pp["std"])
        return ImageTransform(PreprocessCfg(**pp))

    def encode_image(self, image: torch.Tensor | np.ndarray, normalize: bool = False) -> torch.Tensor:
        """[B, 3, H, W] preprocessed pixels -> [B, D] features."""
        if self.image_session is None:
            raise ExportError(f"{str(self.folder)!r} has no image graph")
        out = torch.from_numpy(self.image_session.run(None, {"image": _numpy(image, np.float32)})[0])
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, text: torch.Tensor | np.ndarray, normalize: bool = False) -> torch.Tensor:
        """[B, ctx] token ids -> [B, D] features."""
        if self.text_session is None:
            raise ExportError(f"{str(self.folder)!r} has no text graph")
        out = torch.from_numpy(self.text_session.run(None, {"text": _numpy(text, np.int64)})[0])
        return F.normalize(out, dim=-1) if normalize else out


@dataclass
class OnnxCaptionState:
    """Fusion KV cache [layers, N, heads, length, head_dim] of N decoding rows, as numpy arrays."""

    keys: np.ndarray
    values: np.ndarray

    def select(self, rows: torch.Tensor) -> OnnxCaptionState:
        """Keep/reorder/repeat rows (beam search and sampling bookkeeping)."""
        index = rows.cpu().numpy()
        return OnnxCaptionState(np.take(self.keys, index, axis=1), np.take(self.values, index, axis=1))


class OnnxCaptioner:
    """A LightCap export (visual + decoder-step graphs and vocab.json) as a step model for the decoders."""

    def __init__(self, folder: str | Path, precision: str = "fp32", threads: int = DEFAULT_THREADS) -> None:
        from edgevl.models.lightcap.vocab import WordVocab

        self.folder = Path(folder)
        self.manifest = read_export_manifest(self.folder)
        if "captioner" not in self.manifest:
            raise ExportError(f"{str(self.folder)!r} holds no captioner export")
        info = self.manifest["captioner"]
        self.visual = _graph_session(self.folder, self.manifest, "captioner_visual", precision, threads)
        self.decoder = _graph_session(self.folder, self.manifest, "captioner_step", precision, threads)
        self.vocab = WordVocab.load(self.folder / info["vocab_file"])
        self.bos_id, self.eos_id = int(info["bos_id"]), int(info["eos_id"])
        self.max_new_tokens = int(info["max_caption_tokens"])
        self.info = info

    def preprocess(self) -> ImageTransform:
        info = self.info
        return ImageTransform(PreprocessCfg(size=info["image_size"], mean=tuple(info["mean"]),
                                            std=tuple(info["std"]), interpolation=info["interpolation"]))

    def start(self, pixels: torch.Tensor | np.ndarray) -> OnnxCaptionState:
        """Run the visual graph once per image: the prefix cache every decoding step extends."""
        keys, values = self.visual.run(None, {"image": _numpy(pixels, np.float32)})
        return OnnxCaptionState(keys, values)

    def step(self, state: OnnxCaptionState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([N] ids; BOS first); returns next-token log-probs [N, vocab]."""
        if state.keys.shape[3] - int(self.info["prefix_length"]) >= self.max_new_tokens:
            raise ExportError(f"caption longer than max_caption_tokens={self.max_new_tokens}")
        log_probs, state.keys, state.values = self.decoder.run(
            None, {"tokens": _numpy(tokens, np.int64), "past_keys": state.keys, "past_values": state.values})
        return torch.from_numpy(log_probs)

    def caption(self, pixels: torch.Tensor | np.ndarray, beam: int = 1, max_words: int = 20,
                length_penalty: float = 1.0) -> list[str]:
        """Greedy (beam 1) or beam-search captions of a preprocessed batch [B, 3, S, S]."""
        from edgevl.models.lightcap.decoding import beam_search, greedy_decode

        max_new = min(max_words, self.max_new_tokens)
        state, batch = self.start(pixels), int(pixels.shape[0])
        if beam == 1:
            hyps = greedy_decode(self, state, batch, max_new)
        else:
            hyps = beam_search(self, state, batch, beam, max_new, length_penalty)
        return [self.vocab.decode(h.tokens).strip() for h in hyps]
