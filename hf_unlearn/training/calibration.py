"""Calibrated early stopping and exact best-state selection for every method trained by ``run_unlearning``.

Loss-based unlearning stops too early (the forget set is still recognisable) or goes too far (utility collapses,
or the forget set becomes *less* familiar than data the model never saw, itself a detectable trace).
:class:`CalibrationCallback` is a ``transformers.TrainerCallback`` that checks, every ``eval_every`` optimizer
steps, only what its stopping rule needs, on a fixed token budget, without generation::

    before training:  target = target_nll or mean NLL of the holdout set under the model before unlearning
                      r0 = retain mean NLL;  snapshot = CPU copy of the trainable parameters
    at every check k: f = forget mean NLL, r = retain mean NLL (and the Min-K%++ AUC, criterion "mia")
                      r - r0 > retain_tolerance (or a NaN)  -> restore the snapshot bit for bit, stop
                      criterion "nll": f >= target            -> stop here (keep step k)
                      criterion "mia": AUC(forget vs holdout) <= 0.5 + mia_epsilon -> stop here
                      else snapshot = step k

Under ``accelerate`` / DDP the evaluation rows are split across processes and the sums all-reduced, and rank 0's
decision is broadcast, so every rank stops (and restores) at the same step.

The holdout set reaches the engine as ``holdout=`` of :func:`hf_unlearn.unlearn`: the dispatcher opens a
:func:`holdout_scope` around the method, so a method that trains through
:func:`~hf_unlearn.training.engine.run_unlearning` is calibrated without passing the holdout on itself.

Example:
    >>> import hf_unlearn
    >>> # res = hf_unlearn.unlearn(model, forget, retain, method="npo", tokenizer=tok, holdout=holdout)
    >>> # res.details["calibration"]["stop_reason"], res.details["calibration"]["kept_step"]
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from hf_unlearn.evaluation.metrics import mia_auc, min_k_plus_plus_scores, min_k_plus_plus_stats
from hf_unlearn.training.losses import sequence_nll, token_logprobs
from hf_unlearn.training.trainer import model_inputs

CRITERIA = ("nll", "mia")
# The UnlearnConfig fields calibration reads (a method that builds sub-configs, like RUM's groups, copies them).
CALIBRATION_FIELDS = (
    "calibrate",
    "calibration_criterion",
    "target_nll",
    "retain_tolerance",
    "eval_every",
    "mia_epsilon",
    "calibration_tokens",
)
# Why training stopped (``report()["stop_reason"]``).
STOP_REASONS = ("target_reached", "mia_reached", "retain_tolerance", "non_finite", "target_already_met", "end")

_HOLDOUT: contextvars.ContextVar[Any] = contextvars.ContextVar("hf_unlearn_holdout", default=None)


@contextlib.contextmanager
def holdout_scope(holdout: Any) -> Iterator[None]:
    """Make ``holdout`` the default ``holdout=`` of every :func:`run_unlearning` call inside the block.

    Example:
        >>> with holdout_scope(None):
        ...     current_holdout() is None
        True
    """
    token = _HOLDOUT.set(holdout)
    try:
        yield
    finally:
        _HOLDOUT.reset(token)


def current_holdout() -> Any:
    """The holdout set of the innermost :func:`holdout_scope` (None outside one)."""
    return _HOLDOUT.get()


def budget_rows(tokenized: Any, token_budget: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample of tokenized rows whose total length stays within ``token_budget`` (at least one row).

    Args:
        tokenized: a tokenized Dataset (or list of row dicts) with ``input_ids``.
        token_budget: maximum total number of tokens.
        seed: shuffling seed (the same rows on every process and every call).

    Example:
        >>> rows = [{"input_ids": [1] * 10} for _ in range(5)]
        >>> len(budget_rows(rows, 25)), len(budget_rows(rows, 3))
        (2, 1)
    """
    n = len(tokenized)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out, used = [], 0
    for i in order:
        row = tokenized[i]
        size = len(row["input_ids"])
        if out and used + size > token_budget:
            break
        out.append(row)
        used += size
    return out


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate_rows(
    model: Any, rows: list[dict[str, Any]], collator: Any, *, batch_size: int = 16, min_k: float | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-row token-mean NLL of the label tokens (and Min-K%++ scores when ``min_k`` is set), in eval mode.

    Rows are split across processes (row i on rank i % world) and the results all-reduced, so every rank returns
    the same arrays; one process evaluates everything.

    Returns:
        ``(avg_nll [n], minkpp [n] or None)`` as float64 numpy arrays.
    """
    rank, world = _dist()
    device = next(model.parameters()).device
    n = len(rows)
    out = torch.zeros(2, n, dtype=torch.float64, device=device)
    mine = list(range(rank, n, world))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(mine), batch_size):
            idx = mine[start : start + batch_size]
            batch = collator([{k: v for k, v in rows[i].items() if k != "uid"} for i in idx])
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            logits = model(**model_inputs(batch)).logits
            nll = sequence_nll(logits, batch["labels"])  # [b]
            out[0, idx] = nll.double()
            if min_k is not None:
                logp, mask = token_logprobs(logits, batch["labels"])  # [b, T-1]
                mu, sigma = min_k_plus_plus_stats(logits[:, :-1])  # [b, T-1] each
                scores = min_k_plus_plus_scores(logp.cpu(), mu.cpu(), sigma.cpu(), k=min_k, mask=mask.cpu())
                out[1, idx] = torch.as_tensor(scores, dtype=torch.float64, device=device)
    finally:
        model.train(was_training)
    if world > 1:
        torch.distributed.all_reduce(out)
    res = out.cpu().numpy()
    return res[0], (res[1] if min_k is not None else None)


class CalibrationCallback(TrainerCallback):
    """Stop unlearning at the calibrated point and restore the last state within the retain tolerance, exactly.

    Args:
        forget: tokenized forget rows (the budgeted sample the criterion is measured on).
        collator: pads rows into a batch (``hf_unlearn.data.collator_for(tokenizer)``).
        retain: tokenized retain rows for the tolerance check (None disables it).
        holdout: tokenized holdout rows: the default target (their mean NLL before unlearning) and, with criterion
            ``"mia"``, the non-members of the membership signal.
        criterion: ``"nll"`` (forget mean NLL reaches ``target_nll``) or ``"mia"`` (Min-K%++ AUC of forget vs
            holdout reaches ``0.5 + mia_epsilon`` or lower).
        target_nll: the forget-NLL target; None: the holdout's mean NLL at the start.
        retain_tolerance: nats per token the retain mean NLL may rise above its start; None: no check.
        eval_every: optimizer steps between checks (the last step is always checked).
        mia_epsilon: tolerance of the membership criterion around 0.5.
        min_k: Min-K%++ fraction of tokens (METRICS.md: 0.4).
        eval_batch_size: rows per forward pass of a check.

    After training, :meth:`report` says where and why it stopped.

    Example:
        >>> # cb = CalibrationCallback(forget=rows_f, retain=rows_r, holdout=rows_h, collator=collator_for(tok))
        >>> # Trainer(..., callbacks=[cb]).train(); cb.report()["stop_reason"]
    """

    def __init__(
        self,
        *,
        forget: list[dict[str, Any]],
        collator: Any,
        retain: list[dict[str, Any]] | None = None,
        holdout: list[dict[str, Any]] | None = None,
        criterion: str = "nll",
        target_nll: float | None = None,
        retain_tolerance: float | None = 0.5,
        eval_every: int = 1,
        mia_epsilon: float = 0.05,
        min_k: float = 0.4,
        eval_batch_size: int = 16,
    ):
        if criterion not in CRITERIA:
            raise ValueError(f"calibration criterion must be one of {list(CRITERIA)}, got {criterion!r}")
        if not forget:
            raise ValueError("calibration needs at least one forget row")
        if criterion == "mia" and not holdout:
            raise ValueError("calibration_criterion='mia' compares the forget set with a holdout set: pass holdout=")
        if criterion == "nll" and target_nll is None and not holdout:
            raise ValueError("calibration_criterion='nll' needs target_nll or a holdout set (holdout=)")
        if not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be an int >= 1, got {eval_every!r}")
        self.forget, self.retain, self.holdout, self.collator = forget, retain or None, holdout or None, collator
        self.criterion, self.target_nll, self.retain_tolerance = criterion, target_nll, retain_tolerance
        self.eval_every, self.mia_epsilon, self.min_k, self.eval_batch_size = (
            eval_every,
            mia_epsilon,
            min_k,
            eval_batch_size,
        )
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._params: dict[str, torch.nn.Parameter] = {}
        self._report: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------- checks
    def _measure(self, model: Any, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        mia = self.criterion == "mia"
        kw = dict(batch_size=self.eval_batch_size, min_k=self.min_k if mia else None)
        f_nll, f_mkpp = evaluate_rows(model, self.forget, self.collator, **kw)
        row: dict[str, Any] = {"step": step, "forget_nll": float(f_nll.mean())}
        if self.retain is not None:
            r_nll, _ = evaluate_rows(model, self.retain, self.collator, batch_size=self.eval_batch_size)
            row["retain_nll"] = float(r_nll.mean())
        if mia:
            h_nll, h_mkpp = evaluate_rows(model, self.holdout, self.collator, **kw)
            finite = np.isfinite(f_mkpp).all() and np.isfinite(h_mkpp).all()
            row["mia_auc"] = mia_auc(f_mkpp, h_mkpp) if finite else float("nan")
            row["holdout_nll"] = float(h_nll.mean())
        self._report["eval_seconds"] += time.perf_counter() - t0
        self._report["checks"] += 1
        return row

    def _decide(self, row: dict[str, Any]) -> str | None:
        """The stop reason for a check's measurements, or None to continue."""
        r0 = self._report["retain_nll_before"]
        if not math.isfinite(row["forget_nll"]):
            return "non_finite"
        if self.retain is not None and self.retain_tolerance is not None:
            r = row["retain_nll"]
            if not math.isfinite(r) or r - r0 > self.retain_tolerance:
                return "retain_tolerance"
        if self.criterion == "nll" and row["forget_nll"] >= self._report["target_nll"]:
            return "target_reached"
        if self.criterion == "mia" and math.isfinite(row["mia_auc"]) and row["mia_auc"] <= 0.5 + self.mia_epsilon:
            return "mia_reached"
        return None

    @staticmethod
    def _agree(reason: str | None, device: Any) -> str | None:
        """Rank 0's decision on every rank (identical inputs give identical decisions; this makes it certain)."""
        rank, world = _dist()
        if world == 1:
            return reason
        codes = (None, *STOP_REASONS)
        t = torch.tensor([codes.index(reason)], dtype=torch.long, device=device)
        torch.distributed.broadcast(t, src=0)
        return codes[int(t.item())]

    def _take_snapshot(self) -> None:
        self._snapshot = {n: p.detach().to("cpu", copy=True) for n, p in self._params.items()}

    @torch.no_grad()
    def _restore(self) -> None:
        for n, p in self._params.items():
            p.copy_(self._snapshot[n].to(p.device))

    # ------------------------------------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._report = {
            "criterion": self.criterion,
            "eval_every": self.eval_every,
            "retain_tolerance": self.retain_tolerance,
            "mia_epsilon": self.mia_epsilon if self.criterion == "mia" else None,
            "eval_rows": {
                "forget": len(self.forget),
                "retain": len(self.retain or []),
                "holdout": len(self.holdout or []),
            },
            "eval_tokens": {
                k: int(sum(len(r["input_ids"]) for r in rows or []))
                for k, rows in (("forget", self.forget), ("retain", self.retain), ("holdout", self.holdout))
            },
            "eval_seconds": 0.0,
            "checks": 0,
        }
        t0 = time.perf_counter()
        if self.target_nll is not None:
            target, source = float(self.target_nll), "target_nll"
        elif self.holdout is not None:
            h_nll, _ = evaluate_rows(model, self.holdout, self.collator, batch_size=self.eval_batch_size)
            target, source = float(h_nll.mean()), "holdout"
        else:
            target, source = None, None
        self._report.update(target_nll=target, target_source=source)
        self._report["eval_seconds"] += time.perf_counter() - t0
        row = self._measure(model, 0)
        self._report.update(
            forget_nll_before=row["forget_nll"],
            retain_nll_before=row.get("retain_nll"),
            mia_auc_before=row.get("mia_auc"),
            history=[row],
        )
        met = (self.criterion == "nll" and row["forget_nll"] >= target) or (
            self.criterion == "mia" and row["mia_auc"] <= 0.5 + self.mia_epsilon
        )
        # A Trainer always runs its first step; when the target is already met, that step is undone (exactly).
        self._already_met = self._agree("target_already_met" if met else None, next(model.parameters()).device)
        self._take_snapshot()
        self._last_check = 0
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        device = next(model.parameters()).device
        if self._already_met:
            self._restore()
            return self._stop(control, "target_already_met", step, kept=0)
        if step % self.eval_every and step < state.max_steps:
            return control
        row = self._measure(model, step)
        self._report["history"].append(row)
        reason = self._agree(self._decide(row), device)
        if reason in ("retain_tolerance", "non_finite"):
            self._restore()
            return self._stop(control, reason, step, kept=self._last_check)
        if reason is not None:
            return self._stop(control, reason, step, kept=step)
        self._last_check = step
        if step >= state.max_steps:
            return self._stop(control, "end", step, kept=step)
        self._take_snapshot()
        return control

    def _stop(self, control, reason: str, step: int, kept: int):
        self._report.update(stop_reason=reason, stopped_at_step=step, kept_step=kept, rolled_back_steps=step - kept)
        self._snapshot = None  # free the copy
        control.should_training_stop = True
        return control

    def report(self) -> dict[str, Any]:
        """Where and why training stopped: criterion, target (and its source), the start values, ``stop_reason``
        (one of :data:`STOP_REASONS`), ``kept_step`` (the step whose state the model holds), ``rolled_back_steps``,
        ``checks``, ``eval_seconds`` and the per-check ``history``."""
        return dict(self._report)


def build_calibration(
    config: Any, collator: Any, forget_tok: Any, retain_tok: Any = None, holdout_tok: Any = None
) -> CalibrationCallback | None:
    """The :class:`CalibrationCallback` a config asks for, or None when calibration is off or has no target.

    Active when ``config.calibrate`` is True and there is a target: ``target_nll`` or a holdout set (criterion
    ``"nll"``), a holdout set (criterion ``"mia"``). Each evaluation set is a seeded sample within
    ``config.calibration_tokens`` tokens.

    Example:
        >>> from hf_unlearn.config import UnlearnConfig
        >>> build_calibration(UnlearnConfig(calibrate=False), None, [{"input_ids": [1]}]) is None
        True
    """
    if not getattr(config, "calibrate", False):
        return None
    criterion = getattr(config, "calibration_criterion", "nll")
    has_target = holdout_tok is not None and len(holdout_tok) > 0
    if criterion == "nll" and config.target_nll is not None:
        has_target = True
    if not has_target:
        return None
    budget = config.calibration_tokens
    return CalibrationCallback(
        forget=budget_rows(forget_tok, budget, config.seed),
        retain=budget_rows(retain_tok, budget, config.seed) if retain_tok is not None and len(retain_tok) else None,
        holdout=budget_rows(holdout_tok, budget, config.seed) if has_target and holdout_tok is not None else None,
        collator=collator,
        criterion=criterion,
        target_nll=config.target_nll,
        retain_tolerance=config.retain_tolerance,
        eval_every=config.eval_every,
        mia_epsilon=config.mia_epsilon,
    )


__all__ = [
    "CALIBRATION_FIELDS",
    "CRITERIA",
    "STOP_REASONS",
    "CalibrationCallback",
    "budget_rows",
    "build_calibration",
    "current_holdout",
    "evaluate_rows",
    "holdout_scope",
]
