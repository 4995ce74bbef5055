"""NPO (Zhang et al., arXiv 2404.05868): loss = -(2/beta) * mean logsigmoid(-beta * log(pi_theta(y|x)/pi_ref(y|x))).

log pi(y|x) is the summed log-likelihood of the answer tokens. The reference is the model before unlearning; its
per-example log-likelihoods are fixed, so they are computed once in one forward pass over the forget set (with the
unlearning adapter disabled when ``lora`` is set), never from a second full copy. ``retain_loss`` adds a retain
term (NPO+RT, the TOFU/OpenUnlearning default): "nll", "kl" or "none".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.data import collator_for, encode_examples
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.registry import Paper
from hf_unlearn.training.engine import precompute_sequence_nll, prepare_model, run_unlearning
from hf_unlearn.training.losses import sequence_nll
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs


@dataclass
class NPOConfig(UnlearnConfig):
    beta: float = field(default=0.1, metadata={"help": "NPO inverse temperature beta (> 0)."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term: 'nll', 'kl' or 'none' (pure NPO)."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the NPO forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term."})
    calibrate: bool = field(
        default=False,
        metadata={
            "help": "Calibrated early stopping (docs/calibration.md). Off by default for NPO: its bounded forget loss "
            "and retain term recover utility over the schedule, and on the demo benchmark stopping early left the "
            "forget set more recognisable at no utility gain (benchmarks/results/calibration_demo.md). True (with "
            "holdout=) turns it on."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("beta", self.beta, 0, lo_open=True)
        check_choice("retain_loss", self.retain_loss, ("nll", "kl", "none"))
        check_range("gamma", self.gamma, 0)
        check_range("alpha", self.alpha, 0)


class NPOTrainer(UnlearnTrainer):
    def __init__(
        self,
        *args: Any,
        ref_nll: dict[str, float],
        beta: float,
        retain_loss: str,
        gamma: float,
        alpha: float,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.ref_nll, self.beta, self.retain_loss, self.gamma, self.alpha = ref_nll, beta, retain_loss, gamma, alpha

    def unlearning_loss(self, model, forget, retain):
        logits = model(**model_inputs(forget)).logits
        nll = sequence_nll(logits, forget["labels"], reduction="sum")  # [B]
        ref = torch.tensor([self.ref_nll[u] for u in self.current_uids], device=nll.device, dtype=nll.dtype)
        log_ratio = ref - nll  # log pi_theta - log pi_ref
        loss = -(2.0 / self.beta) * F.logsigmoid(-self.beta * log_ratio).mean()
        loss = self.gamma * loss
        if self.retain_loss != "none" and retain is not None:
            loss = loss + self.alpha * self.retain_term(model, retain, self.retain_loss)
        return loss


class NPO(UnlearningMethod):
    name = "npo"
    config_cls = NPOConfig
    calibrated_variant = True  # calibration is off by default; the calibration comparison runs it on too
    reference = Paper(
        title="Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        authors="Ruiqi Zhang and Licong Lin and Yu Bai and Song Mei",
        arxiv="2404.05868",
        year=2024,
        venue="COLM 2024",
    )
    description = (
        "Negative Preference Optimization: a bounded, preference-style loss that lowers the likelihood of the "
        "forget set relative to the original model. Approximate baseline."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 1e-3, "batch_size": 8}
    paper = "Zhang et al., Negative Preference Optimization (arXiv 2404.05868)"

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        c = self.config
        use_retain = c.retain_loss != "none"
        model, ref_mode = prepare_model(model, c)
        forget_tok = encode_examples(forget, tokenizer, max_length=c.max_length, template=c.template)
        if ref_mode == "adapter_disabled":
            with model.disable_adapter():
                ref_nll = precompute_sequence_nll(model, forget_tok, collator_for(tokenizer), c.batch_size)
        else:
            ref_nll = precompute_sequence_nll(model, forget_tok, collator_for(tokenizer), c.batch_size)
        model, info = run_unlearning(
            NPOTrainer,
            model,
            tokenizer,
            forget_tok,
            retain,
            c,
            use_retain=use_retain,
            model_ready=True,
            reference_mode=ref_mode,
            ref_nll=ref_nll,
            beta=c.beta,
            retain_loss=c.retain_loss,
            gamma=c.gamma,
            alpha=c.alpha,
        )
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])
