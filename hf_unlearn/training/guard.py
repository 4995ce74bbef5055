"""Divergence guard: stop a run whose loss, gradients or weights stop being finite, or whose weights explode.

Every Trainer of hf_unlearn (:class:`~hf_unlearn.training.trainer.UidTrainer`, hence :func:`finetune`, every
loss-based unlearning method and S3T's stages) carries a :class:`DivergenceGuard`; the retrain-free methods
(SSD, embedding_ga, partial_amnesiac, ...) are checked by :func:`hf_unlearn.unlearn` with :func:`check_weights`
after they ran. A diverged run raises :class:`DivergenceError` naming the step and what diverged, so nothing
downstream (saving, pushing, a ledger entry) ever sees the broken weights.

The checks:

* **loss**: the loss of every micro-batch is finite (the Trainer itself would silently replace a NaN loss by
  the running average in its logs);
* **gradients**: before every optimizer step, the total gradient norm is finite;
* **weights**: after every optimizer step, every trainable weight is finite and the L2 norm of the trainable
  weights is at most ``max_weight_growth`` times its value when training started (0 disables this part).

Example:
    >>> import torch
    >>> m = torch.nn.Linear(2, 2)
    >>> start = weight_norm(m)
    >>> with torch.no_grad():
    ...     _ = m.weight.mul_(1e6)
    >>> check_weights(m, start_norm=start, max_weight_growth=100.0, where="after SSD")
    Traceback (most recent call last):
    ...
    hf_unlearn.training.guard.DivergenceError: diverged after SSD: the weight norm grew ...
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback

DEFAULT_MAX_WEIGHT_GROWTH = 100.0


class DivergenceError(RuntimeError):
    """Training diverged (non-finite loss, gradients or weights, or exploding weights); the model was not saved.

    Attributes:
        step: the optimizer step (1-based) at which it was detected, or None outside a training loop.
        what: ``"loss"``, ``"gradients"`` or ``"weights"``.
    """

    def __init__(self, message: str, *, step: int | None = None, what: str = "weights"):
        super().__init__(message)
        self.step = step
        self.what = what


def _params(model: Any, trainable_only: bool = True) -> list[tuple[str, torch.Tensor]]:
    return [
        (n, p)
        for n, p in model.named_parameters()
        if p.is_floating_point() and (p.requires_grad or not trainable_only)
    ]


@torch.no_grad()
def weight_norm(model: Any, trainable_only: bool = False) -> float:
    """The L2 norm of the model's floating-point weights (all of them, or only the trainable ones), as a float.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(3, 1, bias=False)
        >>> _ = torch.nn.init.ones_(m.weight)
        >>> round(weight_norm(m), 4)
        1.7321
    """
    params = [p.detach() for _, p in _params(model, trainable_only)]
    if not params:
        return 0.0
    norms = _norms(params)  # [n_tensors] fp64 on one device, computed without a host sync per tensor
    if not bool(torch.isfinite(norms).all()):  # huge but finite entries overflow fp32 squares: redo those in fp64
        norms = torch.stack(
            [p.double().norm().to(norms.device) if not torch.isfinite(n) else n for p, n in zip(params, norms)]
        )
    return float(torch.linalg.vector_norm(norms))


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    dev = tensors[0].device
    return torch.stack([t.float().norm().to(dev) for t in tensors]).double()


@torch.no_grad()
def _first_non_finite(named: list[tuple[str, torch.Tensor]]) -> tuple[str, int] | None:
    for n, t in named:
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            return n, bad
    return None


def check_weights(
    model: Any,
    *,
    start_norm: float | None = None,
    max_weight_growth: float = DEFAULT_MAX_WEIGHT_GROWTH,
    where: str = "",
    step: int | None = None,
    trainable_only: bool = False,
) -> float:
    """Raise :class:`DivergenceError` when a weight is not finite or the weight norm exploded.

    Args:
        model: an ``nn.Module`` (a PeftModel too).
        start_norm: :func:`weight_norm` of the same weights before the run; with ``max_weight_growth > 0``, a norm
            above ``max_weight_growth * start_norm`` is an explosion.
        max_weight_growth: the allowed growth factor of the weight norm (0 disables the growth check).
        where: context for the message (e.g. ``"at step 12"``, ``"after ssd"``).
        step: the optimizer step, stored on the error.
        trainable_only: check only the parameters with ``requires_grad``.

    Returns:
        The current weight norm.

    Example:
        >>> import torch
        >>> check_weights(torch.nn.Linear(2, 2), start_norm=1.0) < 100
        True
    """
    named = _params(model, trainable_only)
    norm = weight_norm(model, trainable_only)
    if not math.isfinite(norm):
        bad = _first_non_finite(named)
        detail = f"{bad[1]} non-finite value(s) in {bad[0]!r}" if bad else f"the weight norm overflowed ({norm})"
        raise DivergenceError(
            f"diverged {where}: {detail} (the learning rate is probably too high); the model was not saved",
            step=step,
            what="weights",
        )
    if max_weight_growth and start_norm and norm > max_weight_growth * start_norm:
        raise DivergenceError(
            f"diverged {where}: the weight norm grew from {start_norm:.4g} to {norm:.4g}, more than "
            f"max_weight_growth={max_weight_growth:g} times (lower the learning rate, or raise max_weight_growth if "
            "this is intended); the model was not saved",
            step=step,
            what="weights",
        )
    return norm


class DivergenceGuard(TrainerCallback):
    """A TrainerCallback that stops training with :class:`DivergenceError` as soon as it diverges.

    Args:
        max_weight_growth: allowed growth factor of the trainable-weight norm over the run (0: finiteness only).
        check_every: check the weights every N optimizer steps (loss and gradients are checked every step).
        rollback: keep a copy (on CPU) of the trainable weights at the last healthy check and restore it before
            raising, so the model object is left in its last finite state (costs one copy of the trainable weights).

    Example:
        >>> guard = DivergenceGuard(max_weight_growth=50.0)
        >>> # UidTrainer(..., divergence_guard=guard) or finetune(..., max_weight_growth=50.0)
    """

    def __init__(
        self, max_weight_growth: float = DEFAULT_MAX_WEIGHT_GROWTH, check_every: int = 1, rollback: bool = False
    ):
        if not isinstance(max_weight_growth, (int, float)) or isinstance(max_weight_growth, bool):
            raise ValueError(f"max_weight_growth must be a number (0 disables it), got {max_weight_growth!r}")
        if max_weight_growth and max_weight_growth <= 1:
            raise ValueError(f"max_weight_growth must be 0 (off) or > 1, got {max_weight_growth}")
        if not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be a positive int, got {check_every!r}")
        self.max_weight_growth = float(max_weight_growth)
        self.check_every = check_every
        self.rollback = rollback
        self.start_norm: float | None = None
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._snapshot_step = 0

    # ------------------------------------------------------------------ standard TrainerCallback events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.start_norm = weight_norm(model, trainable_only=True)
            self._save(model, state.global_step)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        named = [(n, p.grad.detach()) for n, p in _params(model) if p.grad is not None]
        if not named or bool(torch.isfinite(_norms([g for _, g in named])).all()):  # one host sync per step
            return
        bad = _first_non_finite(named)
        if bad:  # (a finite gradient whose fp32 norm overflows is clipped, not a divergence by itself)
            self._fail(
                model, f"{bad[1]} non-finite gradient value(s) in {bad[0]!r}", state.global_step + 1, "gradients"
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.check_every:
            return
        try:
            check_weights(
                model,
                start_norm=self.start_norm,
                max_weight_growth=self.max_weight_growth,
                where=f"at step {state.global_step}",
                step=state.global_step,
                trainable_only=True,
            )
        except DivergenceError as err:
            self._fail(model, str(err).split(": ", 1)[1], state.global_step, "weights")
        self._save(model, state.global_step)

    # ------------------------------------------------------------------ UidTrainer hook point
    def on_batch_end(self, trainer, model, inputs, uids, loss) -> None:
        if loss is not None and torch.is_tensor(loss) and not bool(torch.isfinite(loss.detach()).all()):
            step = trainer.state.global_step + 1 if trainer is not None else None
            self._fail(model, f"the loss is {float(loss.detach().float().mean())}", step, "loss")

    # ------------------------------------------------------------------ helpers
    def _save(self, model: Any, step: int) -> None:
        if self.rollback:
            self._snapshot = {n: p.detach().to("cpu", copy=True) for n, p in _params(model)}
            self._snapshot_step = step

    @torch.no_grad()
    def _fail(self, model: Any, detail: str, step: int | None, what: str) -> None:
        note = "the model was not saved"
        if self.rollback and self._snapshot is not None:
            params = dict(model.named_parameters())
            for n, saved in self._snapshot.items():
                params[n].copy_(saved.to(params[n].device))
            note = f"the weights were rolled back to step {self._snapshot_step}; the model was not saved"
        detail = detail.replace("; the model was not saved", "")
        advice = "" if what == "weights" else " (lower the learning rate, or clip gradients with max_grad_norm)"
        raise DivergenceError(
            f"training diverged at step {step}: {detail}{advice}; {note}",
            step=step,
            what=what,
        )
