"""Gradient ascent with layer-wise partial updates (arXiv 2403.07611, reconstructed from the abstract).

Loss ``-gamma * NLL(forget) + alpha * NLL(retain)`` (retain term only with ``alpha > 0``), and at every step only
the top-rho fraction of each tensor's gradient entries is updated (:class:`~hf_unlearn.methods.partial.TopRhoGradMask`;
``rho = 1``: naive gradient ascent / gradient difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.partial import PAPER, REFERENCE, PartialUpdateConfig, run_partial


@dataclass
class PartialGradAscentConfig(PartialUpdateConfig):
    """Gradient ascent with top-rho partial updates (every PartialUpdateConfig / UnlearnConfig field)."""


class PartialGradAscent(UnlearningMethod):
    name = "partial_grad_ascent"
    config_cls = PartialGradAscentConfig
    reference = REFERENCE
    description = (
        "Optimization-based unlearning with layer-wise partial updates: gradient ascent on the forget set, "
        "updating only the largest-gradient fraction of each tensor. Approximate; reconstructed from the paper's "
        "abstract."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 1e-3, "batch_size": 8}
    paper = PAPER

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        model, info = run_partial(model, tokenizer, forget, retain, self.config, forget_sign=-1.0)
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])
