"""Dataset reinforcement: write teacher embeddings, synthetic captions and augmentation records once.

`reinforce(ReinforceConfig(...))` writes DataCompDR-layout shards (resumable, torchrun-aware); `verify(folder)`
checks them against their manifest. See docs/reinforcement.md.
"""

from edgevl.reinforce.config import ReinforceConfig
from edgevl.reinforce.generate import reinforce
from edgevl.reinforce.verify import VerifyReport, verify

__all__ = ["ReinforceConfig", "VerifyReport", "reinforce", "verify"]
