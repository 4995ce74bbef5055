"""Layer-wise top-fraction selection and the top-rho gradient mask of partial-update unlearning.

Reconstruction of the "layer-wise partial update" of Gogineni et al. (arXiv 2403.07611; the full text is public
but only its abstract could be read here, see docs/methods/partial.md): at every optimizer step, each parameter
tensor ("layer-wise") updates only its ``rho`` fraction of entries with the largest gradient magnitude (default
0.1); ``rho = 1`` is the naive full update.

Implementation choices (each an option, see :class:`TopRhoGradMask`):

* The mask is computed AFTER gradient clipping (``on_pre_optimizer_step`` runs after ``clip_grad_norm_``), so the
  clip norm is the norm of the full gradient. Entries outside the top-rho get a zero gradient.
* A zero gradient does not freeze an entry under AdamW: momentum from earlier steps (the entry was in an earlier
  step's mask) and decoupled weight decay still move it. ``mode="restore"`` (default) therefore saves the
  parameters before ``optimizer.step()`` and writes the masked entries back right after it, so exactly the
  selected entries change (Adam's moment estimates of masked entries still decay; they are never applied).
  ``mode="grad_only"`` only zeroes gradients (cheaper, one parameter copy less, approximate); with plain SGD
  without momentum and weight decay the two coincide.
* Ties in magnitude are broken deterministically: larger magnitude first, then the lower flat index.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

MASK_MODES = ("restore", "grad_only")


def top_fraction_count(fraction: float, numel: int) -> int:
    """``ceil(fraction * numel)`` entries (at least 1 for a non-empty tensor), robust to float noise.

    Example:
        >>> top_fraction_count(0.1, 30), top_fraction_count(1.0, 7), top_fraction_count(0.01, 5)
        (3, 7, 1)
    """
    if numel <= 0:
        return 0
    return min(numel, max(1, math.ceil(round(fraction * numel, 9))))


def topk_flat_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` largest ``scores``, sorted ascending; ties go to the lower index.

    Deterministic regardless of ``torch.topk``'s (unspecified) tie order: every entry strictly above the k-th
    largest value is taken, then the lowest-index entries equal to it.

    Args:
        scores: any tensor (flattened); typically absolute values.
        k: how many to keep (clamped to ``[0, numel]``).

    Example:
        >>> topk_flat_indices(torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0]), 3).tolist()
        [1, 2, 3]
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    k = max(0, min(int(k), n))
    if k == n:
        return torch.arange(n, device=flat.device)
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=flat.device)
    cand = _candidates(flat, k)
    if cand is not None:  # CPU fast path: the k largest are among the (sorted) candidate indices
        vals = flat[cand]
        thr = torch.topk(vals, k, sorted=False).values.min()
        above = cand[vals > thr]
        ties = cand[vals == thr][: k - above.numel()]
        return torch.cat([above, ties]).sort().values
    thr = torch.topk(flat, k, sorted=False).values.min()
    above = (flat > thr).nonzero().squeeze(1)
    ties = (flat == thr).nonzero().squeeze(1)[: k - above.numel()]
    return torch.cat([above, ties]).sort().values


def _candidates(flat: torch.Tensor, k: int) -> torch.Tensor | None:
    """Sorted indices of a superset of the ``k`` largest entries, or None (use plain ``topk``).

    On CPU ``torch.topk`` over a large tensor is slow (about 25 ms per million entries at k = 10%). A strided
    sample gives a threshold a little below the k-th largest value; when at least ``k`` entries reach it (checked,
    so the selection stays exact) those entries are the candidates. On accelerators, where topk is fast and the
    check would synchronise, and for small tensors or large ``k``, None.
    """
    n = flat.numel()
    if flat.is_cuda or n < 8192 or k > n // 4:
        return None
    sample = flat[:: max(1, n // 4096)]
    m = sample.numel()
    r = min(m, int(1.5 * k / n * m) + 16)  # leaves ~1.5 k + margin entries of the whole tensor above it
    t = torch.topk(sample, r, sorted=False).values.min()
    cand = (flat >= t).nonzero().squeeze(1)
    return cand if cand.numel() >= k else None


def topk_flat_indices_numpy(magnitudes: np.ndarray, k: int) -> np.ndarray:
    """:func:`topk_flat_indices` for a 1-D host array of magnitudes, with numpy only (no torch thread pool).

    Selects exactly what :func:`topk_flat_indices` selects: every entry strictly above the ``k``-th largest value,
    then the lowest-index entries equal to it, as flat indices sorted ascending. numpy runs each call on the calling
    thread and releases the GIL, so a background thread can run it beside training without starting a second
    OpenMP team that competes with torch's intra-op threads.

    Args:
        magnitudes: 1-D array of a totally ordered dtype without NaN, e.g. the bit patterns of ``|x|`` of a float32
            tensor viewed as int32 (for non-negative floats the integer order is the float order).
        k: how many to keep (clamped to ``[0, size]``).

    Returns:
        int64 flat indices, sorted ascending.

    Example:
        >>> topk_flat_indices_numpy(np.array([1.0, 3.0, 2.0, 3.0, 2.0]), 3).tolist()
        [1, 2, 3]
    """
    mag = magnitudes.reshape(-1)
    n = mag.size
    k = max(0, min(int(k), n))
    if k == n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    cand = None
    if n >= 8192 and k <= n // 4:  # as _candidates: a strided sample gives a threshold a little below the k-th
        sample = mag[:: max(1, n // 4096)]
        m = sample.size
        r = min(m, int(1.5 * k / n * m) + 16)
        t = np.partition(sample, m - r)[m - r]  # the r-th largest of the sample
        c = np.flatnonzero(mag >= t)
        if c.size >= k:  # checked, so the selection stays exact whatever the sample saw
            cand = c
    if cand is None:
        thr = np.partition(mag, n - k)[n - k]  # the k-th largest
        idx = np.flatnonzero(mag >= thr)
    else:
        vals = mag[cand]
        thr = np.partition(vals, vals.size - k)[vals.size - k]
        idx = cand[vals >= thr]  # cand is ascending, so idx is too
    if idx.size > k:  # more ties at the threshold than places left: the highest-index ties go
        ties = np.flatnonzero(mag[idx] == thr)
        idx = np.delete(idx, ties[k - idx.size :])
    return idx.astype(np.int64, copy=False)


def trainable_parameters(model: Any) -> dict[str, torch.nn.Parameter]:
    """``name -> parameter`` for every parameter with ``requires_grad`` (a PeftModel: only the adapter)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class TopRhoGradMask(TrainerCallback):
    """Update only the top-``rho`` fraction of each trainable tensor's gradient entries at every optimizer step.

    Args:
        rho: fraction of entries per tensor to update, in (0, 1]; 1 disables the mask (naive full update).
        mode: ``"restore"`` (exact: masked entries are written back after the optimizer step, so momentum and
            weight decay cannot move them) or ``"grad_only"`` (zero the masked gradients only).

    After training, ``stats`` holds the steps masked and the entries selected per tensor at the last step.

    Example:
        >>> mask = TopRhoGradMask(rho=0.1)
        >>> # run_unlearning(MyTrainer, model, tok, forget, None, cfg, callbacks=[mask], use_retain=False)
    """

    def __init__(self, rho: float = 0.1, mode: str = "restore"):
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho <= 1:
            raise ValueError(f"rho must be a number in (0, 1], got {rho!r}")
        if mode not in MASK_MODES:
            raise ValueError(f"mode must be one of {list(MASK_MODES)}, got {mode!r}")
        self.rho = float(rho)
        self.mode = mode
        self._params: dict[str, torch.nn.Parameter] = {}
        self._saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.stats: dict[str, Any] = {"steps": 0, "selected_last_step": {}, "entries_selected": 0, "entries": 0}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._params = trainable_parameters(model)

    @torch.no_grad()
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.rho >= 1.0:
            return
        self._saved = {}
        selected: dict[str, int] = {}
        for name, p in self._params.items():
            if p.grad is None:
                continue
            g = p.grad.view(-1)
            idx = topk_flat_indices(g.abs(), top_fraction_count(self.rho, g.numel()))
            keep = torch.zeros(g.numel(), dtype=torch.bool, device=g.device)
            keep[idx] = True
            g.masked_fill_(~keep, 0.0)
            if self.mode == "restore":
                self._saved[name] = (keep, p.detach().reshape(-1).clone())
            selected[name] = int(idx.numel())
            self.stats["entries_selected"] += int(idx.numel())
            self.stats["entries"] += g.numel()
        self.stats["steps"] += 1
        self.stats["selected_last_step"] = selected

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        for name, (keep, before) in self._saved.items():
            flat = self._params[name].data.view(-1)
            flat.copy_(torch.where(keep, flat, before))
        self._saved = {}
