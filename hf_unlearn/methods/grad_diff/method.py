"""Gradient difference: loss = - gamma * NLL(forget) + alpha * retain_term.

The retain term is the NLL of the retain batch (``retain_loss="nll"``) or the KL divergence from the reference
model's next-token distribution on it (``"kl"``). The reference is the model with its unlearning adapter
disabled when ``lora`` is set (no second copy), else a frozen copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.registry import Paper
from hf_unlearn.training.engine import ReferenceModel, run_unlearning
from hf_unlearn.training.losses import kl_to_reference
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs


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


def retain_term(trainer: UnlearnTrainer, model: Any, retain: dict[str, Any], kind: str) -> Any:
    """NLL of the retain batch, or KL to the trainer's reference on it."""
    if kind == "nll":
        return trainer.nll(model, retain)[0]
    if getattr(trainer, "_reference", None) is None:
        trainer._reference = ReferenceModel(model, trainer.reference_mode)
    ref_logits = trainer._reference.logits(model, retain)
    logits = model(**model_inputs(retain)).logits
    return kl_to_reference(logits, ref_logits, retain["labels"])


class GradDiffTrainer(UnlearnTrainer):
    def __init__(self, *args: Any, retain_loss: str = "nll", gamma: float = 1.0, alpha: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retain_loss, self.gamma, self.alpha = retain_loss, gamma, alpha

    def unlearning_loss(self, model, forget, retain):
        forget_nll, _ = self.nll(model, forget)
        return -self.gamma * forget_nll + self.alpha * retain_term(self, model, retain, self.retain_loss)


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

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        c = self.config
        model, info = run_unlearning(
            GradDiffTrainer,
            model,
            tokenizer,
            forget,
            retain,
            c,
            retain_loss=c.retain_loss,
            gamma=c.gamma,
            alpha=c.alpha,
        )
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])
