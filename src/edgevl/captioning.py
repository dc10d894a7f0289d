"""`edgevl.caption`: caption image files with a LightCap model or an open_clip CoCa (greedy, beam search or nucleus
sampling)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from edgevl.data.transforms import ImageSource, ImageTransform
from edgevl.errors import ConfigError, EdgevlError
from edgevl.fast import optimize_captioner
from edgevl.models.coca import CoCa
from edgevl.models.lightcap.decoding import Hypothesis, beam_search, greedy_decode, sample_nucleus
from edgevl.models.lightcap.model import LightCap, create_lightcap
from edgevl.tokenizer import EOT_TEXT, SOT_TEXT, get_tokenizer


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: beam 1 = greedy; `num_samples` > 0 switches to nucleus sampling (cut at the first ".")."""

    beam: int = 5
    max_words: int = 20
    num_samples: int = 0
    top_p: float = 0.9
    temperature: float = 1.0
    length_penalty: float = 1.0
    seed: int = 0


def _resolve_model(model: str | Path | LightCap, weights: str | Path | None, int8: bool) -> LightCap:
    """A given instance is used as it is (after loading `weights`); a name or folder is loaded and optimized."""
    if isinstance(model, LightCap):
        if weights is not None:
            model.load_weights(weights)
        return model.eval()
    net = optimize_captioner(create_lightcap(model, weights))
    return net.quantize_decoder() if int8 else net


def is_coca_spec(model: str | Path | torch.nn.Module) -> bool:
    """True for a CoCa instance, a registered CoCa config name, an `hf-hub:` repository or a folder whose
    `open_clip_config.json` describes a CoCa; False for LightCap presets, configs and folders."""
    from edgevl.models.checkpoint import read_folder_config
    from edgevl.models.registry import get_model_config, list_models

    if isinstance(model, torch.nn.Module):
        return isinstance(model, CoCa)
    name = str(model)
    if name.startswith("hf-hub:"):
        return True
    if name in list_models():
        return "multimodal_cfg" in get_model_config(name)
    folder = Path(name.removeprefix("local-dir:"))
    config = read_folder_config(folder) if folder.is_dir() else None
    return config is not None and "multimodal_cfg" in config["model_cfg"]


def load_coca(model: str | Path | CoCa, weights: str | Path | None) -> tuple[CoCa, ImageTransform]:
    """A CoCa and its evaluation transform; a name gets `weights` (tag, `hf-hub:` spec, file or folder)."""
    from edgevl.models.factory import create_model_and_transforms, preprocess_cfg_for

    if isinstance(model, CoCa):
        if weights is not None:
            raise ConfigError("weights apply to a CoCa given by name, not to a built model")
        return model.eval(), ImageTransform(preprocess_cfg_for(model))
    name = str(model)
    if Path(name).is_dir():
        name = "local-dir:" + name
    net, _, transform = create_model_and_transforms(name, pretrained=weights)
    return net, transform


def _hypothesis_text(model: LightCap, hyp: Hypothesis, cut_at_period: bool) -> str:
    text = model.vocab.decode(hyp.tokens)
    if cut_at_period and "." in text:
        text = text[: text.index(".")]
    return text.strip()


@torch.inference_mode()
def caption_tensor(model: LightCap, pixels: torch.Tensor, options: DecodeOptions = DecodeOptions()
                   ) -> list[str] | list[list[str]]:
    """Captions of a preprocessed batch [B, 3, S, S]; a list of `num_samples` texts per image when sampling."""
    if options.max_words < 1:
        raise ConfigError(f"max_words must be at least 1, got {options.max_words}")
    max_new = min(options.max_words, model.max_new_tokens)  # one word = one token; longer captions end truncated
    state = model.start(pixels)
    batch = pixels.shape[0]
    if options.num_samples > 0:
        period = model.vocab.period_id
        generator = torch.Generator().manual_seed(options.seed)
        samples = sample_nucleus(model, state, batch, options.num_samples, options.top_p, options.temperature,
                                 max_new, () if period is None else (period,), generator)
        return [[_hypothesis_text(model, h, True) for h in row] for row in samples]
    if options.beam == 1:
        hyps = greedy_decode(model, state, batch, max_new)
    else:
        hyps = beam_search(model, state, batch, options.beam, max_new, options.length_penalty)
    return [_hypothesis_text(model, h, False) for h in hyps]


def caption(images: ImageSource | Sequence[ImageSource], model: str | Path | LightCap | CoCa = "lightcap-tiny",
            weights: str | Path | None = None, beam: int = 5, max_words: int = 20, num_samples: int = 0,
            top_p: float = 0.9, temperature: float = 1.0, batch_size: int = 8, seed: int = 0, int8: bool = False
            ) -> list[str] | list[list[str]]:
    """Caption image files/bytes/PIL images with a LightCap model (preset name, model folder or instance) or a CoCa
    (`coca_ViT-L-14`, ..., `hf-hub:` repository, CoCa folder or instance; `weights` is then an official tag such
    as `mscoco_finetuned_laion2b_s13b_b90k`, an `hf-hub:` spec, a file or a folder).

    Returns one caption per image, or `num_samples` nucleus samples per image when `num_samples` > 0 (for CoCa
    DataCompDR's recipe: top-p calls with fixed output length, each caption cut at its first period). For CoCa,
    `max_words` counts BPE tokens after the start token (DataCompDR: 29) and `beam` > 1 is open_clip's beam search
    in one group. A LightCap given by name or folder is loaded with `edgevl.fast.optimize_captioner` (and
    `quantize_decoder()` when `int8`); an instance is used as it is. Bad images raise `ImageLoadError` naming the
    file; an empty list raises `EdgevlError`.
    """
    if isinstance(images, (str, Path, bytes)) or not isinstance(images, Sequence):
        images = [images]
    if len(images) == 0:
        raise EdgevlError("no images to caption")
    if batch_size < 1:
        raise EdgevlError(f"batch_size must be at least 1, got {batch_size}")
    if is_coca_spec(model):
        if int8:
            raise ConfigError("int8 quantization is for LightCap decoders, not CoCa")
        coca, transform = load_coca(model, weights)
        options = {"beam": beam, "max_tokens": max_words, "num_samples": num_samples, "top_p": top_p,
                   "temperature": temperature, "seed": seed}
        return [text for i in range(0, len(images), batch_size)
                for text in caption_pixels(coca, transform.batch(images[i:i + batch_size]), **options)]
    net = _resolve_model(model, weights, int8)
    transform = ImageTransform(net.config.preprocess)
    options = DecodeOptions(beam, max_words, num_samples, top_p, temperature, seed=seed)
    out: list = []
    for i in range(0, len(images), batch_size):
        out += caption_tensor(net, transform.batch(images[i:i + batch_size]), options)
    return out


# ---------------------------------------------------------------- CoCa: ids to text and the captioning recipes
def clean_caption(decoded: str, cut_at_period: bool) -> str:
    """MobileCLIP's clean-up of a decoded row: the text before the first end token, after the last start
    token, before the first "." (when `cut_at_period`), right-stripped."""
    text = decoded.split(EOT_TEXT)[0].split(SOT_TEXT)[-1]
    return (text.split(".")[0] if cut_at_period else text).rstrip()


def decode_captions(ids: torch.Tensor, cut_at_period: bool) -> list[str]:
    """Cleaned captions of generated ids (B, L): every id decoded as open_clip does, then `clean_caption`."""
    return [clean_caption(text, cut_at_period) for text in get_tokenizer().decode(ids, skip_special_tokens=False)]


@torch.inference_mode()
def caption_pixels(model: torch.nn.Module, pixels: torch.Tensor, *, beam: int = 1, max_tokens: int = 29,
                   num_samples: int = 0, top_p: float = 0.9, temperature: float = 1.0, seed: int = 0
                   ) -> list[str] | list[list[str]]:
    """Captions of a preprocessed batch (B, 3, S, S): beam search (`beam` > 1, one group) or greedy (`beam` 1),
    or with `num_samples` > 0 DataCompDR's recipe, `num_samples` top-p calls with fixed output length in a row from
    one seed, each caption cut at its first period. `max_tokens` counts the ids after the start token
    (open_clip's `seq_len` - 1; DataCompDR's 29)."""
    if not 1 <= max_tokens <= model.context_length:
        raise ConfigError(f"max_tokens must be in 1..{model.context_length} for this CoCa, got {max_tokens}")
    seq_len = max_tokens + 1
    min_len = min(5, seq_len - 1)
    if num_samples > 0:
        with torch.random.fork_rng(devices=[]):  # open_clip samples from the global generator; leave it as it was
            torch.manual_seed(seed)
            rounds = [model.generate(pixels, generation_type="top_p", top_p=top_p, temperature=temperature,
                                     seq_len=seq_len, min_seq_len=min_len, fixed_output_length=True)
                      for _ in range(num_samples)]
        texts = [decode_captions(ids, cut_at_period=True) for ids in rounds]
        return [list(row) for row in zip(*texts)]
    if beam > 1:
        ids = model.generate(pixels, num_beams=beam, num_beam_groups=1, seq_len=seq_len, min_seq_len=min_len)
    else:
        ids = model.generate(pixels, generation_type="top_k", top_k=1, seq_len=seq_len, min_seq_len=min_len)
    return decode_captions(ids, cut_at_period=False)
