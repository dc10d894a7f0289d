"""CoCa ids to caption text, and the captioning recipes: beam search / greedy, and DataCompDR's top-p sampling
(N captions per image, each cut at its first period), as MobileCLIP's `scripts/gen.py` runs open_clip.
"""

from __future__ import annotations

import torch

from edgevl.errors import ConfigError
from edgevl.tokenizer import EOT_TEXT, SOT_TEXT, get_tokenizer


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
