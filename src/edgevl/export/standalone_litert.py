"""Zero-shot classification with an edgevl LiteRT package and no torch: what a phone app does, in Python.

Needs only numpy, Pillow, `regex` and `ai_edge_litert` (plus `ftfy` for non-ASCII text). It reads the package's
export.json and tokenizer.json (written by `edgevl export --format litert`) and repeats edgevl's preprocessing
and tokenization step by step (docs/deploy.md), so it doubles as the reference for a Kotlin/Swift port.

    python standalone_litert.py PACKAGE_DIR IMAGE "a photo of a dog" "a photo of a cat"
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import numpy as np
import regex
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps

FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


class BpeTokenizer:
    """CLIP byte-level BPE from tokenizer.json: text -> one row of `context_length` token ids."""

    def __init__(self, path: str | Path) -> None:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        self.vocab: dict[str, int] = spec["vocab"]
        self.rank = {tuple(pair.split(" ")): i for i, pair in enumerate(spec["merges"])}
        self.byte_map = {int(b): c for b, c in spec["byte_to_unicode"].items()}
        self.splitter = regex.compile(spec["pretokenize_regex"], regex.IGNORECASE)
        self.suffix, self.length = spec["end_of_word_suffix"], spec["context_length"]
        self.sot, self.eot, self.pad = spec["sot_id"], spec["eot_id"], spec["pad_id"]
        self.specials = {spec["sot_token"]: self.sot, spec["eot_token"]: self.eot}

    @staticmethod
    def clean(text: str) -> str:
        """ftfy (non-ASCII only), HTML-unescape twice, collapse whitespace, strip, lower-case."""
        if re.fullmatch(r"[ -%'-~]*", text) is None:  # printable ASCII without '&' is left as it is
            try:
                import ftfy

                text = ftfy.fix_text(text)
            except ImportError:
                pass
            text = html.unescape(html.unescape(text))
        return re.sub(r"\s+", " ", text).strip().lower()

    def word_pieces(self, word: str) -> list[str]:
        """Merge one pre-token's byte symbols, lowest merge rank first, until no ranked pair is left."""
        pieces = [self.byte_map[b] for b in word.encode("utf-8")]
        pieces[-1] += self.suffix
        while len(pieces) > 1:
            ranked = [(self.rank.get(pair, len(self.rank)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
            best_rank, at = min(ranked)  # the pair's first occurrence: a rank names one pair
            if best_rank == len(self.rank):
                break
            first, second = pieces[at], pieces[at + 1]
            i = at  # merge every non-overlapping (first, second) from the left, in place
            while i < len(pieces) - 1:
                if pieces[i] == first and pieces[i + 1] == second:
                    pieces[i : i + 2] = [first + second]
                i += 1
        return pieces

    def __call__(self, text: str) -> np.ndarray:
        """[sot, ids..., eot, pad...] of `text`, cut to context_length with eot kept last."""
        ids = [self.sot]
        for word in self.splitter.findall(self.clean(text)):
            special = self.specials.get(word)
            ids += [special] if special is not None else [self.vocab[p] for p in self.word_pieces(word)]
        ids = ids[: self.length - 1] + [self.eot]
        return np.array(ids + [self.pad] * (self.length - len(ids)))


def preprocess(path: str | Path, cfg: dict) -> np.ndarray:
    """Image file -> [1, 3, size, size] float32: EXIF-rotate, RGB, resize, center crop, /255, (x - mean) / std."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    size, flt = cfg["size"], FILTERS[cfg["interpolation"]]
    w, h = image.size
    if cfg.get("resize_mode", "shortest") == "shortest":
        if min(w, h) != size:
            image = image.resize((size, int(size * h / w)) if w <= h else (int(size * w / h), size), flt)
        w, h = image.size
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    else:
        image = image.resize((size, size), flt)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.array(cfg["mean"], np.float32)) / np.array(cfg["std"], np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


class LiteRTTower:
    """One .tflite tower: a batch-1 input in, an L2-normalized embedding out."""

    def __init__(self, path: Path) -> None:
        self.interpreter = Interpreter(model_path=str(path), num_threads=2)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, array: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], array.astype(self.input["dtype"]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])[0].astype(np.float64)
        return out / np.linalg.norm(out)


def classify(package: str | Path, image: str | Path, labels: list[str]) -> dict[str, float]:
    """Softmax over `labels` of logit_multiplier * cosine(image, label text), as the PyTorch CLIP computes it."""
    package = Path(package)
    manifest = json.loads((package / "export.json").read_text(encoding="utf-8"))
    tokenize = BpeTokenizer(package / manifest["tokenizer"]["file"])
    image_embedding = LiteRTTower(package / manifest["graphs"]["image"]["file"])(preprocess(image,
                                                                                               manifest["preprocess"]))
    text_tower = LiteRTTower(package / manifest["graphs"]["text"]["file"])
    texts = np.stack([text_tower(tokenize(label)[None]) for label in labels])
    logits = manifest["logit_multiplier"] * texts @ image_embedding
    probs = np.exp(logits - logits.max())
    return dict(zip(labels, (probs / probs.sum()).tolist()))


def main(argv: list[str]) -> int:
    """CLI: PACKAGE IMAGE LABEL [LABEL ...] -> one `probability label` line per label, as JSON-free text."""
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    for label, p in classify(argv[0], argv[1], argv[2:]).items():
        print(f"{p:.6f} {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
