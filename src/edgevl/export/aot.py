"""AOTInductor packages of the optimized encoders: each tower compiled ahead of time to C++ (`.pt2`).

A package runs the whole tower as generated C++ with oneDNN GEMMs and convolutions from prepacked weights and the
elementwise ops fused into loops, so it pays neither the Python interpreter's per-module cost nor one dispatch per
op. On small models at batch 1 that cost is a large share of the time (MobileCLIP-S0's image tower: 16.5 -> 14.0 ms,
2 threads, see docs/benchmarks.md). Shapes are fixed at compile time (one batch size, image size and context length
per package; other batch sizes run in chunks of the compiled one) and the compiled code targets the CPU and torch
version it was built with; both are checked on load. bfloat16 packages (`precision="bf16"`) halve the GEMM work on
CPUs with AVX-512 bf16 or AMX.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgevl import backend
from edgevl.data.transforms import PreprocessCfg
from edgevl.errors import DataError, EdgevlError
from edgevl.fast import optimize_for_inference
from edgevl.locks import output_lock
from edgevl.models.factory import preprocess_cfg_for

AOT_MANIFEST = "aot.json"
TOWERS = ("image", "text")
AOT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# largest output difference (relative to the largest output) a package may show against the float32 model
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}


class AotError(EdgevlError):
    """An AOTInductor package that cannot be built or run here."""


def _cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def compile_module(module: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export `module` at `example`'s shape and compile it with AOTInductor (weights frozen in) to `path`.

    The package is written to a temporary file beside `path` and moved into place, so a killed compile leaves no
    half-written package. Needs a C++ compiler; export or compile failures raise `AotError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            try:
                program = torch.export.export(module.eval(), (example,))
                torch._inductor.aoti_compile_and_package(
                    program, package_path=tmp, inductor_configs={"freezing": True}
                )
            except Exception as err:
                raise AotError(f"could not compile {type(module).__name__} with AOTInductor: {err}") from err
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class AotTower:
    """One compiled tower. Inputs of any batch size run in chunks of the compiled batch (the last one padded with
    copies of its first row, whose outputs are dropped); the other dimensions must match the compiled shape."""

    def __init__(self, path: str | Path, shape: list[int], dtype: torch.dtype) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(shape), dtype
        self._run = torch._inductor.aoti_load_package(str(self.path))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != len(self.shape) or tuple(x.shape[1:]) != self.shape[1:] or len(x) == 0:
            raise DataError(
                f"{self.path.name} was compiled for inputs of shape [batch, {', '.join(map(str, self.shape[1:]))}]"
                f", got {list(x.shape)}"
            )
        if x.dtype != self.dtype:
            raise DataError(f"{self.path.name} takes {self.dtype} inputs, got {x.dtype}")
        batch = self.shape[0]
        if len(x) == batch:
            return self._run(x)
        outs, memory_format = [], _memory_format(x)
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            rows = len(chunk)
            if rows < batch:
                chunk = torch.cat([chunk, chunk[:1].expand(batch - rows, *chunk.shape[1:])])
            outs.append(self._run(chunk.contiguous(memory_format=memory_format))[:rows])
        return torch.cat(outs)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


class AotCLIP:
    """`encode_image` / `encode_text` (and `scale()`, `preprocess_cfg`, `context_length`) from a folder that
    `compile_clip` wrote."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        manifest_path = folder / AOT_MANIFEST
        if not manifest_path.is_file():
            raise AotError(f"{folder} has no {AOT_MANIFEST}: not a folder written by edgevl.export.aot.compile_clip")
        self.manifest = json.loads(manifest_path.read_text())
        built = (self.manifest["torch"], self.manifest["cpu_capability"])
        here = (torch.__version__, _cpu_capability())
        if built != here:
            raise AotError(
                f"{folder} was compiled with torch {built[0]} for {built[1]} CPUs; this is torch {here[0]} on a "
                f"{here[1]} CPU. Compile the packages again here."
            )
        precision = self.manifest.get("precision", "fp32")
        dtypes = {"image": AOT_DTYPES[precision], "text": torch.long}
        self.towers = {
            name: AotTower(folder / entry["file"], entry["shape"], dtypes[name])
            for name, entry in self.manifest["towers"].items()
        }
        self.model_name: str | None = self.manifest["model"]
        self.logit_scale = torch.tensor(self.manifest["logit_scale"])
        pp = self.manifest["preprocess"]
        self.preprocess_cfg = PreprocessCfg(**{k: tuple(v) if isinstance(v, list) else v for k, v in pp.items()})

    @property
    def context_length(self) -> int:
        return self._tower("text").shape[1]

    def _tower(self, name: str) -> AotTower:
        if name not in self.towers:
            raise AotError(f"no {name} tower was compiled into this folder (towers: {', '.join(self.towers)})")
        return self.towers[name]

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped at 100, as `CLIP.scale`."""
        return self.logit_scale.exp().clamp(max=100.0)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings (float32) of float images; cast to the package's precision first."""
        tower = self._tower("image")
        out = tower(images.to(tower.dtype).contiguous(memory_format=torch.channels_last)).float()
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        out = self._tower("text")(ids).float()
        return F.normalize(out, dim=-1) if normalize else out


def compile_clip(model: nn.Module, out: str | Path, *, batch: int = 1, towers: tuple[str, ...] = TOWERS,
                 model_name: str | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Compile `model`'s image and/or text tower (after `optimize_for_inference`) for `batch` inputs into `out`,
    with an `aot.json` manifest; returns the manifest. Load the folder with `AotCLIP`.

    The image size and context length are the model's own. `precision="bf16"` compiles bfloat16 weights and
    activations (oneDNN's bf16 kernels: for CPUs with AVX-512 bf16 or AMX). Each tower is checked against the
    float32 optimized model on random inputs; a package whose outputs differ by more than `TOLERANCE[precision]`
    (relative to the largest output) is an error.
    """
    if precision not in AOT_DTYPES:
        raise AotError(f"precision must be one of {sorted(AOT_DTYPES)}, got {precision!r}")
    if precision == "bf16" and not backend.bf16_supported():
        raise AotError("this CPU has no bf16 support in oneDNN (needs AVX-512 bf16 or AMX); use precision='fp32'")
    unknown = set(towers) - set(TOWERS)
    if unknown or not towers:
        raise AotError(f"towers must be a non-empty subset of {TOWERS}, got {list(towers)}")
    if batch < 1:
        raise AotError(f"batch must be at least 1, got {batch}")
    fast = optimize_for_inference(model)
    gen = torch.Generator().manual_seed(0)
    preprocess = preprocess_cfg_for(model)
    size = preprocess.size  # the images `AotCLIP.preprocess_cfg` produces, so `--aot` runs take them as they are
    examples = {
        "image": torch.rand(batch, 3, size, size, generator=gen).contiguous(memory_format=torch.channels_last),
        "text": torch.randint(1, fast.text.vocab_size - 1, (batch, fast.context_length), generator=gen),
    }
    dtype = AOT_DTYPES[precision]
    low = copy.deepcopy(fast).to(dtype) if dtype != torch.float32 else fast
    modules = {"image": low.visual, "text": low.text}
    inputs = {"image": examples["image"].to(dtype), "text": examples["text"]}
    out = Path(out)
    with output_lock(out, "compile"):
        return _compile_towers(fast, modules, examples, inputs, towers, out, {
            "model": model_name, "torch": torch.__version__, "cpu_capability": _cpu_capability(), "batch": batch,
            "precision": precision, "logit_scale": float(fast.logit_scale.detach()),
            "preprocess": {k: v for k, v in dataclasses.asdict(preprocess).items() if k != "extra"},
        })


def _compile_towers(fast: nn.Module, modules: dict[str, nn.Module], examples: dict[str, torch.Tensor],
                    inputs: dict[str, torch.Tensor], towers: tuple[str, ...], out: Path,
                    manifest: dict[str, Any]) -> dict[str, Any]:
    """Compile and check each tower into `out`, then write `aot.json` (`manifest` plus the towers' entries)."""
    precision = manifest["precision"]
    entries = {}
    for name in towers:
        path = compile_module(modules[name], inputs[name], out / f"{name}.pt2")
        with torch.inference_mode():
            ref = (fast.visual if name == "image" else fast.text)(examples[name])
            got = torch._inductor.aoti_load_package(str(path))(inputs[name]).float()
        err = ((got - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()
        if not err <= TOLERANCE[precision]:
            path.unlink()
            raise AotError(f"compiled {name} tower differs from the optimized model by {err:.2e} (relative)")
        entries[name] = {"file": path.name, "shape": list(examples[name].shape), "max_rel_err": err}
    manifest = {**manifest, "towers": entries}
    tmp = out / f".{AOT_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / AOT_MANIFEST)
    return manifest
