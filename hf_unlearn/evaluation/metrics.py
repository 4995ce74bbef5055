"""Unlearning metrics as pure functions on arrays (definitions: /work/shared/METRICS.md, TOFU / MUSE / OpenUnlearning).

Every function takes plain numbers (numpy arrays, torch tensors or lists) that a model pass produced, so each can be
checked on hand-made inputs. The model-facing layer that produces those arrays is :mod:`hf_unlearn.evaluation.runner`.

Conventions:
    * ``avg_nll`` is the per-item mean negative log-likelihood of the answer tokens (labels != -100), natural log.
    * Per-item functions return a float64 numpy array with one value per item; aggregate functions return a float.
    * Token-level inputs are padded 2-D arrays ``[n_items, n_tokens]`` with a boolean ``mask`` (or, for id arrays,
      label ``-100`` at padding), or a ragged list of 1-D sequences, which is padded for you.
    * MIA scores follow the "higher = looks less like a training member" convention (forget items labelled 0,
      holdout items labelled 1). An AUC near 1 means the forget set still looks memorised; the ideal AUC after
      unlearning is the gold retain model's AUC on the same data (often near, but not exactly, 0.5).
    * ``definition`` selects between two published variants where they differ (see docs/metrics.md):
      ``"open_unlearning"`` (the default: the numbers of locuslab/open-unlearning, which drops the final label token,
      the EOS, from exact memorization, extraction strength, Min-K%, Min-K%++ and GradNorm, and gives extraction
      strength 1/N when only the last token is wrong) and ``"paper"`` (every label token is scored; extraction
      strength 0 when the last token is wrong, as in Carlini et al. / the OpenUnlearning paper's formula).

Example:
    >>> import numpy as np
    >>> r = truth_ratio(np.array([1.0, 2.0]), np.array([[1.0, 1.0], [1.0, 3.0]]))
    >>> np.round(r, 4).tolist()
    [1.0, 1.0]
    >>> round(truth_ratio_forget_score(r), 4)
    1.0
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100
_EPS = 1e-10  # the epsilon TOFU / OpenUnlearning put in the normalised probability and privleak denominators
DEFINITIONS = ("open_unlearning", "paper")
DEFAULT_DEFINITION = "open_unlearning"

__all__ = [
    "IGNORE_INDEX",
    "DEFINITIONS",
    "DEFAULT_DEFINITION",
    "check_definition",
    "drop_last_label",
    "probability",
    "normalised_probability",
    "rouge_scores",
    "truth_ratio",
    "truth_ratio_forget_score",
    "truth_ratio_retain_score",
    "forget_quality",
    "model_utility",
    "exact_memorization",
    "extraction_strength",
    "loss_scores",
    "zlib_scores",
    "min_k_scores",
    "min_k_plus_plus_scores",
    "min_k_plus_plus_stats",
    "reference_scores",
    "mia_auc",
    "privleak",
    "grad_norm",
    "perplexity",
    "causal_shift",
    "pad_ragged",
    "verbmem",
    "knowmem",
    "cut_at_stop_strings",
    "MUSE_KNOWMEM_STOP",
]


# --------------------------------------------------------------------------------------------------- input helpers
def _to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        x = x.float() if x.is_floating_point() and x.dtype in (torch.bfloat16, torch.float16) else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _vector(x: Any, name: str, allow_empty: bool = False) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per item), got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one item")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at items {np.flatnonzero(np.isnan(arr))[:5].tolist()}")
    return arr


def check_definition(definition: str) -> str:
    """Validate a metric ``definition`` name (``"open_unlearning"`` or ``"paper"``) and return it.

    Raises:
        ValueError: for any other name, suggesting the closest valid one.

    Example:
        >>> check_definition("paper")
        'paper'
    """
    if definition not in DEFINITIONS:
        import difflib

        close = difflib.get_close_matches(str(definition), DEFINITIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown metric definition {definition!r}{hint}; valid choices: {list(DEFINITIONS)}")
    return definition


def drop_last_label(mask: Any) -> np.ndarray:
    """Copy of a boolean ``[n, t]`` mask with the last True position of every row set to False.

    This is OpenUnlearning's "ignore the EOS prediction": the final label token of each item is not scored.

    Example:
        >>> drop_last_label([[True, True, True, False], [False, True, False, False]]).tolist()
        [[True, True, False, False], [False, False, False, False]]
    """
    m = _to_numpy(mask, bool).copy()
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D [n_items, n_tokens], got shape {m.shape}")
    rows = np.flatnonzero(m.any(axis=1))
    last = m.shape[1] - 1 - np.argmax(m[rows, ::-1], axis=1)
    m[rows, last] = False
    return m


def pad_ragged(seqs: Any, pad_value: float, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Pad a ragged list of 1-D sequences (or pass a 2-D array through) into ``(array, mask)``.

    Args:
        seqs: a 2-D array / tensor ``[n, t]``, or a list of 1-D sequences of varying length.
        pad_value: value written at padding positions.
        dtype: numpy dtype of the result.

    Returns:
        ``(values [n, t_max], mask [n, t_max] bool)``; for a 2-D input the mask is all True.

    Example:
        >>> vals, mask = pad_ragged([[1, 2], [3]], pad_value=0)
        >>> vals.tolist(), mask.tolist()
        ([[1.0, 2.0], [3.0, 0.0]], [[True, True], [True, False]])
    """
    if isinstance(seqs, (np.ndarray, torch.Tensor)) and seqs.ndim == 2:
        arr = _to_numpy(seqs, dtype)
        return arr, np.ones(arr.shape, dtype=bool)
    rows = [_to_numpy(s, dtype).reshape(-1) for s in seqs]
    if not rows:
        raise ValueError("no items given: need at least one sequence")
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), pad_value, dtype=dtype)
    mask = np.zeros((len(rows), width), dtype=bool)
    lengths = np.array([len(r) for r in rows])
    mask[np.arange(width)[None, :] < lengths[:, None]] = True
    if width:
        out[mask] = np.concatenate(rows)
    return out, mask


def causal_shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align next-token predictions with their targets: ``logits[:, :-1]`` predicts ``labels[:, 1:]``.

    Example:
        >>> lg, lb = causal_shift(torch.zeros(1, 4, 7), torch.tensor([[-100, 5, 6, 2]]))
        >>> tuple(lg.shape), lb.tolist()
        ((1, 3, 7), [[5, 6, 2]])
    """
    return logits[:, :-1], labels[:, 1:]


# ------------------------------------------------------------------------------------------- probability metrics
def probability(avg_nll: Any) -> np.ndarray:
    """Per-item length-normalised answer probability ``P(a|q) = exp(-avgNLL)``.

    Args:
        avg_nll: ``[n]`` per-item mean answer NLL, or ``[n, m]`` for items with several answers (NaN marks a
            missing answer); the probability is then the mean over that item's answers.

    Returns:
        ``[n]`` float64 probabilities; the TOFU "probability" is their mean.

    Example:
        >>> import numpy as np
        >>> np.round(probability([0.0, np.log(2)]), 3).tolist()
        [1.0, 0.5]
        >>> np.round(probability([[0.0, np.log(2)], [np.log(4), np.nan]]), 3).tolist()
        [0.75, 0.25]
    """
    arr = _to_numpy(avg_nll)
    if arr.ndim == 1:
        return np.exp(-_vector(arr, "avg_nll"))
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"avg_nll must be [n] or [n, n_answers] with n >= 1, got shape {arr.shape}")
    present = ~np.isnan(arr)
    if not present.any(axis=1).all():
        raise ValueError(f"items {np.flatnonzero(~present.any(axis=1))[:5].tolist()} have no answer (all NaN)")
    probs = np.where(present, np.exp(-np.where(present, arr, 0.0)), 0.0)
    return probs.sum(axis=1) / present.sum(axis=1)


def normalised_probability(avg_nll_true: Any, avg_nll_perturbed: Any) -> np.ndarray:
    """Per-item ``P(a_true) / (P(a_true) + sum_j P(a_pert_j) + 1e-10)`` (TOFU's probability on world-facts splits).

    Args:
        avg_nll_true: ``[n]`` mean NLL of the true answer.
        avg_nll_perturbed: ``[n, m]`` mean NLL of each perturbed (wrong) answer; NaN marks a missing one.

    Example:
        >>> import numpy as np
        >>> np.round(normalised_probability([0.0], [[np.log(2), np.log(2)]]), 4).tolist()
        [0.5]
    """
    true = _vector(avg_nll_true, "avg_nll_true")
    pert = _to_numpy(avg_nll_perturbed)
    if pert.ndim != 2 or pert.shape[0] != true.shape[0]:
        raise ValueError(f"avg_nll_perturbed must be [n_items={true.shape[0]}, n_perturbed], got {pert.shape}")
    p_true = np.exp(-true)
    p_pert = np.where(np.isnan(pert), 0.0, np.exp(-np.nan_to_num(pert, nan=0.0))).sum(axis=1)
    return p_true / (p_true + p_pert + _EPS)


def truth_ratio(correct_avg_nll: Any, wrong_avg_nll: Any) -> np.ndarray:
    """Per-item truth ratio ``R = P_wrong / P_correct`` (TOFU).

    ``P_correct = exp(-avgNLL(correct answer))`` (the paraphrased answer on the forget and retain splits, the answer
    itself on real authors / world facts, as in TOFU and OpenUnlearning) and ``P_wrong = exp(-mean_j avgNLL(perturbed
    answer j))``, the geometric mean of the perturbed answers' probabilities. As in OpenUnlearning
    (src/evals/metrics/memorization.py, ``truth_ratio``): ``R = P_wrong / (P_correct + 1e-10)``.

    Args:
        correct_avg_nll: ``[n]`` (or ``[n, k]``: several correct answers, their mean NLL is used).
        wrong_avg_nll: ``[n, m]`` mean NLL of each perturbed answer (NaN marks a missing one), or ``[n]`` for one.

    Returns:
        ``[n]`` float64 ratios (0 < R < inf). R < 1: the model prefers the correct answer.

    Example:
        >>> import numpy as np
        >>> np.round(truth_ratio([1.0], [[2.0, 4.0]]), 4).tolist()  # exp(1 - 3)
        [0.1353]
    """
    correct = _to_numpy(correct_avg_nll)
    if correct.ndim == 2:
        correct = np.nanmean(correct, axis=1)
    correct = _vector(correct, "correct_avg_nll")
    wrong = _to_numpy(wrong_avg_nll)
    if wrong.ndim == 1:
        wrong = wrong[:, None]
    if wrong.ndim != 2 or wrong.shape[0] != correct.shape[0]:
        raise ValueError(f"wrong_avg_nll must be [n_items={correct.shape[0]}, n_perturbed], got {wrong.shape}")
    present = ~np.isnan(wrong)
    if not present.any(axis=1).all():
        raise ValueError(f"items {np.flatnonzero(~present.any(axis=1))[:5].tolist()} have no perturbed answer")
    wrong_mean = np.where(present, wrong, 0.0).sum(axis=1) / present.sum(axis=1)
    return np.exp(-wrong_mean) / (np.exp(-correct) + _EPS)


def truth_ratio_forget_score(ratios: Any) -> float:
    """Forget-set truth-ratio score, "closer to 1 is better": ``mean(min(R, 1/(R + 1e-10)))`` in [0, 1].

    Higher is better for forgetting on the TOFU forget set (1: the model cannot tell the correct answer from wrong
    ones); compare it with the gold retain model's value.

    Example:
        >>> round(truth_ratio_forget_score([0.5, 2.0, 1.0]), 4)
        0.6667
    """
    r = _vector(ratios, "ratios")
    if (r < 0).any():
        raise ValueError("truth ratios must be >= 0")
    with np.errstate(divide="ignore", over="ignore"):
        return float(np.mean(np.minimum(r, 1.0 / (r + _EPS))))  # OpenUnlearning's closer_to_1_better; inf -> 0


def truth_ratio_retain_score(ratios: Any) -> float:
    """Retain / other-knowledge truth-ratio score, "true answer better": ``mean(max(0, 1 - R))`` in [0, 1].

    Example:
        >>> round(truth_ratio_retain_score([0.25, 2.0]), 4)
        0.375
    """
    r = _vector(ratios, "ratios")
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(tr_unlearned: Any, tr_retain: Any) -> float:
    """TOFU forget quality: p-value of the two-sided KS test between per-item truth ratios on the forget set.

    Args:
        tr_unlearned: per-item truth ratios of the evaluated (unlearned) model on the forget split.
        tr_retain: per-item truth ratios of the gold retain model (never trained on the forget split) on the same
            split, e.g. from its saved ``evaluate_unlearning`` JSON.

    Returns:
        ``scipy.stats.ks_2samp(...).pvalue``; 1.0 for identical distributions, near 0 for clearly different ones.

    Raises:
        ValueError: if the reference is None or empty (there is no forget quality without a gold retain model).

    Example:
        >>> forget_quality([0.5, 0.7, 0.9], [0.9, 0.5, 0.7])
        1.0
    """
    from scipy.stats import ks_2samp

    if tr_retain is None or len(tr_retain) == 0:
        raise ValueError(
            "forget quality needs per-item truth ratios of the gold retain model (trained without the forget split): "
            "evaluate that model first and pass its result as reference=..., or skip forget quality explicitly"
        )
    a = _vector(tr_unlearned, "tr_unlearned")
    b = _vector(tr_retain, "tr_retain")
    return float(ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float] | Iterable[float]) -> float:
    """TOFU model utility: harmonic mean of retain / other-knowledge probability, ROUGE and truth-ratio scores.

    Args:
        values: the numbers (TOFU: 9 = {retain, real authors, world facts} x {prob, ROUGE, truth ratio}), as a
            mapping name -> value or a sequence. All must be >= 0; any zero makes the utility 0.

    Example:
        >>> round(model_utility([0.5, 1.0]), 4)
        0.6667
        >>> model_utility({"retain_prob": 0.9, "retain_rouge": 0.0})
        0.0
    """
    from scipy.stats import hmean

    vals = _vector(list(values.values()) if isinstance(values, Mapping) else list(values), "values")
    if (vals < 0).any():
        raise ValueError(f"model utility components must be >= 0, got {vals.tolist()}")
    if (vals == 0).any():
        return 0.0
    return float(hmean(vals))


# ------------------------------------------------------------------------------------------ memorization metrics
def _ids_pair(pred_ids: Any, label_ids: Any, definition: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded ``(preds, labels, valid)``; under ``"open_unlearning"`` the last label position is not valid."""
    check_definition(definition)
    preds, _ = pad_ragged(pred_ids, IGNORE_INDEX, dtype=np.int64)
    labels, _ = pad_ragged(label_ids, IGNORE_INDEX, dtype=np.int64)
    if preds.shape != labels.shape:
        raise ValueError(f"pred_ids and label_ids must have the same shape, got {preds.shape} and {labels.shape}")
    valid = labels != IGNORE_INDEX
    empty = ~valid.any(axis=1)
    if empty.any():
        raise ValueError(f"items {np.flatnonzero(empty)[:5].tolist()} have no label position (all -100)")
    if definition == "open_unlearning":
        valid = drop_last_label(valid)
    return preds, labels, valid


def exact_memorization(pred_ids: Any, label_ids: Any, definition: str = DEFAULT_DEFINITION) -> np.ndarray:
    """Per-item teacher-forced accuracy: the fraction of scored label positions where argmax == label.

    Higher = more memorised; on the forget set lower is better after unlearning (ideal: the gold retain model's value).

    Args:
        pred_ids: ``[n, t]`` teacher-forced argmax ids ALIGNED with ``label_ids`` (``pred_ids[i, t]`` is the model's
            prediction for ``label_ids[i, t]``: shift the logits first, see :func:`causal_shift`), or a ragged list.
        label_ids: ``[n, t]`` target ids with -100 where there is nothing to predict.
        definition: ``"open_unlearning"`` (default) leaves out the last label position of each item (the EOS), as
            OpenUnlearning does; an item left with no position is NaN (OpenUnlearning: None, left out of the mean).
            ``"paper"`` scores every label position.

    Example:
        >>> exact_memorization([[5, 6, 9, 0]], [[-100, 6, 7, -100]], definition="paper").tolist()
        [0.5]
        >>> exact_memorization([[5, 6, 9, 0]], [[-100, 6, 7, -100]]).tolist()  # the last label (7) is not scored
        [1.0]
    """
    preds, labels, valid = _ids_pair(pred_ids, label_ids, definition)
    n = valid.sum(axis=1)
    hits = ((preds == labels) & valid).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def extraction_strength(pred_ids: Any, label_ids: Any, definition: str = DEFAULT_DEFINITION) -> np.ndarray:
    """Per-item extraction strength ``1 - k/N``: the longest correctly predicted suffix, as a fraction.

    Higher = more extractable; on the forget set lower is better after unlearning (ideal: the gold retain model's
    value).

    ``"paper"``: over the N label positions, ``k`` is the smallest index such that the teacher-forced argmax matches
    the labels at every position k..N-1 (k = N when the last one is wrong, giving 0). ``"open_unlearning"`` (default):
    the last label position (EOS) is dropped first, and ``k`` is searched in 0..N-1 only, so a wrong last token gives
    ``1/N`` (OpenUnlearning's loop, src/evals/metrics/memorization.py); an item with no position left scores 0.

    Args:
        pred_ids: aligned teacher-forced argmax ids, as in :func:`exact_memorization`.
        label_ids: target ids, -100 where ignored.
        definition: ``"open_unlearning"`` or ``"paper"``.

    Example:
        >>> extraction_strength([[1, 9, 3, 4], [1, 2, 3, 0]], [[1, 2, 3, 4], [1, 2, 3, 4]], "paper").tolist()
        [0.5, 0.0]
        >>> # open_unlearning: the EOS (4) is dropped; a wrong last scored token gives 1/N = 1/3, not 0
        >>> extraction_strength([[1, 2, 3, 9], [1, 2, 0, 4]], [[1, 2, 3, 4], [1, 2, 3, 4]]).round(4).tolist()
        [1.0, 0.3333]
    """
    preds, labels, valid = _ids_pair(pred_ids, label_ids, definition)
    n = valid.sum(axis=1)
    position = np.cumsum(valid, axis=1)  # 1-based index among the scored label positions
    mismatch = valid & (preds != labels)
    k_star = np.where(mismatch, position, 0).max(axis=1)  # one past the last mismatch
    if definition == "open_unlearning":
        k_star = np.minimum(k_star, np.maximum(n - 1, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, 1.0 - k_star / np.maximum(n, 1), 0.0)


# --------------------------------------------------------------------------------------------------- MIA scores
def loss_scores(avg_nll: Any) -> np.ndarray:
    """LOSS attack score per sample: the mean token NLL (higher = less like a member).

    Example:
        >>> loss_scores([0.5, 2.0]).tolist()
        [0.5, 2.0]
    """
    return _vector(avg_nll, "avg_nll").copy()


def zlib_scores(avg_nll: Any, texts: Sequence[str]) -> np.ndarray:
    """ZLib attack score per sample: ``avgNLL / len(zlib.compress(text.encode("utf-8")))``.

    Args:
        avg_nll: ``[n]`` mean token NLL of each text.
        texts: the scored texts. The runner passes what OpenUnlearning compresses: the label tokens decoded with
            ``skip_special_tokens=True`` (src/evals/metrics/utils.py, ``extract_target_texts_from_processed_data``);
            on MUSE text corpora, the raw text, as MUSE does.

    Example:
        >>> import zlib
        >>> s = zlib_scores([2.0], ["abc"])
        >>> bool(s[0] == 2.0 / len(zlib.compress(b"abc")))
        True
    """
    nll = _vector(avg_nll, "avg_nll")
    if len(texts) != len(nll):
        raise ValueError(f"got {len(nll)} losses but {len(texts)} texts")
    sizes = np.array([len(zlib.compress(str(t).encode("utf-8"))) for t in texts], dtype=np.float64)
    return nll / sizes


def _lowest_k_mean(values: np.ndarray, mask: np.ndarray, k: float, empty_ok: bool = False) -> np.ndarray:
    """Mean of the ``max(1, int(k * n))`` smallest valid values of each row (OpenUnlearning's ``num_k``); rows with
    no valid value give 0 when ``empty_ok`` (OpenUnlearning's score for them), else an error."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    n = mask.sum(axis=1)
    if (n == 0).any() and not empty_ok:
        raise ValueError(f"items {np.flatnonzero(n == 0)[:5].tolist()} have no token to score")
    if np.isnan(values[mask]).any():
        raise ValueError("token values contain NaN at unmasked positions")
    m = np.maximum(1, np.floor(k * n).astype(np.int64))  # int(len * k) in Python: the same float product
    ordered = np.sort(np.where(mask, values, np.inf), axis=1)  # padding sorts last; ties give the same mean
    picked = np.where((np.arange(ordered.shape[1])[None, :] < m[:, None]) & (n[:, None] > 0), ordered, 0.0)
    return picked.sum(axis=1) / m


def _scored_mask(m: np.ndarray, definition: str) -> tuple[np.ndarray, bool]:
    check_definition(definition)
    if definition == "open_unlearning":
        if not m.any(axis=1).all():
            raise ValueError(f"items {np.flatnonzero(~m.any(axis=1))[:5].tolist()} have no token to score")
        return drop_last_label(m), True
    return m, False


def _token_input(token_values: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    values, auto_mask = pad_ragged(token_values, pad_value=0.0)
    if mask is not None:
        mask = _to_numpy(mask, bool)
        if mask.shape != values.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the token array shape {values.shape}")
        auto_mask = auto_mask & mask
    return values, auto_mask


def min_k_scores(
    token_logprobs: Any, k: float = 0.4, mask: Any = None, definition: str = DEFAULT_DEFINITION
) -> np.ndarray:
    """Min-K% Prob score per sample: minus the mean of the lowest ``max(1, int(k * N))`` token log-probs.

    Args:
        token_logprobs: ``[n, t]`` log p(x_t | x_<t) of each label token (padded), or a ragged list.
        k: fraction of tokens to keep (0.4 as in MUSE / OpenUnlearning's TOFU and MUSE configs).
        mask: ``[n, t]`` bool, True at real tokens (default: all positions of a 2-D input).
        definition: ``"open_unlearning"`` (default) leaves out each item's last token (the EOS); an item with no
            token left scores 0, as in OpenUnlearning. ``"paper"`` scores every token (MUSE's text corpora, which
            carry no EOS, use this).

    Example:
        >>> min_k_scores([[-1.0, -3.0, -2.0, -0.5, -0.1]], k=0.4, definition="paper").tolist()  # lowest 2: -3, -2
        [2.5]
        >>> min_k_scores([[-2.0], [-1.0, -1.0, -1.0]], k=0.4, definition="paper").tolist()  # at least one; ties
        [2.0, 1.0]
        >>> min_k_scores([[-1.0, -3.0, -2.0, -0.5, -0.1]], k=0.4).tolist()  # the last token is dropped: -3 only
        [3.0]
    """
    values, m = _token_input(token_logprobs, mask)
    m, empty_ok = _scored_mask(m, definition)
    return -_lowest_k_mean(values, m, k, empty_ok)


def min_k_plus_plus_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position mean and std of log p under the model's own next-token distribution (for Min-K%++).

    ``mu = sum_v p_v log p_v`` and ``sigma = sqrt(max(sum_v p_v (log p_v)^2 - mu^2, 1e-6))``, over the full vocab.

    Args:
        logits: ``[..., vocab]`` next-token logits.

    Returns:
        ``(mu, sigma)``, each of shape ``logits.shape[:-1]`` (float32).

    Example:
        >>> mu, sigma = min_k_plus_plus_stats(torch.zeros(1, 2, 4))  # uniform over 4
        >>> round(mu[0, 0].item(), 4), round(sigma[0, 0].item(), 4)
        (-1.3863, 0.001)
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    var = (p * logp.square()).sum(-1) - mu.square()
    return mu, var.clamp_min(1e-6).sqrt()


def min_k_plus_plus_scores(
    token_logprobs: Any, mu: Any, sigma: Any, k: float = 0.4, mask: Any = None, definition: str = DEFAULT_DEFINITION
) -> np.ndarray:
    """Min-K%++ score per sample: z_t = (log p(x_t) - mu_t) / sigma_t, minus the mean of the lowest int(k*N) z.

    Args:
        token_logprobs: ``[n, t]`` (or ragged) log-probs of the actual tokens.
        mu: same shape, ``mu_t`` from :func:`min_k_plus_plus_stats`.
        sigma: same shape, ``sigma_t`` (already clamped) from :func:`min_k_plus_plus_stats`.
        k: fraction of tokens kept.
        mask: True at real tokens.
        definition: as in :func:`min_k_scores` (default: the last token of each item is left out).

    Example:
        >>> min_k_plus_plus_scores([[-1.0, -3.0]], mu=[[-1.0, -1.0]], sigma=[[1.0, 2.0]], k=0.5, definition="paper")
        array([1.])
    """
    lp, m = _token_input(token_logprobs, mask)
    mu_arr, _ = _token_input(mu, None)
    sigma_arr, _ = _token_input(sigma, None)
    if mu_arr.shape != lp.shape or sigma_arr.shape != lp.shape:
        raise ValueError(f"mu {mu_arr.shape} and sigma {sigma_arr.shape} must match token_logprobs {lp.shape}")
    z = (lp - mu_arr) / np.where(m, sigma_arr, 1.0)
    m, empty_ok = _scored_mask(m, definition)
    return -_lowest_k_mean(z, m, k, empty_ok)


def reference_scores(avg_nll_target: Any, avg_nll_reference: Any) -> np.ndarray:
    """Reference attack score per sample: ``avgNLL_target - avgNLL_reference`` (the reference: the retain model).

    Example:
        >>> reference_scores([2.0, 1.0], [1.5, 1.5]).tolist()
        [0.5, -0.5]
    """
    target = _vector(avg_nll_target, "avg_nll_target")
    ref = _vector(avg_nll_reference, "avg_nll_reference")
    if target.shape != ref.shape:
        raise ValueError(f"target and reference scores differ in length: {target.shape[0]} vs {ref.shape[0]}")
    return target - ref


def mia_auc(forget_scores: Any, holdout_scores: Any) -> float:
    """ROC AUC of separating forget (label 0) from holdout (label 1) samples by an MIA score (higher = holdout).

    OpenUnlearning's orientation (src/evals/metrics/mia/utils.py): near 1 means the forget set still looks
    memorised, near 0 that it looks *less* familiar than unseen data (over-unlearning). The ideal value is not 0.5
    but the gold retain model's AUC on the same forget / holdout items (compare with :func:`privleak`).

    Example:
        >>> mia_auc([0.1, 0.2], [0.8, 0.9])
        1.0
        >>> mia_auc([0.5, 0.5], [0.5, 0.5])
        0.5
    """
    from sklearn.metrics import roc_auc_score

    f = _vector(forget_scores, "forget_scores")
    h = _vector(holdout_scores, "holdout_scores")
    labels = np.concatenate([np.zeros(len(f)), np.ones(len(h))])
    return float(roc_auc_score(labels, np.concatenate([f, h])))


def privleak(auc: float, auc_retain: float) -> float:
    """MUSE PrivLeak (in %): the relative change of ``1 - AUC`` against the gold retain model,
    ``((1 - AUC) - (1 - AUC_retain)) / (1 - AUC_retain + 1e-10) * 100``.

    MUSE reports AUCs as ``1 - AUC`` of :func:`mia_auc` (its forget set is the positive class), hence the ``1 -``.
    0 is ideal (the unlearned model leaks as much as the gold model); strongly negative means under-unlearned (the
    forget set still looks like members), strongly positive means over-unlearned.

    Example:
        >>> round(privleak(0.5, 0.5), 6)
        0.0
        >>> round(privleak(0.9, 0.5), 2)  # forget set looks memorised
        -80.0
    """
    for name, v in (("auc", auc), ("auc_retain", auc_retain)):
        if v is None or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    return float(((1 - auc) - (1 - auc_retain)) / (1 - auc_retain + _EPS) * 100)


def grad_norm(grads: Iterable[torch.Tensor | None], p: float = 2.0) -> float:
    """GradNorm reduction for one sample: mean over parameter tensors of the p-norm of each gradient tensor.

    Args:
        grads: gradient tensors of the sample's mean token NLL (None entries, for unused parameters, are skipped).
        p: norm order (2 in OpenUnlearning).

    Example:
        >>> grad_norm([torch.tensor([3.0, 4.0]), torch.tensor([1.0])])
        3.0
    """
    norms = [torch.linalg.vector_norm(g.detach().float(), ord=p) for g in grads if g is not None]
    if not norms:
        raise ValueError("no gradient tensors: does the model have parameters reached by the loss?")
    return float(torch.stack(norms).mean())


def perplexity(avg_nll: Any, n_tokens: Any) -> float:
    """Token-weighted perplexity ``exp(sum_i n_i * avgNLL_i / sum_i n_i)`` of a split.

    Example:
        >>> round(perplexity([math.log(2), math.log(8)], [1, 1]), 4)
        4.0
    """
    nll = _vector(avg_nll, "avg_nll")
    n = _vector(n_tokens, "n_tokens")
    if n.shape != nll.shape or (n <= 0).any():
        raise ValueError("n_tokens must be positive and match avg_nll in length")
    return float(math.exp(float((nll * n).sum() / n.sum())))


# --------------------------------------------------------------------------------------------------------- ROUGE
_SCORERS: dict[bool, Any] = {}


def rouge_scores(preds: Sequence[str], golds: Sequence[str], use_stemmer: bool = True) -> dict[str, np.ndarray]:
    """Per-item ROUGE-1 / ROUGE-L recall and F1 with ``rouge_score.RougeScorer`` (empty generation -> 0).

    TOFU reports ``rougeL_recall`` (use_stemmer=True); MUSE reports ``rougeL_f1`` (use_stemmer=False).

    Args:
        preds: generated answers (already cut at EOS / stop strings).
        golds: gold answers.
        use_stemmer: Porter stemming in the scorer.

    Returns:
        ``{"rouge1_recall", "rouge1_f1", "rougeL_recall", "rougeL_f1"}`` -> ``[n]`` float64 arrays.

    Example:
        >>> s = rouge_scores(["the cat sat", ""], ["the cat sat down", "a dog"])
        >>> s["rougeL_recall"].tolist(), s["rouge1_f1"].round(4).tolist()
        ([0.75, 0.0], [0.8571, 0.0])
    """
    from rouge_score import rouge_scorer

    if len(preds) != len(golds):
        raise ValueError(f"got {len(preds)} predictions but {len(golds)} gold answers")
    scorer = _SCORERS.get(use_stemmer)
    if scorer is None:
        scorer = _SCORERS[use_stemmer] = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=use_stemmer)
    out = {key: np.zeros(len(preds)) for key in ("rouge1_recall", "rouge1_f1", "rougeL_recall", "rougeL_f1")}
    for i, (pred, gold) in enumerate(zip(preds, golds)):  # rouge_score scores one pair at a time
        if not str(pred).strip():
            continue  # an empty generation scores 0
        s = scorer.score(str(gold), str(pred))  # score(target, prediction)
        out["rouge1_recall"][i], out["rouge1_f1"][i] = s["rouge1"].recall, s["rouge1"].fmeasure
        out["rougeL_recall"][i], out["rougeL_f1"][i] = s["rougeL"].recall, s["rougeL"].fmeasure
    return out


# ----------------------------------------------------------------------------------------------------- MUSE
MUSE_KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")  # MUSE metrics/knowmem.py cuts answers at these


def cut_at_stop_strings(text: str, stop_strings: Sequence[str]) -> str:
    """Keep the part of ``text`` before the first occurrence of each stop string, applied in order (MUSE's cut).

    Example:
        >>> cut_at_stop_strings("Paris\\n\\nQuestion: next", MUSE_KNOWMEM_STOP)
        'Paris'
    """
    for stop in stop_strings:
        if stop:
            text = text.split(stop)[0]
    return text


def verbmem(outputs: Sequence[str], ground_truths: Sequence[str]) -> np.ndarray:
    """MUSE VerbMem per item: ROUGE-L F1 (``use_stemmer=False``) of a greedy continuation against the true one.

    MUSE (swj0419/muse_bench, metrics/verbmem.py and metrics/logger.py) generates 128 new tokens from the prompt,
    cuts the ground truth to its first 128 tokens and reports ``mean * 100``. Higher = more verbatim memorisation;
    on the forget set lower is better after unlearning, ideal: the gold retain model's value.

    Args:
        outputs: the model's continuations (decoded new tokens).
        ground_truths: the true continuations (already cut to the generation budget).

    Returns:
        ``[n]`` ROUGE-L F1 in [0, 1].

    Example:
        >>> verbmem(["the cat sat on", ""], ["the cat sat on the mat", "x"]).round(4).tolist()
        [0.8, 0.0]
    """
    return rouge_scores(outputs, ground_truths, use_stemmer=False)["rougeL_f1"]


def knowmem(
    outputs: Sequence[str], answers: Sequence[str], stop_strings: Sequence[str] = MUSE_KNOWMEM_STOP
) -> np.ndarray:
    """MUSE KnowMem per item: ROUGE-L F1 (``use_stemmer=False``) of a few-shot answer, cut at MUSE's stop strings.

    MUSE (metrics/knowmem.py) generates 32 new tokens after ``Question: ...\\nAnswer: `` preceded by in-context
    examples, keeps the text before ``"\\n\\n"``, ``"\\nQuestion"`` and ``"Question:"``, and reports ``mean * 100``.
    Higher = more knowledge; on the forget QA lower is better after unlearning (ideal: the gold model's value), on the
    retain QA higher is better.

    Args:
        outputs: raw decoded generations (the cut is applied here).
        answers: gold answers.
        stop_strings: cut points (default MUSE's).

    Example:
        >>> knowmem(["Paris\\n\\nQuestion: x", "Rome"], ["Paris", "Madrid"]).tolist()
        [1.0, 0.0]
    """
    cut = [cut_at_stop_strings(str(o), stop_strings) for o in outputs]
    return rouge_scores(cut, answers, use_stemmer=False)["rougeL_f1"]
