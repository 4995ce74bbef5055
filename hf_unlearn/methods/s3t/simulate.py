"""Deletion-capacity simulation: how many uniform random deletion requests until every shard is dead.

Reproduces the logic of the official ``deletion.py`` (brcsomnath/S3T): every shard holds the same B sequences;
each request picks one of the m*L slices uniformly at random (requests may hit already-dead shards and still
count); in the hit shard every sequence containing the slice keeps only the prefix before it (an empty prefix
drops the sequence); the count stops at the request that kills the last shard. SISA (one model per shard, any
deletion in a shard kills it) is the baseline: a coupon-collector over the m shards.

Example:
    >>> mean, std = simulate_deletions(1, 1, 1, trials=5)
    >>> (mean, std)
    (1.0, 0.0)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import numpy as np

from hf_unlearn.methods.s3t.sequences import select_sequences


def cut_sequences(seqs: list[list[int]], slice_id: int) -> list[list[int]]:
    """Every sequence cut just before ``slice_id``; empty prefixes are dropped (the official ``delete`` rule)."""
    out = []
    for s in seqs:
        if slice_id in s:
            s = s[: s.index(slice_id)]
            if not s:
                continue
        out.append(s)
    return out


def count_until_failure(
    shard_sequences: Sequence[Sequence[Sequence[int]]], n_slices: int, draws: Iterable[int]
) -> int:
    """Number of deletions (slice indices in ``[0, m*L)``, taken from ``draws``) until every shard is dead.

    Args:
        shard_sequences: per shard, its list of sequences.
        n_slices: L (draw d hits shard ``d // L``, slice ``d % L``).
        draws: an iterable of draws (e.g. a seeded generator).

    Raises:
        ValueError: if ``draws`` runs out before the system dies.

    Example:
        >>> count_until_failure([[[0, 1], [1, 0]]], 2, [0, 0, 1])
        3
    """
    shards = {j: [list(s) for s in seqs] for j, seqs in enumerate(shard_sequences)}
    count = 0
    it = iter(draws)
    while any(shards.values()):
        try:
            d = next(it)
        except StopIteration:
            raise ValueError(f"draws ran out after {count} deletions with shards still alive") from None
        j, s = divmod(d, n_slices)
        shards[j] = cut_sequences(shards[j], s)
        count += 1
    return count


def _uniform_draws(rng: random.Random, n: int):
    while True:
        yield rng.randrange(n)


def simulate_deletions(
    m: int,
    L: int,
    B: int,
    strategy: str = "cyclic",
    trials: int = 100,
    seed: int = 0,
    priors: Sequence[float] | None = None,
    return_counts: bool = False,
):
    """Mean and std (population, like numpy) of the deletions an S3T system survives before every shard dies.

    Args:
        m: number of shards.
        L: slices per shard.
        B: sequences per shard (budget).
        strategy: sequence selection strategy (``cyclic`` is the official simulation's).
        trials: independent simulations.
        seed: seed of the uniform deletion draws (and of ``random`` sequences).
        priors: deletion priors for ``bms_prior``.
        return_counts: also return the per-trial counts.

    Returns:
        ``(mean, std)`` (or ``(mean, std, counts)``).

    Example:
        >>> m, s = simulate_deletions(2, 3, 3, trials=50, seed=0)
        >>> m > 2
        True
    """
    rng = random.Random(seed)
    counts = []
    fixed = None
    if strategy != "random":  # deterministic strategies: the same sequences in every trial and shard
        fixed = select_sequences(strategy, L, B, priors=priors)
    for t in range(trials):
        if fixed is not None:
            seqs = [fixed] * m
        else:
            seeds = [seed * 1000003 + t * 131 + j for j in range(m)]
            seqs = [select_sequences(strategy, L, B, seed=s, priors=priors) for s in seeds]
        counts.append(count_until_failure(seqs, L, _uniform_draws(rng, m * L)))
    arr = np.asarray(counts, dtype=float)
    out = (float(arr.mean()), float(arr.std()))
    return (*out, counts) if return_counts else out


def simulate_sisa(m: int, L: int, trials: int = 100, seed: int = 0, return_counts: bool = False):
    """SISA baseline: uniform deletions over the m*L slices until every one of the m shards has been hit once."""
    rng = random.Random(seed)
    counts = []
    for _ in range(trials):
        hit: set[int] = set()
        n = 0
        while len(hit) < m:
            hit.add(rng.randrange(m * L) // L)
            n += 1
        counts.append(n)
    arr = np.asarray(counts, dtype=float)
    out = (float(arr.mean()), float(arr.std()))
    return (*out, counts) if return_counts else out


def capacity_curve(
    m: int, L: int, budgets: Iterable[int], strategy: str = "cyclic", trials: int = 100, seed: int = 0
) -> dict[str, list]:
    """Deletions-until-failure for each budget B, plus the SISA value (for the plot)."""
    budgets = list(budgets)
    rows = [simulate_deletions(m, L, b, strategy, trials, seed) for b in budgets]
    sisa = simulate_sisa(m, L, trials, seed)
    return {
        "budget": budgets,
        "mean": [r[0] for r in rows],
        "std": [r[1] for r in rows],
        "sisa_mean": sisa[0],
        "sisa_std": sisa[1],
    }


def plot_capacity(curves: dict[str, dict[str, list]], path: str, title: str = "S3T deletion capacity") -> None:
    """Plot deletions-until-failure vs budget B for several strategies (``{strategy: capacity_curve(...)}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    sisa = None
    for name, c in curves.items():
        ax.errorbar(c["budget"], c["mean"], yerr=c["std"], marker="o", capsize=3, label=f"S3T ({name})")
        sisa = c
    if sisa is not None:
        ax.axhline(sisa["sisa_mean"], color="k", ls="--", label="SISA")
    ax.set_xlabel("budget B (sequences per shard)")
    ax.set_ylabel("deletions until all shards fail")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
