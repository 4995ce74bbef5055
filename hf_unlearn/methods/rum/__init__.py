"""``rum``: memorization-based unlearning (RUM; Zhao & Triantafillou, arXiv 2410.16516), with memorization proxies.

Score the forget set by memorization (true Feldman-Zhang memorization, learning events recorded during fine-tuning
with :class:`LearningEventRecorder`, holdout retraining, or inference-time LOSS / ZLib / Min-K%), split it into
groups, and unlearn the groups one after another, low memorization first. See docs/methods/rum.md.
"""

from hf_unlearn.methods.rum.config import RUMConfig
from hf_unlearn.methods.rum.method import RUM, NegGradPlusTrainer, group_by_score, group_names
from hf_unlearn.methods.rum.recorder import LearningEventRecorder
from hf_unlearn.methods.rum.scores import (
    MEMORIZATION_SIGN,
    ScoreResult,
    holdout_kl_scores,
    inference_scores,
    sequence_event_stats,
    sequence_stats,
    subset_masks,
    symmetric_kl_per_sequence,
    to_memorization,
    train_subset_model,
    true_memorization,
)
from hf_unlearn.registry import register_method

register_method(RUM)

__all__ = [
    "MEMORIZATION_SIGN",
    "RUM",
    "LearningEventRecorder",
    "NegGradPlusTrainer",
    "RUMConfig",
    "ScoreResult",
    "group_by_score",
    "group_names",
    "holdout_kl_scores",
    "inference_scores",
    "sequence_event_stats",
    "sequence_stats",
    "subset_masks",
    "symmetric_kl_per_sequence",
    "to_memorization",
    "train_subset_model",
    "true_memorization",
]
