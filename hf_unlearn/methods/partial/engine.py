"""Shared config and training loop of the partial-update methods (``partial_label_flip``, ``partial_grad_ascent``).

Both run the core engine :func:`hf_unlearn.training.engine.run_unlearning` with a :class:`TopRhoGradMask` callback.
The loss is ``forget_sign * gamma * NLL(forget batch) + alpha * NLL(retain batch)`` (the retain term only when
``alpha > 0``): ``forget_sign = +1`` for label flipping (descent on wrong targets), ``-1`` for gradient ascent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.partial.masks import MASK_MODES, TopRhoGradMask, trainable_parameters
from hf_unlearn.training.engine import prepare_model, run_unlearning
from hf_unlearn.training.trainer import UnlearnTrainer

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class PartialUpdateConfig(UnlearnConfig):
    """Options of layer-wise partial updates (on top of every UnlearnConfig field)."""

    rho: float = field(
        default=0.1,
        metadata={"help": "Fraction of each tensor's entries updated per step (top |grad|); 1 = naive full update."},
    )
    mask_mode: str = field(
        default="restore",
        metadata={
            "help": "'restore': masked entries are written back after each optimizer step (exactly top-rho entries "
            "change, whatever momentum/weight decay do); 'grad_only': only zero the masked gradients."
        },
    )
    optimizer: str = field(
        default="adamw",
        metadata={"help": "'adamw' (Trainer default) or 'sgd' (plain SGD: no momentum, no weight decay)."},
    )
    gamma: float = field(default=1.0, metadata={"help": "Weight of the forget term."})
    alpha: float = field(
        default=0.0, metadata={"help": "Weight of the retain NLL term (0: no retain term, no retain data needed)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rho", self.rho, 0, 1, lo_open=True)
        check_choice("mask_mode", self.mask_mode, MASK_MODES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("gamma", self.gamma, 0)
        check_range("alpha", self.alpha, 0)


class PartialTrainer(UnlearnTrainer):
    """``forget_sign * gamma * NLL(F) + alpha * NLL(R)``."""

    def __init__(self, *args: Any, forget_sign: float = -1.0, gamma: float = 1.0, alpha: float = 0.0, **kw: Any):
        super().__init__(*args, **kw)
        self.forget_sign, self.gamma, self.alpha = forget_sign, gamma, alpha

    def unlearning_loss(self, model, forget, retain):
        loss = self.forget_sign * self.gamma * self.nll(model, forget)[0]
        if retain is not None and self.alpha > 0:
            loss = loss + self.alpha * self.retain_term(model, retain)
        return loss


def run_partial(
    model: Any,
    tokenizer: Any,
    forget: Any,
    retain: Any,
    config: PartialUpdateConfig,
    *,
    forget_sign: float,
    callbacks: list[Any] | None = None,
    eval_forget: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Train :class:`PartialTrainer` with a top-rho gradient mask; returns ``(model, info)`` with mask stats.

    ``eval_forget``: the unaltered forget set calibration measures (when ``forget`` holds flipped labels)."""
    use_retain = config.alpha > 0
    if use_retain and (retain is None or len(retain) == 0):
        raise ValueError("alpha > 0 adds a retain term: pass a retain set (retain= or train_dataset=), or alpha=0")
    model, ref_mode = prepare_model(model, config)
    mask = TopRhoGradMask(rho=config.rho, mode=config.mask_mode)
    extra: dict[str, Any] = {}
    if config.optimizer == "sgd":
        params = list(trainable_parameters(model).values())
        extra["optimizers"] = (torch.optim.SGD(params, lr=config.learning_rate), None)
    model, info = run_unlearning(
        PartialTrainer,
        model,
        tokenizer,
        forget,
        retain,
        config,
        callbacks=[mask, *(callbacks or [])],
        use_retain=use_retain,
        eval_forget=eval_forget,
        model_ready=True,
        reference_mode=ref_mode,
        forget_sign=forget_sign,
        gamma=config.gamma,
        alpha=config.alpha,
        **extra,
    )
    sel, tot = mask.stats["entries_selected"], mask.stats["entries"]
    info.update(
        rho=config.rho,
        mask_mode=config.mask_mode,
        optimizer=config.optimizer,
        masked_steps=mask.stats["steps"],
        updated_fraction=(sel / tot) if tot else 1.0,
    )
    return model, info
