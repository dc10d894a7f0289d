"""Caption metrics equal to pycocoevalcap 1.2: BLEU-1..4, METEOR (Java), ROUGE-L, CIDEr-D; SPICE unavailable.

Also a PTB-style tokenizer that needs no Java and `CiderD`, a vectorised CIDEr-D with fixed document
frequencies for self-critical (SCST) rewards. `attribute_accuracy` checks what a world caption says (colour,
shape, count) against the scene's labels.
"""

from edgevl.eval.captioning.attributes import CaptionAttributes, attribute_accuracy, parse_caption
from edgevl.eval.captioning.bleu import bleu
from edgevl.eval.captioning.cider import CiderD, cider_d
from edgevl.eval.captioning.evaluate import (
    METRIC_NAMES,
    evaluate_captions,
    load_references,
    load_results,
    results_to_dict,
    save_scores,
)
from edgevl.eval.captioning.meteor import MetricUnavailableError, meteor
from edgevl.eval.captioning.ptb_tokenizer import ptb_tokenize
from edgevl.eval.captioning.rouge import rouge_l

__all__ = [
    "METRIC_NAMES",
    "CaptionAttributes",
    "CiderD",
    "MetricUnavailableError",
    "attribute_accuracy",
    "bleu",
    "cider_d",
    "evaluate_captions",
    "load_references",
    "load_results",
    "meteor",
    "parse_caption",
    "ptb_tokenize",
    "results_to_dict",
    "rouge_l",
    "save_scores",
]
