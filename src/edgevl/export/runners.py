"""Run exported packages (ONNX Runtime, OpenVINO, ExecuTorch, LiteRT, AOTInductor) behind the PyTorch models' API.

`load_package(folder)` reads export.json and returns a `PackageCLIP` (`encode_image` / `encode_text` on torch
tensors, so `edgevl.eval` helpers accept it in place of a CLIP), a `PackageCaptioner` (`start` / `step` /
`caption`: a step model for `edgevl.models.lightcap.decoding`, its state the fusion KV cache as numpy arrays, each
`step` one run of the decoder-step graph: the growing cache of ONNX / OpenVINO packages or the fixed-size cache
plus the caption position of the phone formats) or, for an AOT folder, an `AotCLIP`. `OnnxCLIP` / `OnnxCaptioner` are
the same classes under their first names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgevl.data.transforms import ImageTransform, PreprocessCfg
from edgevl.export.backends import GraphRun, get_backend, load_graph
from edgevl.export.onnx import EXPORT_MANIFEST, read_export_manifest
from edgevl.export.runtime import DEFAULT_THREADS, ExportError, session

PRECISIONS = ("fp32", "int8", "int8w", "fp16")


def _onnx_run(path: Path, threads: int) -> GraphRun:
    sess = session(path, threads)
    names = [i.name for i in sess.get_inputs()]
    return lambda arrays: sess.run(None, dict(zip(names, arrays)))


def _graph_run(folder: Path, manifest: dict, name: str, precision: str, threads: int) -> GraphRun:
    """A function running one graph of a package folder on numpy inputs, in the folder's format."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    record = manifest.get("graphs", {}).get(name)
    if record is None:
        raise ExportError(f"{str(folder)!r} has no exported {name!r} graph (export it with --parts)")
    if precision != "fp32" and precision not in record:
        raise ExportError(f"{str(folder)!r} has no {precision} {name!r} graph (export with --variants {precision})")
    path = folder / (record[precision]["file"] if precision != "fp32" else record["file"])
    fmt = manifest.get("format", "onnx")
    if fmt == "onnx":
        return _onnx_run(path, threads)
    return load_graph(get_backend(fmt), path, threads, record.get("batch_axes"))


def _numpy(x: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=dtype)


class PackageCLIP:
    """The image/text towers of an export folder in its runtime (fp32 or a variant's graphs)."""

    def __init__(self, folder: str | Path, precision: str = "fp32", threads: int = DEFAULT_THREADS) -> None:
        self.folder = Path(folder)
        self.manifest = read_export_manifest(self.folder)
        graphs = self.manifest.get("graphs", {})
        self.image_run = (_graph_run(self.folder, self.manifest, "image", precision, threads)
                          if "image" in graphs else None)
        self.text_run = (_graph_run(self.folder, self.manifest, "text", precision, threads)
                         if "text" in graphs else None)
        self.text_dtype = np.int32 if self.manifest.get("tokenizer", {}).get("text_dtype") == "int32" else np.int64
        self.context_length = int(self.manifest.get("context_length", 77))
        if "logit_scale" in self.manifest:  # classify's softmax temperature (older ONNX exports lack it)
            self.logit_scale = torch.tensor(float(self.manifest["logit_scale"]))

    def preprocess(self) -> ImageTransform:
        """The model's inference image transform, as recorded at export."""
        pp = dict(self.manifest["preprocess"])
        pp["mean"], pp["std"] = tuple(pp["mean"]), tuple(pp["std"])
        return ImageTransform(PreprocessCfg(**pp))

    def encode_image(self, image: torch.Tensor | np.ndarray, normalize: bool = False) -> torch.Tensor:
        """[B, 3, H, W] preprocessed pixels -> [B, D] features."""
        if self.image_run is None:
            raise ExportError(f"{str(self.folder)!r} has no image graph")
        out = torch.from_numpy(self.image_run([_numpy(image, np.float32)])[0])
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, text: torch.Tensor | np.ndarray, normalize: bool = False) -> torch.Tensor:
        """[B, ctx] token ids -> [B, D] features."""
        if self.text_run is None:
            raise ExportError(f"{str(self.folder)!r} has no text graph")
        out = torch.from_numpy(self.text_run([_numpy(text, self.text_dtype)])[0])
        return F.normalize(out, dim=-1) if normalize else out


@dataclass
class OnnxCaptionState:
    """Fusion KV cache [layers, N, heads, length, head_dim] of N decoding rows, as numpy arrays, and the next
    caption position (the growing cache's length implies it; the fixed-size cache's step takes it as an input)."""

    keys: np.ndarray
    values: np.ndarray
    position: int = 0

    def select(self, rows: torch.Tensor) -> OnnxCaptionState:
        """Keep/reorder/repeat rows (beam search and sampling bookkeeping)."""
        index = rows.cpu().numpy()
        return OnnxCaptionState(np.take(self.keys, index, axis=1), np.take(self.values, index, axis=1),
                                self.position)


class PackageCaptioner:
    """A LightCap export (visual + decoder-step graphs and vocab.json) as a step model for the decoders."""

    def __init__(self, folder: str | Path, precision: str = "fp32", threads: int = DEFAULT_THREADS) -> None:
        from edgevl.models.lightcap.vocab import WordVocab

        self.folder = Path(folder)
        self.manifest = read_export_manifest(self.folder)
        if "captioner" not in self.manifest:
            raise ExportError(f"{str(self.folder)!r} holds no captioner export")
        info = self.manifest["captioner"]
        self.visual = _graph_run(self.folder, self.manifest, "captioner_visual", precision, threads)
        self.decoder = _graph_run(self.folder, self.manifest, "captioner_step", precision, threads)
        self.vocab = WordVocab.load(self.folder / info["vocab_file"])
        self.bos_id, self.eos_id = int(info["bos_id"]), int(info["eos_id"])
        self.max_new_tokens = int(info["max_caption_tokens"])
        self.static_cache = info.get("cache") == "static"
        self.info = info

    def preprocess(self) -> ImageTransform:
        """The captioner's inference image transform, as recorded at export."""
        info = self.info
        return ImageTransform(PreprocessCfg(size=info["image_size"], mean=tuple(info["mean"]),
                                            std=tuple(info["std"]), interpolation=info["interpolation"]))

    def start(self, pixels: torch.Tensor | np.ndarray) -> OnnxCaptionState:
        """Run the visual graph once per image: the prefix cache every decoding step extends."""
        keys, values = self.visual([_numpy(pixels, np.float32)])
        return OnnxCaptionState(keys, values)

    def step(self, state: OnnxCaptionState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([N] ids; BOS first); returns next-token log-probs [N, vocab]."""
        if state.position >= self.max_new_tokens:
            raise ExportError(f"caption longer than max_caption_tokens={self.max_new_tokens}")
        ids = _numpy(tokens, np.int64)
        if self.static_cache:
            inputs = [ids, np.array([state.position], dtype=np.int64), state.keys, state.values]
        else:
            inputs = [ids, state.keys, state.values]
        log_probs, state.keys, state.values = self.decoder(inputs)
        state.position += 1
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


OnnxCLIP = PackageCLIP
OnnxCaptioner = PackageCaptioner


def load_package(folder: str | Path, precision: str = "fp32", threads: int = DEFAULT_THREADS):
    """The runner of an export folder: `PackageCaptioner` when it holds only a captioner, `AotCLIP` for an
    AOTInductor folder, else `PackageCLIP` (ExportError when the folder is neither)."""
    from edgevl.export.aot import AOT_MANIFEST, AotCLIP

    folder = Path(folder)
    if (folder / AOT_MANIFEST).is_file() and not (folder / EXPORT_MANIFEST).is_file():
        return AotCLIP(folder)
    manifest = read_export_manifest(folder)
    if "captioner" in manifest and not {"image", "text"} & set(manifest.get("graphs", {})):
        return PackageCaptioner(folder, precision, threads)
    return PackageCLIP(folder, precision, threads)
