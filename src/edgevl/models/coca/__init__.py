"""open_clip's CoCa captioner: `CoCa` (towers in `towers.py`), built from a config by `build_coca`, with
`generate` (`generate.py`, `beam.py`) over a KV cache (`decoding.py`)."""

from edgevl.models.coca.decoding import MaxLengthCriteria
from edgevl.models.coca.generate import generate
from edgevl.models.coca.model import CoCa, build_coca

__all__ = ["CoCa", "MaxLengthCriteria", "build_coca", "generate"]
