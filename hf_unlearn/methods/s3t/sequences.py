"""Training-sequence selection for S3T: which permutations of a shard's L slices get trained.

A *sequence* is a permutation of ``range(L)``; stage t of a sequence trains on its first t slices. After a
deletion in slice s, a sequence keeps the prefix before s, so a good set of B sequences puts every slice late in
at least one sequence (diversity), or puts slices that are likely to be deleted late (priors).

Strategies (the official ones, arXiv 2406.16257 section 3.3):

* ``cyclic``: right rotations of ``[0..L-1]``; B = L gives a Latin square. B > L: every sequence of the previous
  level spawns rotations of its suffix after position n (level n = 1, 2, ...), added rotation-index-major until B.
* ``bms`` (official, ``bms()`` of ``src/inference.py``): bipartite-matching selection without priors. The L
  sequences ``[0], [1], ..., [L-1]`` grow one position per round; each round is a networkx max-weight matching
  (unit weights) between the sequences (a node per sequence, named by its last slice) and the slices each has not
  used yet. Every round is a perfect matching, so the L sequences form a Latin square. With B <= L the first B of
  them are served (``bms(L)[:B]``, as the official inventory does). The official code has no BMS for B > L (it
  trains all L! permutations there); we then fall back to ``bms_budget``.
* ``bms_budget`` (ours, the former ``bms``): solves the matching for the B sequences themselves, in rounds of at
  most L, with a penalty on reusing a slice at a position and a bonus for prefixes not seen before.
* ``bms_prior``: with deletion priors p (probability that a deletion hits each slice): each round is a Hungarian
  assignment (scipy ``linear_sum_assignment``) maximising the official prefix-survival score, so rarely-deleted
  slices come early.
* ``random``: B distinct uniformly random permutations (seeded).
* ``all``: all L! permutations (B is ignored).

Example:
    >>> select_sequences("cyclic", 3, 3)
    [[0, 1, 2], [2, 0, 1], [1, 2, 0]]
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import numpy as np

STRATEGIES = ("cyclic", "bms", "bms_budget", "bms_prior", "random", "all")


def rotate_right(seq: Sequence[int], k: int) -> list[int]:
    """``seq`` rotated right by ``k`` (``rotate_right([0, 1, 2], 1) == [2, 0, 1]``)."""
    seq = list(seq)
    if not seq:
        return []
    k %= len(seq)
    return seq[len(seq) - k :] + seq[: len(seq) - k]


def cyclic_sequences(n_slices: int, budget: int) -> list[list[int]]:
    """The first ``budget`` cyclic sequences (right rotations; hierarchical suffix rotations when B > L).

    Args:
        n_slices: L.
        budget: B, at most L!.

    Example:
        >>> cyclic_sequences(4, 2)
        [[0, 1, 2, 3], [3, 0, 1, 2]]
    """
    _check_budget(n_slices, budget)
    current = [rotate_right(range(n_slices), r) for r in range(n_slices)]
    level = 1
    while len(current) < budget:
        # every sequence keeps its first `level` slices and rotates the rest; rotation 0 is the sequence itself,
        # so the previous level stays first and new sequences are spread evenly over the parents
        width = n_slices - level
        nxt = []
        for r in range(width):
            for p in current:
                cand = p[:level] + rotate_right(p[level:], r)
                if cand not in nxt:
                    nxt.append(cand)
        current = nxt
        level += 1
    return current[:budget]


def random_sequences(n_slices: int, budget: int, seed: int = 0) -> list[list[int]]:
    """``budget`` distinct uniformly random permutations of ``range(n_slices)`` (seeded)."""
    _check_budget(n_slices, budget)
    rng = random.Random(seed)
    out: list[list[int]] = []
    while len(out) < budget:
        perm = list(range(n_slices))
        rng.shuffle(perm)
        if perm not in out:
            out.append(perm)
    return out


def all_sequences(n_slices: int) -> list[list[int]]:
    """All L! permutations in lexicographic order."""
    return [list(p) for p in itertools.permutations(range(n_slices))]


def prefix_score(probs: Sequence[float], horizon: int = 100) -> float:
    """Official BMS score of a (partial) sequence whose slices have deletion probabilities ``probs``.

    sum over prefix lengths n of ``n * (1 - P(first n slices))**horizon``: long prefixes that are unlikely to be
    hit by any of ``horizon`` deletions score high.
    """
    score, cum = 0.0, 0.0
    for n, p in enumerate(probs, start=1):
        cum += p
        score += n * max(0.0, 1.0 - cum) ** horizon
    return score


def bms_official_sequences(n_slices: int) -> list[list[int]]:
    """The official BMS without priors: L sequences grown by one unit-weight networkx matching per position.

    Round r matches every sequence (a graph node named by its last slice, as in the official code) to a slice it
    has not used (node ``L + slice``); the matched slice is appended. Each round's matching is perfect, so the
    result is a Latin square (checked: a RuntimeError otherwise).

    Example:
        >>> bms_official_sequences(3)
        [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    """
    import networkx as nx

    _check_budget(n_slices, 1)
    seqs = [[first] for first in range(n_slices)]
    for _ in range(n_slices - 1):
        graph = nx.Graph()
        graph.add_weighted_edges_from(
            (seq[-1], n_slices + nxt, 1) for seq in seqs for nxt in range(n_slices) if nxt not in seq
        )
        by_last = {seq[-1]: seq for seq in seqs}  # distinct last slices: every earlier round was perfect
        matched = nx.max_weight_matching(graph)
        if len(matched) != n_slices:
            raise RuntimeError(f"BMS round found no perfect matching for L={n_slices}")
        for u, v in matched:
            last, slot = (u, v) if u < n_slices else (v, u)
            by_last[last].append(slot - n_slices)
    return seqs


def bms_sequences(n_slices: int, budget: int) -> list[list[int]]:
    """Official BMS without priors: ``bms_official_sequences(L)[:B]`` for B <= L; ``bms_budget`` for B > L.

    Example:
        >>> bms_sequences(4, 2)
        [[0, 3, 2, 1], [1, 2, 3, 0]]
    """
    _check_budget(n_slices, budget)
    if budget <= n_slices:
        return bms_official_sequences(n_slices)[:budget]
    return bms_budget_sequences(n_slices, budget)


def bms_budget_sequences(n_slices: int, budget: int) -> list[list[int]]:
    """BMS for exactly B sequences (ours): per position, a max-weight matching (networkx) of sequences to slices.

    Sequences are built in rounds of at most L, each round starting from ``[0], [1], ..., [L-1]``. A position of a
    round matches its sequences to copies of the slices they have not used yet; copy c of a slice costs more the
    larger c (each slice once per position when possible: a Latin square for B = L), and a slice that creates a
    prefix no earlier sequence has gets a bonus (diverse sequences survive more deletions).
    """
    import networkx as nx

    _check_budget(n_slices, budget)
    chosen: list[list[int]] = []
    seen_prefixes: set[tuple[int, ...]] = set()
    while len(chosen) < budget:
        n = min(n_slices, budget - len(chosen))
        seqs = [[e] for e in range(n)]
        for _ in range(n_slices - 1):
            g = nx.Graph()
            big, bonus = 10 * (n + 1), 1  # copy penalty dominates the novelty bonus
            for i, seq in enumerate(seqs):
                for j in range(n_slices):
                    if j in seq:
                        continue
                    new = tuple(seq + [j]) not in seen_prefixes
                    for c in range(n):
                        g.add_edge(("q", i), ("s", j, c), weight=big * (n - c) + bonus * new + 1)
            matching = nx.max_weight_matching(g, maxcardinality=True)
            pick: dict[int, int] = {}
            for a, b in matching:
                q, s = (a, b) if a[0] == "q" else (b, a)
                pick[q[1]] = s[1]
            for i, seq in enumerate(seqs):
                seq.append(pick[i])
        for seq in seqs:
            if seq in chosen:  # possible only when B > L: replace by the next unused permutation in cyclic order
                seq[:] = next(p for p in cyclic_sequences(n_slices, math.factorial(n_slices)) if p not in chosen)
            chosen.append(seq)
            seen_prefixes.update(tuple(seq[:t]) for t in range(1, n_slices + 1))
    return chosen


def bms_prior_sequences(
    n_slices: int, budget: int, priors: Sequence[float] | None = None, horizon: int = 100
) -> list[list[int]]:
    """BMS with deletion priors: grow B sequences by Hungarian assignment on :func:`prefix_score`.

    With B = L, sequence i starts with slice i (as in the official code); with B != L the first slices are the
    B least likely to be deleted (cycled when B > L, with copies of the slices so every round has a solution).

    Args:
        n_slices: L.
        budget: B.
        priors: deletion probability of each slice (normalised to sum 1); uniform when None.
        horizon: the exponent of the score (official 100).
    """
    from scipy.optimize import linear_sum_assignment

    _check_budget(n_slices, budget)
    p = np.ones(n_slices) if priors is None else np.asarray(priors, dtype=float)
    if p.shape != (n_slices,) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"priors must be {n_slices} non-negative numbers with a positive sum, got {priors!r}")
    p = p / p.sum()
    if budget == n_slices:
        seqs = [[e] for e in range(n_slices)]
    else:
        order = sorted(range(n_slices), key=lambda j: (p[j], j))
        seqs = [[order[i % n_slices]] for i in range(budget)]
    copies = math.ceil(budget / n_slices)
    infeasible = -1e12
    for _ in range(n_slices - 1):
        score = np.full((budget, n_slices * copies), infeasible)
        for i, seq in enumerate(seqs):
            for j in range(n_slices):
                if j in seq:
                    continue
                s = prefix_score([p[e] for e in seq + [j]], horizon)
                for c in range(copies):
                    score[i, c * n_slices + j] = s - c * 1e6  # later copies only when needed
        rows, cols = linear_sum_assignment(score, maximize=True)
        for i, col in zip(rows, cols):
            seqs[i].append(int(col % n_slices))
    return seqs


def select_sequences(
    strategy: str, n_slices: int, budget: int, seed: int = 0, priors: Sequence[float] | None = None
) -> list[list[int]]:
    """Sequences for one shard with a named strategy (see the module docstring).

    Args:
        strategy: one of ``cyclic``, ``bms``, ``bms_budget``, ``bms_prior``, ``random``, ``all``.
        n_slices: L.
        budget: B (ignored by ``all``).
        seed: seed of ``random``.
        priors: deletion priors of ``bms_prior``.

    Example:
        >>> len(select_sequences("all", 3, 1))
        6
    """
    if strategy == "cyclic":
        return cyclic_sequences(n_slices, budget)
    if strategy == "bms":
        return bms_sequences(n_slices, budget)
    if strategy == "bms_budget":
        return bms_budget_sequences(n_slices, budget)
    if strategy == "bms_prior":
        return bms_prior_sequences(n_slices, budget, priors)
    if strategy == "random":
        return random_sequences(n_slices, budget, seed)
    if strategy == "all":
        return all_sequences(n_slices)
    raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")


def _check_budget(n_slices: int, budget: int) -> None:
    if not isinstance(n_slices, int) or n_slices < 1:
        raise ValueError(f"n_slices must be an int >= 1, got {n_slices!r}")
    if not isinstance(budget, int) or budget < 1 or budget > math.factorial(n_slices):
        raise ValueError(f"budget must be an int in [1, {n_slices}! = {math.factorial(n_slices)}], got {budget!r}")
