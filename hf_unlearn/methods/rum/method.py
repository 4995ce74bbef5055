"""RUM: refine the forget set by memorization, then unlearn group by group (low memorization first).

Zhao et al., "What makes unlearning hard and what to do about it" (RUM, NeurIPS 2024) and Zhao & Triantafillou,
"Scalability of memorization-based machine unlearning" (arXiv 2410.16516): memorization scores (or cheap proxies)
split F into low / medium / high groups; each group is unlearned in turn with its own algorithm and settings.
The LLM adaptation (answer-token scores, recipe-relative per-group settings) is a reconstruction:
docs/methods/rum.md.

Example:
    >>> import hf_unlearn
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(9)]
    >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1?\\nAnswer: A1."], num_layers=1, vocab_size=280)
    >>> res = hf_unlearn.unlearn(model, [f"u{i}" for i in range(6)], method="rum", tokenizer=tok,
    ...                          train_dataset=data, num_epochs=1, batch_size=2)
    >>> [g["name"] for g in res.details["groups"]]
    ['low', 'medium', 'high']
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets

from hf_unlearn.data import exclude_uids, select_uids
from hf_unlearn.data.loading import UID
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.rum.config import NEGGRAD_PLUS, RUMConfig
from hf_unlearn.methods.rum.scores import INFERENCE_SCORES, LEARNING_EVENTS, inference_scores
from hf_unlearn.registry import Paper
from hf_unlearn.training.calibration import CALIBRATION_FIELDS
from hf_unlearn.training.engine import prepare_model, run_unlearning
from hf_unlearn.training.trainer import UnlearnTrainer


class NegGradPlusTrainer(UnlearnTrainer):
    """NegGrad+ (Kurmanji et al., SCRUB paper; RUM's default): ``alpha * CE(retain) - (1 - alpha) * CE(forget)``.

    ``driven_by="forget"``: the paired batches are ``{"forget": F batch, "retain": R batch}`` (a pass over F is one
    epoch). ``driven_by="retain"``: the training set was built with the roles swapped (R drives, F is cycled), so the
    ``"forget"`` sub-batch holds retain examples and ``"retain"`` the forget examples; the loss swaps them back.
    """

    def __init__(self, *args: Any, alpha: float = 0.99, driven_by: str = "forget", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.driven_by = driven_by

    def unlearning_loss(self, model, forget, retain):
        if self.driven_by == "retain":
            forget, retain = retain, forget
        forget_nll, _ = self.nll(model, forget)
        retain_nll = self.retain_term(model, retain)
        return self.alpha * retain_nll - (1.0 - self.alpha) * forget_nll


# --------------------------------------------------------------------------------------------------- grouping
def group_by_score(
    scores: Mapping[str, float],
    grouping: str = "top_median_bottom",
    *,
    group_size: int | None = None,
    n_groups: int = 3,
    rest: str = "nearest",
) -> list[list[str]]:
    """Split uids into disjoint groups by memorization score, LOW memorization first.

    Ties are broken by uid, so the result depends only on the scores (deterministic).

    Args:
        scores: ``{uid: score}`` (higher = more memorized).
        grouping: ``"top_median_bottom"``: the ``n`` lowest, the ``n`` closest to the median of the rest, the ``n``
            highest; ``"quantiles"``: ``n_groups`` equal-count groups (sizes differ by at most one).
        group_size: ``n`` (default: ``len(scores) // 3``, with the remainder in the medium group: a partition).
        rest: when ``3n < len(scores)``: ``"nearest"`` adds each remaining uid to the group whose median score is
            closest, ``"skip"`` leaves it out (official RUM, which only unlearns the groups).

    Returns:
        A list of uid lists (each sorted by score).

    Raises:
        ValueError: unknown grouping, NaN scores, or ``3n > len(scores)``.

    Example:
        >>> group_by_score({"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.45, "e": 0.0, "f": 1.0})
        [['e', 'a'], ['d', 'c'], ['b', 'f']]
        >>> group_by_score({"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.45, "e": 0.0}, group_size=1, rest="skip")
        [['e'], ['d'], ['b']]
    """
    if not scores:
        raise ValueError("no scores to group")
    bad = [u for u, s in scores.items() if s is None or s != s]
    if bad:
        raise ValueError(f"scores contain NaN/None for {len(bad)} uid(s), e.g. {bad[:3]}")
    order = sorted(scores, key=lambda u: (float(scores[u]), u))  # ascending, deterministic
    n_all = len(order)
    if grouping == "quantiles":
        if n_groups > n_all:
            raise ValueError(f"n_groups={n_groups} is more than the {n_all} examples to group")
        return [list(chunk) for chunk in np.array_split(np.array(order, dtype=object), n_groups)]
    if grouping != "top_median_bottom":
        raise ValueError(f"grouping must be 'top_median_bottom' or 'quantiles', got {grouping!r}")
    if n_all < 3:
        raise ValueError(f"top_median_bottom needs at least 3 examples, got {n_all}")
    if group_size is None:
        n = n_all // 3
        low, high = order[:n], order[n_all - n :]
        return [low, order[n : n_all - n], high]
    n = group_size
    if 3 * n > n_all:
        raise ValueError(f"group_size={n}: 3 groups of {n} need {3 * n} examples but the forget set has {n_all}")
    low, high = order[:n], order[n_all - n :]
    middle = order[n : n_all - n]
    med = float(np.median([scores[u] for u in order]))
    mid = sorted(sorted(middle, key=lambda u: (abs(float(scores[u]) - med), u))[:n], key=lambda u: (scores[u], u))
    groups = [low, mid, high]
    if rest == "nearest":
        left = [u for u in middle if u not in set(mid)]
        centres = [float(np.median([scores[u] for u in g])) for g in groups]
        for u in left:
            g = int(np.argmin([abs(float(scores[u]) - c) for c in centres]))
            groups[g].append(u)
        groups = [sorted(g, key=lambda u: (scores[u], u)) for g in groups]
    elif rest != "skip":
        raise ValueError(f"rest must be 'nearest' or 'skip', got {rest!r}")
    return groups


def group_names(k: int) -> list[str]:
    """``low, medium, high`` for 3 groups, else ``q0 .. q{k-1}`` (low first)."""
    return ["low", "medium", "high"] if k == 3 else [f"q{i}" for i in range(k)]


# ------------------------------------------------------------------------------------------------------ method
class RUM(UnlearningMethod):
    name = "rum"
    config_cls = RUMConfig
    reference = Paper(
        title="Scalability of memorization-based machine unlearning",
        authors="Kairan Zhao and Peter Triantafillou",
        arxiv="2410.16516",
        year=2024,
        venue="arXiv",
    )
    description = (
        "RUM (refine, then meta-unlearn) with memorization proxies: forget examples are scored by how memorized "
        "they are (cheap proxies recorded during training), split into groups, and unlearned group by group, each "
        "with its own algorithm and hyper-parameters. Approximate."
    )
    unlearn_arguments = ("scores", "recorder")
    needs_retain = True
    paper = (
        "Zhao et al., What makes unlearning hard and what to do about it (RUM, NeurIPS 2024); Zhao & Triantafillou, "
        "Scalability of memorization-based machine unlearning (arXiv 2410.16516)"
    )

    # epoch_over="forget": the loop these defaults (and the harness results built on them) were set for; the
    # official loop (epoch_over="retain") runs about |R|/|F| times more steps per epoch and needs fewer epochs
    # (benchmarks/results/memorization_loops*.md).
    benchmark_defaults = {
        "num_epochs": 4,
        "learning_rate": 1e-3,
        "batch_size": 8,
        "score": "confidence",
        "epoch_over": "forget",
    }
    benchmark_bf16 = False

    @classmethod
    def training_recorders(cls, ctx: Any) -> list[Any]:
        """Learning events recorded while the target trains (the ``confidence`` proxy groups F)."""
        from hf_unlearn.methods.rum.recorder import LearningEventRecorder

        return [LearningEventRecorder()]

    @classmethod
    def benchmark_inputs(cls, ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
        """The recorder (without one, the ``loss`` proxy) and the holdout (calibrated early stopping per group)."""
        rec = (ctx.recorders.get("rum") or [None])[0]
        if rec is None:
            config["score"] = "loss"
        return {"recorder": rec, "holdout": ctx.holdout}

    def unlearn(
        self,
        model: Any,
        tokenizer: Any,
        forget: Dataset,
        retain: Dataset | None = None,
        *,
        scores: Mapping[str, float] | None = None,
        recorder: Any = None,
        **kwargs: Any,
    ) -> MethodOutput:
        """Score (unless ``scores`` are given), group, and unlearn each group in turn.

        Args:
            model, tokenizer, forget, retain: as for every method (retain excludes the forget set).
            scores: ``{uid: memorization score}`` (higher = more memorized) covering every forget uid, e.g. from
                :func:`~hf_unlearn.methods.rum.scores.true_memorization`.
            recorder: a :class:`~hf_unlearn.methods.rum.recorder.LearningEventRecorder` used during fine-tuning,
                when ``config.score`` is a learning event.
        """
        if kwargs:
            raise TypeError(f"rum got unexpected argument(s) {sorted(kwargs)}; it takes scores= and recorder=")
        c: RUMConfig = self.config
        timings: dict[str, float] = {}
        forget_uids = list(forget[UID])
        t0 = time.perf_counter()
        score_map, source = self._scores(model, tokenizer, forget, scores, recorder)
        missing = [u for u in forget_uids if u not in score_map]
        if missing:
            raise KeyError(f"no memorization score for {len(missing)} forget uid(s), e.g. {missing[:3]}")
        forget_scores = {u: float(score_map[u]) for u in forget_uids}
        timings["score"] = time.perf_counter() - t0
        groups = group_by_score(forget_scores, c.grouping, group_size=c.group_size, n_groups=c.n_groups, rest=c.rest)
        k = len(groups)
        names = group_names(k)
        for g in range(k):
            c.per_group("group_methods", g, k)  # fail early on a bad per-group list length
        model, ref_mode = prepare_model(model, c)  # one unlearning adapter shared by every group (when lora)
        details: dict[str, Any] = {
            "score": c.score if scores is None else "given",
            "score_source": source,
            "grouping": c.grouping,
            "retain_mode": c.retain_mode,
            "groups": [],
        }
        tokens = 0
        for g, uids in enumerate(groups):
            group_ds = select_uids(forget, uids)
            retain_g = self._retain_for(retain, forget, groups, g)
            method = c.per_group("group_methods", g, k)
            t_g = time.perf_counter()
            model, info, overrides = self._run_group(model, tokenizer, group_ds, retain_g, g, k, method, ref_mode)
            seconds = time.perf_counter() - t_g
            timings[f"group_{names[g]}"] = seconds
            tokens += int(info.get("tokens", 0))
            vals = [forget_scores[u] for u in uids]
            details["groups"].append(
                {
                    "name": names[g],
                    "uids": list(uids),
                    "n": len(uids),
                    "score_min": min(vals),
                    "score_max": max(vals),
                    "method": method,
                    "settings": overrides,
                    "retain_size": len(retain_g),
                    "steps": info.get("steps"),
                    "train_loss": info.get("train_loss"),
                    "calibration": _calibration_summary(info.get("calibration")),
                    "seconds": seconds,
                }
            )
        skipped = sorted(set(forget_uids) - {u for grp in groups for u in grp})
        details["skipped_uids"] = skipped
        details["scores"] = forget_scores
        return MethodOutput(model=model, details=details, timings=timings, tokens_processed=tokens)

    # ----------------------------------------------------------------------------------------------- helpers
    def _scores(
        self, model: Any, tokenizer: Any, forget: Dataset, scores: Mapping[str, float] | None, recorder: Any
    ) -> tuple[Mapping[str, float], str]:
        c: RUMConfig = self.config
        if scores is not None:
            return {str(u): v for u, v in dict(scores).items()}, "given"
        if c.score in LEARNING_EVENTS:
            if recorder is None:
                raise ValueError(
                    f"score={c.score!r} is a learning event: pass recorder= (the LearningEventRecorder used while "
                    "fine-tuning), or scores=, or an inference-time score " + str(list(INFERENCE_SCORES))
                )
            return recorder.scores(c.score), "recorder"
        if c.score in INFERENCE_SCORES:
            res = inference_scores(
                model, tokenizer, forget, [c.score], k=c.min_k, max_length=c.max_length, template=c.template
            )
            return res[c.score].scores, "model"
        raise ValueError(
            f"score={c.score!r} cannot be computed here; use one of {list(INFERENCE_SCORES + LEARNING_EVENTS)} or "
            "pass scores= (e.g. true_memorization(...).scores or holdout_kl_scores(...).scores)"
        )

    def _retain_for(self, retain: Dataset | None, forget: Dataset, groups: list[list[str]], g: int) -> Dataset:
        """The retain set of group g: R (default) or, officially, R plus the groups still to be unlearned."""
        if retain is None or len(retain) == 0:
            raise ValueError("rum needs a non-empty retain set")
        retain = exclude_uids(retain, forget[UID])  # never train on F, whatever the caller passed
        if self.config.retain_mode == "exclude_forget":
            return retain
        later = [u for grp in groups[g + 1 :] for u in grp]
        if not later:
            return retain
        extra = select_uids(forget, later)
        common = [col for col in retain.column_names if col in extra.column_names]
        return concatenate_datasets([retain.select_columns(common), extra.select_columns(common)])

    def _group_config(self, g: int, k: int, method: str) -> dict[str, Any]:
        c: RUMConfig = self.config
        base = {
            "learning_rate": c.learning_rate * c.per_group("lr_scales", g, k),
            "num_epochs": c.num_epochs * c.per_group("epoch_scales", g, k),
            "max_steps": c.max_steps,
            "batch_size": c.batch_size,
            "gradient_accumulation_steps": c.gradient_accumulation_steps,
            "weight_decay": c.weight_decay,
            "warmup_steps": c.warmup_steps,
            "max_grad_norm": c.max_grad_norm,
            "max_length": c.max_length,
            "template": c.template,
            "seed": c.seed + g,
            "bf16": c.bf16,
            "logging_steps": c.logging_steps,
            "disable_tqdm": c.disable_tqdm,
            "lora": None,  # the adapter (if any) is already attached by RUM
            **{k_: getattr(c, k_) for k_ in CALIBRATION_FIELDS},  # each group calibrates (holdout= of unlearn())
            **c.extra_training_arguments(),  # any further TrainingArguments field (gradient_checkpointing, optim...)
        }
        if method == NEGGRAD_PLUS:
            base["alpha"] = c.per_group("alphas", g, k)
        if c.group_overrides is not None:
            base.update(c.per_group("group_overrides", g, k))
        return base

    def _run_group(
        self, model: Any, tokenizer: Any, group: Dataset, retain: Dataset, g: int, k: int, method: str, ref_mode: str
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        settings = self._group_config(g, k, method)
        if method == NEGGRAD_PLUS:
            alpha = settings.pop("alpha")
            cfg = RUMConfig.from_dict({k_: v for k_, v in settings.items() if k_ in RUMConfig.option_names()})
            driven_by = self.config.epoch_over
            # epoch_over="retain" (official loop): R drives the epoch and F is cycled alongside. PairedDataset pairs
            # every item of its first argument with a cycled partner from its second, so R goes first here and the
            # trainer swaps the roles back in its loss.
            first, second = (retain, group) if driven_by == "retain" else (group, retain)
            model, info = run_unlearning(
                NegGradPlusTrainer,
                model,
                tokenizer,
                first,
                second,
                cfg,
                model_ready=True,
                reference_mode=ref_mode,
                alpha=alpha,
                driven_by=driven_by,
            )
            return model, info, {**settings, "alpha": alpha, "epoch_over": driven_by}
        from hf_unlearn.registry import get_method

        spec = get_method(method)
        cfg = spec.config_cls.from_dict(settings)
        out = spec.method_cls(cfg).unlearn(model, tokenizer, group, retain)
        info = {**{k_: v for k_, v in out.details.items() if k_ in ("steps", "train_loss", "calibration")}}
        info["tokens"] = out.tokens_processed
        return out.model, info, settings


def _calibration_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a group's calibration stopped (without its per-check history)."""
    return None if report is None else {k: v for k, v in report.items() if k != "history"}
