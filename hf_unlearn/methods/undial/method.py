"""UNDIAL (Dong et al., *UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language
Models*, NAACL 2025, arXiv 2402.10052).

For every answer position t of a forget example, with z_t the frozen model's logits and y_t the label token:

    q_t = softmax(z_t - gamma * onehot(y_t))                      (the teacher: y_t suppressed, the rest kept)
    L   = forget_weight * (1/N) * sum_t CE(q_t, p_theta(.|x, y_<t))  [+ alpha * L_retain]

``CE(q, p) = -sum_v q_v log p_v`` (its gradient equals that of KL(q || p): the teacher is fixed). The student only
has to move probability mass off the memorised token onto what the original model already considered, a
minimisation with a fixed target, which is why it does not collapse like gradient ascent. The teacher is the model
before unlearning: the same model with the unlearning adapter disabled when ``lora`` is set, else a frozen copy.

Defaults: gamma 10 and no retain term (OpenUnlearning's UNDIAL config: beta 10, alpha 0). Unlike OpenUnlearning,
which averages the cross-entropy over every position (prompt and padding included, where its ``-100`` labels index
the vocabulary from the end), we average over the answer tokens only, as the method is defined.
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
from hf_unlearn.training.losses import token_distributions
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs


@dataclass
class UNDIALConfig(UnlearnConfig):
    gamma: float = field(
        default=10.0, metadata={"help": "How much the target token's logit is lowered in the teacher (> 0)."}
    )
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the self-distillation forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term (when retain_loss is not 'none')."})
    retain_loss: str = field(default="none", metadata={"help": "Retain term: 'none' (paper), 'nll' or 'kl'."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("gamma", self.gamma, 0, lo_open=True)
        check_range("forget_weight", self.forget_weight, 0)
        check_range("alpha", self.alpha, 0)
        check_choice("retain_loss", self.retain_loss, ("none", "nll", "kl"))


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean over answer positions of the cross-entropy from the adjusted teacher to the student.

    Args:
        logits: student ``[B, T, V]``; ref_logits: teacher ``[B, T, V]`` (no gradient needed); labels: ``[B, T]``.
        gamma: how much the label token's teacher logit is lowered.

    Example:
        >>> import torch
        >>> z, labels = torch.zeros(1, 2, 2), torch.tensor([[-100, 0]])
        >>> q = torch.softmax(torch.tensor([-1.0, 0.0]), -1)     # teacher after lowering token 0 by 1
        >>> expected = -(q * torch.log(torch.tensor([0.5, 0.5]))).sum()  # the student is uniform
        >>> bool(torch.isclose(undial_loss(z, z, labels, gamma=1.0), expected))
        True
    """
    student, _, targets, mask = token_distributions(logits, labels)  # [B, T-1, V]; [B, T-1] each
    onehot = F.one_hot(targets, num_classes=student.shape[-1]).to(student.dtype)
    teacher = F.softmax(ref_logits[:, :-1, :].float() - gamma * onehot, dim=-1).detach()  # [B, T-1, V]
    ce = -(teacher * student).sum(-1)  # [B, T-1]
    return (ce * mask).sum() / mask.sum().clamp(min=1)


class UNDIALTrainer(UnlearnTrainer):
    """Self-distillation toward the adjusted teacher (the reference model), plus an optional retain term."""

    def __init__(self, *args: Any, gamma: float, forget_weight: float, alpha: float, retain_loss: str, **kw: Any):
        super().__init__(*args, **kw)
        self.gamma, self.forget_weight, self.alpha, self.retain_loss = gamma, forget_weight, alpha, retain_loss
        self._reference = ReferenceModel(self.model, self.reference_mode)  # the teacher (also the KL reference)

    def unlearning_loss(self, model, forget, retain):
        ref_logits = self._reference.logits(model, forget)
        logits = model(**model_inputs(forget)).logits
        loss = self.forget_weight * undial_loss(logits, ref_logits, forget["labels"], self.gamma)
        if self.retain_loss != "none" and retain is not None:
            loss = loss + self.alpha * self.retain_term(model, retain, self.retain_loss)
        return loss


class UNDIAL(UnlearningMethod):
    name = "undial"
    config_cls = UNDIALConfig
    reference = Paper(
        title="UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
        authors="Yijiang River Dong and Hongzhou Lin and Mikhail Belkin and Ramon Huerta and Ivan Vulic",
        arxiv="2402.10052",
        year=2024,
        venue="NAACL 2025",
    )
    description = (
        "UNDIAL: self-distillation on the forget set toward the original model's next-token distribution with the "
        "memorised token's logit lowered by a fixed amount; a minimisation with a fixed target, so training "
        "stays stable. Approximate baseline."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 1e-3, "batch_size": 8}
    paper = (
        "Dong et al., UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in LLMs (arXiv 2402.10052)"
    )

    trainer_cls = UNDIALTrainer
    trainer_arguments = ("gamma", "forget_weight", "alpha", "retain_loss")
