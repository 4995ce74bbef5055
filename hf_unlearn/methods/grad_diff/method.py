"""Gradient difference: loss = - gamma * NLL(forget) + alpha * retain_term.

The retain term is the NLL of the retain batch (``retain_loss="nll"``) or the KL divergence from the reference
model's next-token distribution on it (``"kl"``). The reference is the model with its unlearning adapter
disabled when ``lora`` is set (no second copy), else a frozen copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.base import UnlearningMethod
from hf_unlearn.registry import Paper
from hf_unlearn.training.trainer import UnlearnTrainer


@dataclass
class GradDiffConfig(UnlearnConfig):
    retain_loss: str = field(default="nll", metadata={"help": "Retain term: 'nll' or 'kl' (to the reference)."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the forget (ascent) term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("retain_loss", self.retain_loss, ("nll", "kl"))
        check_range("gamma", self.gamma, 0)
        check_range("alpha", self.alpha, 0)


class GradDiffTrainer(UnlearnTrainer):
    def __init__(self, *args: Any, retain_loss: str = "nll", gamma: float = 1.0, alpha: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retain_loss, self.gamma, self.alpha = retain_loss, gamma, alpha

    def unlearning_loss(self, model, forget, retain):
        forget_nll, _ = self.nll(model, forget)
        return -self.gamma * forget_nll + self.alpha * self.retain_term(model, retain, self.retain_loss)


class GradDiff(UnlearningMethod):
    name = "grad_diff"
    config_cls = GradDiffConfig
    reference = Paper(
        title="TOFU: A Task of Fictitious Unlearning for LLMs",
        authors="Pratyush Maini and Zhili Feng and Avi Schwarzschild and Zachary C. Lipton and J. Zico Kolter",
        arxiv="2401.06121",
        year=2024,
        venue="COLM 2024",
    )
    description = (
        "Gradient difference: gradient ascent on the forget set plus gradient descent on the retain set (as in "
        "the TOFU baselines; after Liu et al., Continual Learning and Private Unlearning). Approximate baseline."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 1e-3, "batch_size": 8}
    needs_retain = True
    paper = "Liu et al., Continual Learning and Private Unlearning (CoLLAs 2022); TOFU (arXiv 2401.06121) baseline"

    trainer_cls = GradDiffTrainer
    trainer_arguments = ("retain_loss", "gamma", "alpha")
