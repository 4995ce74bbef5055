"""SimNPO (Fan et al., *Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning*,
arXiv 2410.07163).

    L = forget_weight * E_F[ -(2/beta) * log sigmoid( -(beta/|y|) * log pi_theta(y|x) - gamma ) ] + alpha * L_retain

``log pi_theta(y|x)`` is the summed log-likelihood of the answer tokens and ``|y|`` their count, so
``-(1/|y|) log pi_theta(y|x)`` is the answer's mean token NLL. No reference model: NPO's ``pi_ref`` is replaced by
length normalisation and a reward margin ``gamma``. The retain term is the NLL of a retain batch (paper) or the KL to
the model before unlearning (``retain_loss="kl"``).

Defaults are the paper's TOFU forget10 setting (official code: beta 4.5, margin 0, forget weight 0.125, retain
weight 1). The official code writes the margin inside the scaling, ``beta * (mean NLL - gamma')``; that is this
formula with ``gamma = beta * gamma'`` (identical at the default 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.base import UnlearningMethod
from hf_unlearn.registry import Paper
from hf_unlearn.training.engine import ReferenceModel
from hf_unlearn.training.losses import sequence_nll
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs


@dataclass
class SimNPOConfig(UnlearnConfig):
    beta: float = field(
        default=4.5, metadata={"help": "Inverse temperature beta (> 0). Paper TOFU: 2.5 (forget05), 4.5 (forget10)."}
    )
    gamma: float = field(default=0.0, metadata={"help": "Reward margin gamma (>= 0; paper TOFU: 0)."})
    forget_weight: float = field(
        default=0.125,
        metadata={"help": "Weight of the SimNPO forget term (paper TOFU: 0.125 for forget10, 0.1375 for forget05)."},
    )
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (lambda in the paper)."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term: 'nll' (paper), 'kl' or 'none'."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("beta", self.beta, 0, lo_open=True)
        check_range("gamma", self.gamma, 0)
        check_range("forget_weight", self.forget_weight, 0)
        check_range("alpha", self.alpha, 0)
        check_choice("retain_loss", self.retain_loss, ("nll", "kl", "none"))


def simnpo_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """The SimNPO forget loss of a batch (mean over sequences).

    Args:
        logits: ``[B, T, V]``; labels: ``[B, T]`` with -100 outside the answer.
        beta, gamma: inverse temperature and reward margin.

    Example:
        >>> import torch
        >>> logits, labels = torch.zeros(1, 3, 4), torch.tensor([[-100, 1, 2]])   # mean NLL = log 4
        >>> round(float(simnpo_loss(logits, labels, beta=1.0, gamma=0.0)), 4)    # -2 log sigmoid(-(-log 4))
        0.4463
    """
    mean_nll = sequence_nll(logits, labels, reduction="mean")  # [B] = -(1/|y|) log pi(y|x)
    return -(2.0 / beta) * F.logsigmoid(beta * mean_nll - gamma).mean()


class SimNPOTrainer(UnlearnTrainer):
    """SimNPO forget term plus the retain term."""

    def __init__(
        self, *args: Any, beta: float, gamma: float, forget_weight: float, alpha: float, retain_loss: str, **kw: Any
    ):
        super().__init__(*args, **kw)
        self.beta, self.gamma, self.forget_weight, self.alpha, self.retain_loss = (
            beta, gamma, forget_weight, alpha, retain_loss
        )  # fmt: skip
        if retain_loss == "kl":  # the reference of the KL term, built from the unwrapped model (DDP-safe)
            self._reference = ReferenceModel(self.model, self.reference_mode)

    def unlearning_loss(self, model, forget, retain):
        logits = model(**model_inputs(forget)).logits
        loss = self.forget_weight * simnpo_loss(logits, forget["labels"], self.beta, self.gamma)
        if self.retain_loss != "none" and retain is not None:
            loss = loss + self.alpha * self.retain_term(model, retain, self.retain_loss)
        return loss


class SimNPO(UnlearningMethod):
    name = "simnpo"
    config_cls = SimNPOConfig
    reference = Paper(
        title="Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
        authors=(
            "Chongyu Fan and Jiancheng Liu and Licong Lin and Jinghan Jia and Ruiqi Zhang and Song Mei and Sijia Liu"
        ),
        arxiv="2410.07163",
        year=2024,
        venue="arXiv",
    )
    description = (
        "SimNPO: a reference-free, length-normalised version of Negative Preference Optimization with a reward "
        "margin, plus a retain-set NLL term. Approximate baseline."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 3e-3, "batch_size": 8}
    paper = (
        "Fan et al., Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning "
        "(arXiv 2410.07163)"
    )

    trainer_cls = SimNPOTrainer
    trainer_arguments = ("beta", "gamma", "forget_weight", "alpha", "retain_loss")
