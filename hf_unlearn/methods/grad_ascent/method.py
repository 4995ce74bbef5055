"""Gradient ascent: loss = - NLL(forget). The simplest baseline; it diverges without early stopping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf_unlearn.config import UnlearnConfig
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.registry import Paper
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
    config_cls = GradAscentConfig
    reference = Paper(
        title="Knowledge Unlearning for Mitigating Privacy Risks in Language Models",
        authors=(
            "Joel Jang and Dongkeun Yoon and Sohee Yang and Sungmin Cha and Moontae Lee and Lajanugen Logeswaran and "
            "Minjoon Seo"
        ),
        arxiv="2210.01504",
        year=2022,
        venue="ACL 2023",
    )
    description = "Gradient ascent on the forget set (the language-modelling loss is maximised). Approximate baseline."
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 1e-3, "batch_size": 8}
    paper = "Jang et al., Knowledge Unlearning for Mitigating Privacy Risks in Language Models (arXiv 2210.01504)"

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        # retain= is never trained on here; calibration (when on) checks the retain tolerance on it
        model, info = run_unlearning(
            GradAscentTrainer, model, tokenizer, forget, retain, self.config, use_retain=False
        )
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])
