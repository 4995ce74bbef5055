"""Evaluation: pure metrics (:mod:`.metrics`), the model runner (:mod:`.runner`), MUSE on text corpora
(:mod:`.muse`), reports (:mod:`.report`)."""

from hf_unlearn.evaluation import metrics
from hf_unlearn.evaluation.muse import evaluate_muse
from hf_unlearn.evaluation.runner import (
    MIA_ATTACKS,
    answer_stats,
    evaluate_split,
    evaluate_unlearning,
    generate_answers,
    grad_norms,
    load_result,
)

__all__ = [
    "MIA_ATTACKS",
    "answer_stats",
    "evaluate_split",
    "evaluate_muse",
    "evaluate_unlearning",
    "generate_answers",
    "grad_norms",
    "load_result",
    "metrics",
]
