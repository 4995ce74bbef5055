"""Memorization scores of LLM sequences, all normalised to "higher = more memorized".

Four families (Zhao & Triantafillou, arXiv 2410.16516, building on RUM; adapted from image classes to answer
tokens of QA sequences, see docs/methods/rum.md):

* **true memorization** (Feldman & Zhang): train K models on random subsets (ratio 0.7) and score
  ``mean correctness over models whose subset holds x  -  mean over models whose subset does not``; correctness of a
  sequence is its mean answer-token accuracy (``metric="accuracy"``) or minus its mean answer-token NLL
  (``metric="nll"``). :func:`true_memorization`; tiny models only (K fine-tunes).
* **learning events**, recorded free during the original fine-tune by
  :class:`~hf_unlearn.methods.rum.recorder.LearningEventRecorder`: target-token confidence, max-confidence,
  negative entropy, binary (argmax) accuracy, averaged over the steps an example was trained on, and the cumulative
  loss. An example the model is confident about early and often is typical: high confidence = LOW memorization, so
  those four are negated (:data:`MEMORIZATION_SIGN`).
* **holdout retraining**: fine-tune a copy on held-out data; score = per-sequence mean symmetric KL between the two
  models' next-token distributions over answer tokens (:func:`holdout_kl_scores`).
* **inference-time** scores of the final model: LOSS, ZLib ratio and Min-K% as defined in METRICS.md
  (:func:`inference_scores`, using :mod:`hf_unlearn.evaluation.metrics`). Their MIA convention "higher = looks less
  like a member" is already the memorization direction in the Feldman sense: typical sequences are predicted well
  whether or not they were trained on, atypical ones keep a higher loss.

Every function returns a :class:`ScoreResult`: per-uid scores and the wall time that produced them.

Example:
    >>> import torch
    >>> logits = torch.tensor([[[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    >>> labels = torch.tensor([[-100, 0, -100], [-100, 0, -100]])  # one answer token, predicted at position 0
    >>> ev = sequence_event_stats(logits, labels)  # item 0 is confident, item 1 is uniform
    >>> [round(v, 3) for v in ev["confidence"].tolist()]
    [0.982, 0.5]
    >>> bool(to_memorization("confidence", ev["confidence"])[0] < to_memorization("confidence", ev["confidence"])[1])
    True
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hf_unlearn.data import collator_for, load_examples, model_batches, tokenize_any
from hf_unlearn.data.loading import UID
from hf_unlearn.training.losses import token_distributions
from hf_unlearn.training.trainer import model_inputs

#: sign turning each raw statistic into "higher = more memorized".
MEMORIZATION_SIGN: dict[str, float] = {
    "confidence": -1.0,
    "max_confidence": -1.0,
    "neg_entropy": -1.0,
    "accuracy": -1.0,
    "cumulative_loss": 1.0,
    "loss": 1.0,
    "zlib": 1.0,
    "min_k": 1.0,
    "holdout_kl": 1.0,
    "true": 1.0,
}
LEARNING_EVENTS = ("confidence", "max_confidence", "neg_entropy", "accuracy", "cumulative_loss")
INFERENCE_SCORES = ("loss", "zlib", "min_k")
SCORE_NAMES = tuple(MEMORIZATION_SIGN)


@dataclass
class ScoreResult:
    """Per-uid memorization scores (higher = more memorized) and what they cost.

    Attributes:
        name: the score's name (a key of :data:`MEMORIZATION_SIGN`).
        scores: ``{uid: score}``.
        seconds: wall time spent producing them (training included).
        details: score-specific extras (e.g. the per-run matrices of true memorization).
    """

    name: str
    scores: dict[str, float]
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def to_memorization(name: str, values: Any) -> np.ndarray:
    """Apply the direction of ``name`` so that higher = more memorized.

    Raises:
        KeyError: unknown score name (lists the valid ones).
    """
    if name not in MEMORIZATION_SIGN:
        raise KeyError(f"unknown memorization score {name!r}; valid: {sorted(MEMORIZATION_SIGN)}")
    arr = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    return MEMORIZATION_SIGN[name] * arr


# ----------------------------------------------------------------------------------------- per-sequence statistics
def sequence_event_stats(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sequence learning-event statistics averaged over the answer tokens (labels != -100).

    Args:
        logits: ``[B, T, V]`` (unshifted, as the model returns them).
        labels: ``[B, T]`` with -100 on the prompt and padding.

    Returns:
        ``{name: [B] float tensor}`` with ``confidence`` (p of the target token), ``max_confidence`` (max_v p_v),
        ``neg_entropy`` (sum_v p_v log p_v), ``accuracy`` (argmax == target) and ``loss`` (mean NLL), all RAW
        (confidence-like: higher = better learned). Sequences without an answer token get NaN.
    """
    logp, tok_lp, safe, mask = token_distributions(logits, labels)  # [B, T-1, V], then [B, T-1] each
    p = logp.exp()
    per_tok = {
        "confidence": tok_lp.exp(),
        "max_confidence": p.max(-1).values,
        "neg_entropy": (p * logp).sum(-1),
        "accuracy": (logp.argmax(-1) == safe).float(),
        "loss": -tok_lp,
    }
    n = mask.sum(1).float()
    n = torch.where(n > 0, n, torch.full_like(n, float("nan")))
    return {k: (v * mask).sum(1) / n for k, v in per_tok.items()}


def _iter_batches(
    model: Any, tokenizer: Any, dataset: Any, *, max_length: int, template: str, batch_size: int
) -> Iterator[tuple[list[str], dict[str, torch.Tensor]]]:
    ds = load_examples(dataset)
    yield from model_batches(model, tokenizer, ds, batch_size=batch_size, max_length=max_length, template=template)


@torch.no_grad()
def sequence_stats(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    max_length: int = 128,
    template: str = "plain",
    batch_size: int = 32,
    token_logprobs: bool = False,
) -> dict[str, Any]:
    """Teacher-forced per-sequence statistics of a (QA or text) dataset under ``model`` (eval mode).

    Returns:
        ``{"uids": [...], "confidence"/"max_confidence"/"neg_entropy"/"accuracy"/"loss": np.ndarray [n]}`` and,
        with ``token_logprobs``, ``"token_logprobs"``: a ragged list of the answer-token log-probs.
    """
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {"uids": []}
    ragged: list[np.ndarray] = []
    try:
        for uids, batch in _iter_batches(
            model, tokenizer, dataset, max_length=max_length, template=template, batch_size=batch_size
        ):
            logits = model(**model_inputs(batch)).logits
            for k, v in sequence_event_stats(logits, batch["labels"]).items():
                out.setdefault(k, []).append(v.cpu().double().numpy())
            out["uids"] += uids
            if token_logprobs:
                _, lp, _, m = token_distributions(logits, batch["labels"])
                ragged += [lp[i][m[i]].cpu().double().numpy() for i in range(lp.shape[0])]
    finally:
        model.train(was_training)
    for k in list(out):
        if k != "uids":
            out[k] = np.concatenate(out[k])
    if token_logprobs:
        out["token_logprobs"] = ragged
    return out


# ----------------------------------------------------------------------------------------------- inference time
def inference_scores(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    names: tuple[str, ...] | list[str] = INFERENCE_SCORES,
    *,
    k: float = 0.4,
    max_length: int = 128,
    template: str = "plain",
    batch_size: int = 32,
) -> dict[str, ScoreResult]:
    """LOSS, ZLib ratio and Min-K% of each sequence under ``model`` (METRICS.md definitions), as memorization scores.

    Args:
        model, tokenizer: the trained model.
        dataset: the sequences to score (QA: the answer is the scored text; text datasets: the text).
        names: any of ``"loss"``, ``"zlib"``, ``"min_k"``.
        k: Min-K% fraction (0.4 as in METRICS.md).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> data = [{"uid": "a", "question": "Q?", "answer": "A."}, {"uid": "b", "question": "R?", "answer": "B b."}]
        >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q?\\nAnswer: A."], num_layers=1, vocab_size=280)
        >>> sorted(inference_scores(model, tok, data)["min_k"].scores)
        ['a', 'b']
    """
    from hf_unlearn.evaluation import metrics as M

    bad = [n for n in names if n not in INFERENCE_SCORES]
    if bad:
        raise KeyError(f"unknown inference-time score(s) {bad}; valid: {list(INFERENCE_SCORES)}")
    t0 = time.perf_counter()
    ds = load_examples(dataset)
    st = sequence_stats(
        model, tokenizer, ds, max_length=max_length, template=template, batch_size=batch_size, token_logprobs=True
    )
    base = time.perf_counter() - t0
    uids = st["uids"]
    texts = list(ds["answer"] if "answer" in ds.column_names else ds["text"])
    by_uid = dict(zip(ds[UID], texts))
    raw = {
        "loss": lambda: M.loss_scores(st["loss"]),
        "zlib": lambda: M.zlib_scores(st["loss"], [by_uid[u] for u in uids]),
        "min_k": lambda: M.min_k_scores(st["token_logprobs"], k=k),
    }
    out = {}
    for name in names:
        t1 = time.perf_counter()
        vals = to_memorization(name, raw[name]())
        out[name] = ScoreResult(name, dict(zip(uids, vals.tolist())), base + time.perf_counter() - t1)
    return out


# ---------------------------------------------------------------------------------------------- holdout retraining
@torch.no_grad()
def symmetric_kl_per_sequence(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over answer positions of KL(p_a||p_b) + KL(p_b||p_a) of the next-token distributions.

    Args:
        logits_a, logits_b: ``[B, T, V]`` of two models on the same batch.
        labels: ``[B, T]`` (-100 outside the answer).

    Returns:
        ``[B]`` float tensor.
    """
    la, _, _, mask = token_distributions(logits_a, labels)  # [B, T-1, V]; mask [B, T-1]
    lb = F.log_softmax(logits_b[:, :-1].float(), -1)
    sym = ((la.exp() - lb.exp()) * (la - lb)).sum(-1)  # KL(a||b) + KL(b||a), [B, T-1]
    return (sym * mask).sum(1) / mask.sum(1).clamp(min=1)


def holdout_kl_scores(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    holdout: Any,
    *,
    finetune_kwargs: Mapping[str, Any] | None = None,
    max_length: int = 128,
    template: str = "plain",
    batch_size: int = 32,
) -> ScoreResult:
    """Holdout retraining: fine-tune a copy of ``model`` on ``holdout`` and score each sequence of ``dataset`` by
    the mean symmetric KL between the two models' next-token distributions over its answer tokens.

    Sequences that only the model's memory of them supported move most when the model trains on other data.

    Args:
        model, tokenizer: the trained (target) model; it is not modified.
        dataset: sequences to score.
        holdout: held-out examples (never trained on) to fine-tune the copy on.
        finetune_kwargs: recipe for :func:`hf_unlearn.training.finetune` (e.g. ``num_epochs``, ``learning_rate``).
    """
    from hf_unlearn.training import finetune

    t0 = time.perf_counter()
    kw = {"num_epochs": 1, "learning_rate": 1e-3, "batch_size": 16, "max_length": max_length, "template": template}
    kw.update(finetune_kwargs or {})
    moved = finetune(copy.deepcopy(model), tokenizer, holdout, **kw).model
    was_training = model.training
    model.eval()
    moved.eval()
    scores: dict[str, float] = {}
    try:
        for uids, batch in _iter_batches(
            model, tokenizer, dataset, max_length=max_length, template=template, batch_size=batch_size
        ):
            moved.to(batch["input_ids"].device)
            kl = symmetric_kl_per_sequence(
                model(**model_inputs(batch)).logits, moved(**model_inputs(batch)).logits, batch["labels"]
            )
            scores.update(zip(uids, to_memorization("holdout_kl", kl).tolist()))
    finally:
        model.train(was_training)
    return ScoreResult("holdout_kl", scores, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------- true memorization
def subset_masks(
    n_items: int, n_models: int, ratio: float = 0.7, seed: int = 0, design: str = "balanced"
) -> np.ndarray:
    """``[n_models, n_items]`` bool membership of each item in each model's training subset.

    Args:
        design: ``"random"``: each model takes ``round(ratio * n)`` items uniformly (Feldman & Zhang);
            ``"balanced"``: each item goes to exactly ``round(ratio * K)`` models (clamped to 1..K-1), so every
            item has both in- and out-models (lower-variance estimate with few models).

    Example:
        >>> m = subset_masks(5, 4, 0.5, seed=0)
        >>> m.shape, m.sum(0).tolist()
        ((4, 5), [2, 2, 2, 2, 2])
    """
    if n_models < 2:
        raise ValueError(f"n_models must be >= 2 (in- and out-models), got {n_models}")
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_models, n_items), dtype=bool)
    if design == "random":
        m = max(1, min(n_items - 1, round(ratio * n_items)))
        for j in range(n_models):
            masks[j, rng.permutation(n_items)[:m]] = True
    elif design == "balanced":
        m = max(1, min(n_models - 1, round(ratio * n_models)))
        for i in range(n_items):
            masks[rng.permutation(n_models)[:m], i] = True
    else:
        raise ValueError(f"design must be 'balanced' or 'random', got {design!r}")
    return masks


def train_subset_model(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    num_epochs: float = 10,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    max_length: int = 128,
    template: str = "plain",
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    seed: int = 0,
) -> Any:
    """Fine-tune ``model`` in place on ``dataset`` with the :func:`~hf_unlearn.training.finetune` recipe (AdamW,
    linear decay, gradient clipping), in THIS process only.

    A small loop instead of ``transformers.Trainer`` on purpose: under ``accelerate launch`` the Trainer wraps the
    model in DistributedDataParallel across ranks, but each rank trains a DIFFERENT subset model here.
    """
    from transformers import get_linear_schedule_with_warmup

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tok = tokenize_any(load_examples(dataset), tokenizer, max_length=max_length, template=template)
    tok = tok.remove_columns([c for c in tok.column_names if c == UID])
    loader = torch.utils.data.DataLoader(
        tok, batch_size=batch_size, shuffle=True, generator=gen, collate_fn=collator_for(tokenizer)
    )
    steps = max(1, math.ceil(num_epochs * len(loader)))
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=weight_decay
    )
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    device = next(model.parameters()).device
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**model_inputs(batch), labels=batch["labels"]).loss
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            if done >= steps:
                break
    model.eval()
    return model


def true_memorization(
    model_init: Callable[[], Any] | Any,
    tokenizer: Any,
    dataset: Any,
    *,
    n_models: int = 8,
    ratio: float = 0.7,
    metric: str = "accuracy",
    design: str = "balanced",
    train_kwargs: Mapping[str, Any] | None = None,
    train_fn: Callable[..., Any] | None = None,
    seed: int = 0,
    max_length: int = 128,
    template: str = "plain",
    batch_size: int = 32,
) -> ScoreResult:
    """Feldman-Zhang memorization of every sequence of ``dataset`` by subset retraining.

    ``mem(x) = mean_{j: x in S_j} c_j(x) - mean_{j: x not in S_j} c_j(x)`` with ``c_j(x)`` the mean answer-token
    accuracy (``metric="accuracy"``) or minus the mean answer-token NLL (``"nll"``) of model ``j``.

    The K runs are split over the processes of an ``accelerate launch`` with
    ``PartialState().split_between_processes`` and the per-run results are gathered with ``gather_object``; every
    process returns the same scores. Single process: a plain loop.

    Args:
        model_init: a callable returning a fresh (untrained) model, or a model that is deep-copied for each run.
        tokenizer: its tokenizer.
        dataset: the full training set (QA or text); every item is scored.
        n_models: K, the number of subset models.
        ratio: subset fraction (0.7 in the paper).
        metric: ``"accuracy"`` or ``"nll"``.
        design: ``"balanced"`` or ``"random"`` (see :func:`subset_masks`).
        train_kwargs: recipe of :func:`train_subset_model` (num_epochs, learning_rate, batch_size, ...).
        train_fn: ``train_fn(model, tokenizer, subset, seed=...) -> model`` to train one subset model instead
            (e.g. a wrapper of :func:`hf_unlearn.training.finetune` in a single process).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> data = [{"uid": str(i), "question": f"Q{i}?", "answer": "yes"} for i in range(6)]
        >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1?\\nAnswer: yes"], num_layers=1,
        ...                             vocab_size=280, hidden_size=32)
        >>> res = true_memorization(model, tok, data, n_models=3, train_kwargs={"num_epochs": 1})
        >>> len(res.scores), res.details["n_models"]
        (6, 3)
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    if metric not in ("accuracy", "nll"):
        raise ValueError(f"metric must be 'accuracy' or 'nll', got {metric!r}")
    t0 = time.perf_counter()
    ds = load_examples(dataset)
    uids = list(ds[UID])
    masks = subset_masks(len(ds), n_models, ratio, seed=seed, design=design)
    state = PartialState()
    kw = {"max_length": max_length, "template": template, **(train_kwargs or {})}
    local: list[tuple[int, list[float], float]] = []
    with state.split_between_processes(list(range(n_models))) as my_runs:
        for j in my_runs:
            t_run = time.perf_counter()
            model = model_init() if callable(model_init) and not isinstance(model_init, torch.nn.Module) else None
            model = model if model is not None else copy.deepcopy(model_init)
            model.to(state.device)
            subset = ds.select(np.flatnonzero(masks[j]).tolist())
            if train_fn is None:
                model = train_subset_model(model, tokenizer, subset, seed=seed + 1000 * (j + 1), **kw)
            else:
                model = train_fn(model, tokenizer, subset, seed=seed + 1000 * (j + 1))
            st = sequence_stats(model, tokenizer, ds, max_length=max_length, template=template, batch_size=batch_size)
            order = {u: i for i, u in enumerate(st["uids"])}
            vals = st["accuracy"] if metric == "accuracy" else -st["loss"]
            local.append((j, [float(vals[order[u]]) for u in uids], time.perf_counter() - t_run))
            del model
    gathered = sorted(gather_object(local))
    correct = np.array([row for _, row, _ in gathered])  # [K, n]
    in_mean = (correct * masks).sum(0) / masks.sum(0).clip(min=1)
    out_mean = (correct * ~masks).sum(0) / (~masks).sum(0).clip(min=1)
    valid = masks.any(0) & (~masks).any(0)
    mem = np.where(valid, in_mean - out_mean, np.nan)
    return ScoreResult(
        "true",
        dict(zip(uids, mem.tolist())),
        time.perf_counter() - t0,
        details={
            "n_models": n_models,
            "ratio": ratio,
            "metric": metric,
            "design": design,
            "run_seconds": [s for _, _, s in gathered],
            "in_mean": dict(zip(uids, in_mean.tolist())),
            "out_mean": dict(zip(uids, out_mean.tolist())),
            "n_processes": state.num_processes,
        },
    )
