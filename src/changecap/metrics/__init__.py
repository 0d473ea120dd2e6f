"""Caption metrics (coco-exact BLEU / ROUGE-L / CIDEr-D, METEOR 1.5 jar, PTB tokenisation, ``evaluate_captions``)
and change-detection metrics (``ConfusionMatrix``).

pycocoevalcap is never imported here: it is only the place the reference jars are found in, and the reference our
parity tests compare against.
"""

from changecap.metrics.bleu import bleu
from changecap.metrics.caption_eval import (
    METRIC_KEYS,
    SCORE_KEYS,
    SUBSET_CIDER_CAVEAT,
    CaptionEvalResult,
    SubsetResult,
    evaluate_captions,
    load_caption_json,
    meteor_session,
)
from changecap.metrics.change_detection import ChangeDetectionScores, ConfusionMatrix
from changecap.metrics.cider import cider_d
from changecap.metrics.meteor import (
    APPROX_LABEL,
    JAVA_LABEL,
    METEOR_JAR_ENV,
    MeteorScorer,
    meteor_approx,
    meteor_availability,
)
from changecap.metrics.ngrams import NgramCache
from changecap.metrics.ptb import PUNCTUATIONS, ptb_availability, ptb_tokenize
from changecap.metrics.rouge import rouge_l

__all__ = [
    "APPROX_LABEL",
    "JAVA_LABEL",
    "METEOR_JAR_ENV",
    "METRIC_KEYS",
    "PUNCTUATIONS",
    "SCORE_KEYS",
    "SUBSET_CIDER_CAVEAT",
    "CaptionEvalResult",
    "ChangeDetectionScores",
    "ConfusionMatrix",
    "MeteorScorer",
    "NgramCache",
    "SubsetResult",
    "bleu",
    "cider_d",
    "evaluate_captions",
    "load_caption_json",
    "meteor_approx",
    "meteor_availability",
    "meteor_session",
    "ptb_availability",
    "ptb_tokenize",
    "rouge_l",
]
