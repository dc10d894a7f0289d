"""CPU inference speed-ups beside the reference models: each reference block mapped to a fast form that computes
the same function (`table.TABLE`), and wrappers that skip the text work a pooled output never sees.

`optimize_for_inference` is the entry for CLIP models, `optimize_captioner` for LightCap, `trim_causal_padding`
the exact trimming training uses. Private torch ops are called through `edgevl.backend` only.
"""

from edgevl.fast.table import (
    TABLE,
    optimize_captioner,
    optimize_for_inference,
    optimize_modules,
    replace_modules,
    trim_causal_padding,
)

__all__ = [
    "TABLE",
    "optimize_captioner",
    "optimize_for_inference",
    "optimize_modules",
    "replace_modules",
    "trim_causal_padding",
]
