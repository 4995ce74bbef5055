"""Gradient ascent: loss = - NLL(forget). The simplest baseline; it diverges without early stopping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf_unlearn.config import UnlearnConfig
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.training.engine import run_unlearning
from hf_unlearn.training.trainer import UnlearnTrainer


@dataclass
class GradAscentConfig(UnlearnConfig):
    """Gradient ascent on the forget set (all fields of UnlearnConfig)."""


class GradAscentTrainer(UnlearnTrainer):
    def unlearning_loss(self, model, forget, retain):
        nll, _ = self.nll(model, forget)
        return -nll


class GradAscent(UnlearningMethod):
    name = "grad_ascent"
    paper = "Jang et al., Knowledge Unlearning for Mitigating Privacy Risks in Language Models (arXiv 2210.01504)"

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        # retain= is never trained on here; calibration (when on) checks the retain tolerance on it
        model, info = run_unlearning(
            GradAscentTrainer, model, tokenizer, forget, retain, self.config, use_retain=False
        )
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])
