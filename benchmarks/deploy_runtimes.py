"""The runtimes `deploy.py` times, one per worker process: each builds (or loads) one model in one runtime and
answers timing requests on stdin, so its peak memory is its own.

A runtime is `prepare`d once (exports and compiles into the work folder, in a process of its own, skipped when the
package is already there) and then `load`ed by the timing worker, which returns the model's file size and a
function batch -> one call to time. CLIP calls encode one image batch and one text batch; LightCap calls caption
image files end to end (decode, preprocess, backbone, 20 greedy tokens with EOS blocked, text).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

CAPTIONER = "lightcap-mci0"
BLIP = "blip-base"
TOKENS = 20
DEVICE_FORMATS = ("executorch", "litert", "openvino")  # packages written by `edgevl export --format F`
CAPTIONS = ["a photo of a dog", "a red car parked on a street", "two people walking on a beach at sunset",
            "a plate of food on a table", "a cat sleeping on a sofa", "a city skyline at night",
            "a bowl of fruit", "a child riding a bicycle in a park"]

Call = Callable[[], object]


class Unavailable(Exception):
    """This runtime cannot run here; the message is printed in the table."""


def _files_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes of a model's weights as a safetensors file would hold them (parameters and persistent buffers)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values() if isinstance(t, torch.Tensor))


def image_files(folder: Path, batch: int) -> list[Path]:
    """`batch` distinct 640x480 PNG files in `folder` (written once)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(batch):
        path = folder / f"image{i}.png"
        if not path.is_file():
            image = Image.new("RGB", (640, 480), (20 * i, 90, 160))
            image.paste((200, 80 + 10 * i, 40), (100 + 20 * i, 100, 400, 300))
            image.save(path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------ CLIP models
def _clip_inputs(name: str, size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    import edgevl

    image = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    return image, edgevl.get_tokenizer(name)([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])


def _clip_call(model, name: str, size: int, channels_last: bool) -> Callable[[int], Call]:
    def call(batch: int) -> Call:
        image, text = _clip_inputs(name, size, batch)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return lambda: (model.encode_image(image), model.encode_text(text))
    return call


def _clip_torch(name: str, runtime: str) -> tuple[int, Callable[[int], Call]]:
    import edgevl
    from edgevl.models.factory import preprocess_cfg_for

    model = edgevl.create_model(name).eval()
    size, weights = preprocess_cfg_for(model).size, state_bytes(model)
    if runtime == "reparameterize":
        model = edgevl.reparameterize(model)
    elif runtime == "optimize_for_inference":
        model = edgevl.optimize_for_inference(model)
    return weights, _clip_call(model, name, size, runtime == "optimize_for_inference")


def _aot_folder(work: Path, name: str, batch: int) -> Path:
    return work / f"{name}-aot-b{batch}"


def _onnx_folder(work: Path, name: str) -> Path:
    return work / f"{name}-onnx"


def prepare(model: str, runtime: str, work: Path, batches: list[int]) -> None:
    """Write the packages `load` reads (skipped when they exist): AOT per batch size, one ONNX export, one
    `edgevl export --format F` package per device format (CLIP towers)."""
    import edgevl

    if runtime in DEVICE_FORMATS and model != CAPTIONER:
        from edgevl.export.onnx import EXPORT_MANIFEST
        from edgevl.export.pipeline import export_model

        if not (work / f"{model}-{runtime}" / EXPORT_MANIFEST).is_file():
            export_model(work / f"{model}-{runtime}", model_name=model, fmt=runtime)
    elif runtime == "aot" and model != CAPTIONER:
        from edgevl.export.aot import AOT_MANIFEST, compile_clip

        for batch in batches:
            if not (_aot_folder(work, model, batch) / AOT_MANIFEST).is_file():
                compile_clip(edgevl.create_model(model), _aot_folder(work, model, batch), batch=batch,
                             model_name=model)
    elif runtime == "onnx":
        from edgevl.export.onnx import EXPORT_MANIFEST, export_captioner, export_clip

        folder = _onnx_folder(work, model)
        if (folder / EXPORT_MANIFEST).is_file():
            return
        if model == CAPTIONER:
            net = _captioner()
            export_captioner(net, folder, name=model, exporter="legacy")
        else:
            export_clip(edgevl.create_model(model), folder, model_name=model, exporter="legacy")


def _onnx_bytes(folder: Path) -> int:
    from edgevl.export.onnx import read_export_manifest

    return sum(g["bytes"] for g in read_export_manifest(folder)["graphs"].values())


def _device_package(model: str, runtime: str, packages: Path | None, work: Path) -> tuple[int, Callable[[int], Call]]:
    """An `edgevl export --format F` package run through `load_package`: from `packages` when given, else the one
    `prepare` wrote into `work` (CLIP towers only; the captioner's device packages are ONNX and OpenVINO)."""
    from edgevl.export.runners import load_package

    folder = (packages or work) / f"{model}-{runtime}"
    if not folder.is_dir():
        raise Unavailable(f"no package (export to --packages DIR/{model}-{runtime} with --format {runtime})")
    package = load_package(folder)
    size = _files_bytes([p for p in folder.rglob("*") if p.is_file()])
    if model == CAPTIONER:
        return size, _caption_call(package, package.preprocess(), work)
    return size, _clip_call(package, model, int(package.preprocess().cfg.size), False)


def load(model: str, runtime: str, work: Path, packages: Path | None, threads: int
         ) -> tuple[int, Callable[[int], Call]]:
    """(model file bytes, batch -> call) for one model in one runtime; `Unavailable` when it cannot run here."""
    if runtime in DEVICE_FORMATS:
        return _device_package(model, runtime, packages, work)
    if runtime == BLIP:
        return _blip(work)
    if model == CAPTIONER:
        return _captioner_runtime(runtime, work, threads)
    if runtime in ("eager", "reparameterize", "optimize_for_inference"):
        return _clip_torch(model, runtime)
    if runtime == "aot":
        from edgevl.export.aot import AotCLIP

        def aot_call(batch: int) -> Call:
            package = AotCLIP(_aot_folder(work, model, batch))
            size = package.preprocess_cfg.size
            return _clip_call(package, model, size, True)(batch)

        return _files_bytes(list(_aot_folder(work, model, 1).glob("*.pt2"))), aot_call
    if runtime == "onnx":
        from edgevl.export.runners import OnnxCLIP

        package = OnnxCLIP(_onnx_folder(work, model), threads=threads)
        return _onnx_bytes(_onnx_folder(work, model)), _clip_call(package, model, package.preprocess().cfg.size,
                                                                  False)
    raise Unavailable(f"unknown runtime {runtime!r}")


# ---------------------------------------------------------------------------------------------- captioners
def _captioner():
    from edgevl.models.lightcap.model import create_lightcap

    torch.manual_seed(0)
    model = create_lightcap(CAPTIONER)
    model.blocked_tokens[model.eos_id] = True  # fixed-length runs: exactly TOKENS tokens
    return model


def _caption_call(model, transform, work: Path) -> Callable[[int], Call]:
    from edgevl.models.lightcap.decoding import greedy_decode

    def call(batch: int) -> Call:
        files = image_files(work / "images", batch)

        @torch.inference_mode()
        def run() -> list[str]:
            pixels = transform.batch(files)
            hyps = greedy_decode(model, model.start(pixels), batch, TOKENS)
            assert all(len(h.tokens) == TOKENS for h in hyps)
            return [model.vocab.decode(h.tokens) for h in hyps]

        return run
    return call


def _captioner_runtime(runtime: str, work: Path, threads: int) -> tuple[int, Callable[[int], Call]]:
    from edgevl.data.transforms import ImageTransform
    from edgevl.fast import optimize_captioner

    if runtime == "onnx":
        from edgevl.export.runners import OnnxCaptioner

        package = OnnxCaptioner(_onnx_folder(work, CAPTIONER), threads=threads)
        return _onnx_bytes(_onnx_folder(work, CAPTIONER)), _caption_call(package, package.preprocess(), work)
    if runtime not in ("eager", "optimize_for_inference", "optimize_for_inference+int8"):
        raise Unavailable("not available (no compiled package of the captioner)")
    model = _captioner()
    weights = state_bytes(model)
    if runtime != "eager":
        model = optimize_captioner(model)
    if runtime.endswith("+int8"):
        model.quantize_decoder()
    return weights, _caption_call(model, ImageTransform(model.config.preprocess), work)


def _blip(work: Path) -> tuple[int, Callable[[int], Call]]:
    """Hugging Face transformers' BLIP (BLIP-base config, random weights): greedy, exactly TOKENS new tokens."""
    try:
        from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil
    except ImportError as exc:
        raise Unavailable(f"skipped: transformers is not installed ({exc})") from exc
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig()).eval()
    processor = BlipImageProcessorPil()  # BLIP's defaults: 384 px, bicubic, CLIP mean/std

    def call(batch: int) -> Call:
        files = image_files(work / "images", batch)

        @torch.inference_mode()
        def run() -> object:
            pixels = processor([Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
            return model.generate(pixel_values=pixels, do_sample=False, num_beams=1, max_new_tokens=TOKENS,
                                  min_new_tokens=TOKENS)

        return run
    return state_bytes(model), call


def serve(model: str, runtime: str, work: Path, packages: Path | None, threads: int) -> None:
    """The worker loop: print the load result as one JSON line, then answer `BATCH RUNS` lines with that many
    timed calls (after one untimed call) and `quit` with the peak resident memory."""
    import resource
    import time

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # random-init trunks give subnormal activations that crawl on x86
    try:
        size, make = load(model, runtime, work, packages, threads)
    except Unavailable as exc:
        print(json.dumps({"unavailable": str(exc)}), flush=True)
        return
    print(json.dumps({"bytes": size}), flush=True)
    calls: dict[int, Call] = {}
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        batch, runs = map(int, line.split())
        if batch not in calls:
            calls[batch] = make(batch)
            calls[batch]()
        calls[batch]()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            calls[batch]()
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times}), flush=True)
    print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)


if __name__ == "__main__":  # worker: MODE MODEL RUNTIME THREADS BATCHES PACKAGES WORK
    mode, name, rt, n_threads, batch_list, package_dir, work_dir = sys.argv[1:8]
    if mode == "prepare":
        torch.set_num_threads(int(n_threads))
        prepare(name, rt, Path(work_dir), [int(b) for b in batch_list.split(",")])
    else:
        serve(name, rt, Path(work_dir), Path(package_dir) if package_dir != "-" else None, int(n_threads))
