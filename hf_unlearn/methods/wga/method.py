"""WGA, weighted gradient ascent (Wang et al., *Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go
Beyond*, ICLR 2025, arXiv 2502.19301; the OpenUnlearning ``WGA`` trainer).

    L = forget_weight * ( -(1/N) * sum_{t in answer tokens} sg[p_theta(y_t|x, y_<t)^beta] * CE_t ) + alpha * L_retain

``CE_t = -log p_theta(y_t|...)``; ``sg`` stops the gradient (the weight is a constant of each step); ``N`` counts the
answer tokens of the batch. A token the model already gives a low probability gets a small weight, so the ascent
slows down by itself instead of pushing ever-lower probabilities (plain gradient ascent's collapse). ``beta = 0`` is
plain gradient ascent. Defaults follow OpenUnlearning's WGA config: beta 1, forget and retain weights 1, NLL retain
term.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.base import UnlearningMethod
from hf_unlearn.registry import Paper
from hf_unlearn.training.engine import ReferenceModel
from hf_unlearn.training.losses import token_logprobs
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs


@dataclass
class WGAConfig(UnlearnConfig):
    beta: float = field(
        default=1.0, metadata={"help": "Exponent of the token weight p(y_t)^beta (>= 0; 0 = plain gradient ascent)."}
    )
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the weighted-ascent forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term: 'nll' (OpenUnlearning), 'kl' or 'none'."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("beta", self.beta, 0)
        check_range("forget_weight", self.forget_weight, 0)
        check_range("alpha", self.alpha, 0)
        check_choice("retain_loss", self.retain_loss, ("nll", "kl", "none"))


def wga_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """The WGA forget loss: minus the token-mean of ``sg[p(y_t)^beta] * CE_t`` over the batch's answer tokens.

    Args:
        logits: ``[B, T, V]``; labels: ``[B, T]`` with -100 outside the answer; beta: weight exponent.

    Example:
        >>> import torch
        >>> logits, labels = torch.zeros(1, 2, 4), torch.tensor([[-100, 3]])     # p = 1/4, CE = log 4
        >>> round(float(wga_loss(logits, labels, beta=1.0)), 4)                 # -(1/4) * log 4
        -0.3466
    """
    logp, mask = token_logprobs(logits, labels)  # [B, T-1]; 0 where masked
    weight = (logp.detach() * beta).exp()  # p(y_t)^beta, no gradient
    return (weight * logp).masked_fill(~mask, 0.0).sum() / mask.sum().clamp(min=1)


class WGATrainer(UnlearnTrainer):
    """Weighted gradient ascent plus the retain term."""

    def __init__(self, *args: Any, beta: float, forget_weight: float, alpha: float, retain_loss: str, **kw: Any):
        super().__init__(*args, **kw)
        self.beta, self.forget_weight, self.alpha, self.retain_loss = beta, forget_weight, alpha, retain_loss
        if retain_loss == "kl":
            self._reference = ReferenceModel(self.model, self.reference_mode)

    def unlearning_loss(self, model, forget, retain):
        logits = model(**model_inputs(forget)).logits
        loss = self.forget_weight * wga_loss(logits, forget["labels"], self.beta)
        if self.retain_loss != "none" and retain is not None:
            loss = loss + self.alpha * self.retain_term(model, retain, self.retain_loss)
        return loss


class WGA(UnlearningMethod):
    name = "wga"
    config_cls = WGAConfig
    reference = Paper(
        title="Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
        authors=(
            "Qizhou Wang and Jin Peng Zhou and Zhanke Zhou and Saebyeol Shin and Bo Han and Kilian Q. Weinberger"
        ),
        arxiv="2502.19301",
        year=2025,
        venue="ICLR 2025",
    )
    description = (
        "Weighted gradient ascent: gradient ascent on the forget set with each token weighted by its current "
        "probability to a power beta (no gradient through the weight), which slows the ascent down on tokens "
        "already forgotten; plus a retain-set NLL term. Approximate baseline."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 1e-3, "batch_size": 8}
    paper = (
        "Wang et al., Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond (arXiv 2502.19301)"
    )

    trainer_cls = WGATrainer
    trainer_arguments = ("beta", "forget_weight", "alpha", "retain_loss")
