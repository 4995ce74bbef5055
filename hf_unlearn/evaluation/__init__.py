"""Evaluation: pure metrics (:mod:`.metrics`), the model runner (:mod:`.runner`), MUSE on text corpora
(:mod:`.muse`), reports (:mod:`.report`).

Names are imported lazily (PEP 562), so ``hf-unlearn --help`` (which registers ``evaluate``) stays fast.
"""

import importlib
from typing import TYPE_CHECKING, Any

_RUNNER_NAMES = (
    "MIA_ATTACKS",
    "answer_stats",
    "evaluate_split",
    "evaluate_unlearning",
    "generate_answers",
    "grad_norms",
    "load_result",
)


def __getattr__(name: str) -> Any:
    if name == "metrics":
        return importlib.import_module("hf_unlearn.evaluation.metrics")
    if name == "evaluate_muse":
        return importlib.import_module("hf_unlearn.evaluation.muse").evaluate_muse
    if name in _RUNNER_NAMES:
        return getattr(importlib.import_module("hf_unlearn.evaluation.runner"), name)
    raise AttributeError(f"module 'hf_unlearn.evaluation' has no attribute {name!r}")


if TYPE_CHECKING:
    from hf_unlearn.evaluation import metrics  # noqa: F401
    from hf_unlearn.evaluation.muse import evaluate_muse  # noqa: F401
    from hf_unlearn.evaluation.runner import (  # noqa: F401
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
    "evaluate_muse",
    "answer_stats",
    "evaluate_split",
    "evaluate_unlearning",
    "generate_answers",
    "grad_norms",
    "load_result",
    "metrics",
]
