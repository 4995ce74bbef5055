"""S3T bookkeeping: where each uid trains, which stages a deletion invalidates, which chain each shard serves.

Pure functions on the JSON-able inventory (``S3TModel.state``); standard library only (no torch), so the deletion
logic can be read, tested and reused without a model. The inventory::

    {"format_version", "n_blocks", "layers_per_slice", "config", "generation",
     "assignment": {uid: [shard, slice]},
     "deleted": [uid, ...],
     "adapters": {name: {"shard", "prefix", "blocks", "excluded", "seed", "n_examples"}},
     "shards": {"j": {"sequences": [[slice, ...], ...], "chains": [[name | None, ...], ...]}}}

Example:
    >>> state = new_state({"x": [0, 0], "y": [0, 1]}, {0: [[0, 1]]}, n_blocks=4, layers_per_slice=2, config={})
    >>> state["adapters"]["a1"] = {"shard": 0, "prefix": [0], "blocks": [2, 3], "excluded": []}
    >>> state["adapters"]["a2"] = {"shard": 0, "prefix": [0, 1], "blocks": [0, 1], "excluded": []}
    >>> state["shards"]["0"]["chains"] = [["a1", "a2"]]
    >>> served_chains(state, validity(state))
    {0: ['a1', 'a2']}
    >>> report, removed = apply_deletion(state, ["y"], validity(state))
    >>> removed, served_chains(state, validity(state))
    (['a2'], {0: ['a1']})
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMAT_VERSION = 1


def assign_uid(uid: str, n_shards: int, n_slices: int, seed: int = 0) -> tuple[int, int]:
    """Deterministic ``(shard, slice)`` of a uid: sha256 of ``"{seed}:{uid}"``, independent of other uids.

    Example:
        >>> assign_uid("u1", 2, 3) == assign_uid("u1", 2, 3)
        True
    """
    h = int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:8], "big")
    return h % n_shards, (h // n_shards) % n_slices


def stage_seed(seed: int, shard: int, prefix: list[int] | tuple[int, ...]) -> int:
    """Seed of the stage that trains ``prefix`` of ``shard`` (the same prefix always gets the same seed).

    Example:
        >>> stage_seed(0, 1, [2, 0]) == stage_seed(0, 1, (2, 0))
        True
    """
    key = f"{seed}|{shard}|{','.join(map(str, prefix))}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def stage_blocks(stage: int, k: int, n_blocks: int) -> list[int]:
    """Block indices of stage ``stage`` (1-based): stage 1 is the top-most group of ``k`` blocks.

    Example:
        >>> stage_blocks(1, 2, 12), stage_blocks(2, 2, 12)
        ([10, 11], [8, 9])
    """
    hi = n_blocks - (stage - 1) * k
    return list(range(hi - k, hi))


def assign_all(
    uids: Iterable[str], keys: Iterable[Any], n_shards: int, n_slices: int, seed: int
) -> dict[str, list[int]]:
    """``uid -> [shard, slice]``, placing each uid by its key (its own uid, or its group's value).

    Example:
        >>> assign_all(["a", "b"], ["g", "g"], 3, 2, 0)["a"] == assign_all(["b", "a"], ["g", "g"], 3, 2, 0)["b"]
        True
    """
    return {uid: list(assign_uid(str(key), n_shards, n_slices, seed)) for uid, key in zip(uids, keys)}


def placement_keys(
    uids: Sequence[str], groups: Sequence[Any] | None, ungrouped_values: Iterable[str] | None = None
) -> list[str]:
    """The key each row is placed by (:func:`assign_all`): its group's value, or its own uid when there are no
    groups or its group value is in ``ungrouped_values`` (rows that belong to no one, e.g. general-knowledge QA).

    Example:
        >>> placement_keys(["q1", "q2", "q3"], ["ann", "world", "ann"], ["world"])
        ['ann', 'q2', 'ann']
        >>> placement_keys(["q1", "q2"], None)
        ['q1', 'q2']
    """
    if groups is None:
        return [str(u) for u in uids]
    free = {str(v) for v in ungrouped_values or ()}
    return [str(u) if str(g) in free else str(g) for u, g in zip(uids, groups, strict=True)]


def new_state(
    assignment: dict[str, list[int]],
    sequences: Mapping[int, list[list[int]]],
    *,
    n_blocks: int,
    layers_per_slice: int,
    config: dict[str, Any],
) -> dict[str, Any]:
    """A fresh inventory: nothing trained or deleted yet; ``sequences[j]`` are shard j's slice orders.

    Example:
        >>> new_state({}, {0: [[0, 1]], 1: []}, n_blocks=2, layers_per_slice=1, config={})["shards"]["0"]["chains"]
        [[None, None]]
    """
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "n_blocks": n_blocks,
        "layers_per_slice": layers_per_slice,
        "config": config,
        "assignment": assignment,
        "deleted": [],
        "adapters": {},  # name -> {shard, prefix, blocks, excluded (deleted uids left out at training)}
        "shards": {str(j): {"sequences": seqs, "chains": []} for j, seqs in sequences.items()},
        "generation": 0,
    }
    for sh in state["shards"].values():
        sh["chains"] = [[None] * len(seq) for seq in sh["sequences"]]
    return state


def stage_rows(
    uids: Sequence[str],
    assignment: Mapping[str, Sequence[int]],
    shard: int,
    prefix: Sequence[int],
    excluded: set[str],
    cumulative: bool = True,
) -> list[int]:
    """Row indices (into ``uids``) of a stage's examples, sorted by uid (data order never depends on row order).

    A stage trains on every slice of its prefix (``cumulative``) or on its last slice only; uids in ``excluded``
    and uids the assignment does not know are left out.

    Example:
        >>> stage_rows(["b", "a", "c"], {"a": [0, 0], "b": [0, 1], "c": [1, 0]}, 0, [0, 1], set())
        [1, 0]
    """
    slices = set(prefix) if cumulative else {prefix[-1]}
    rows = []
    for i, uid in enumerate(uids):
        if uid in excluded:
            continue
        if uid not in assignment:
            continue
        j, s = assignment[uid]
        if j == shard and s in slices:
            rows.append((uid, i))
    return [i for _, i in sorted(rows)]


def prefix_uids(assignment: Mapping[str, Sequence[int]], shard: int, prefix: Sequence[int]) -> set[str]:
    """Uids a stage depends on: every slice of its prefix (its own data, and its parents', which it builds on,
    also with ``cumulative=False``).

    Example:
        >>> sorted(prefix_uids({"a": [0, 0], "b": [0, 1], "c": [1, 0]}, 0, [1]))
        ['b']
    """
    slices = set(prefix)
    return {u for u, (j, s) in assignment.items() if j == shard and s in slices}


def validity(state: Mapping[str, Any]) -> dict[str, bool]:
    """Adapter -> whether nothing it depends on holds a deleted uid.

    A stage depends on the slices of its whole prefix: its own training data, and (through the frozen parent
    stages it was trained on top of) its parents' data. With ``cumulative=False`` it trains on slice pi(t) only,
    but still on top of stages 1..t-1, so a deletion in any slice of the prefix invalidates it too. Uids that were
    already deleted when a stage was trained (its ``excluded``) do not invalidate it.
    """
    deleted = set(state["deleted"])
    by_shard_slice: dict[tuple[int, int], set[str]] = {}
    assignment = state["assignment"]
    for u in deleted:
        j, s = assignment[u]
        by_shard_slice.setdefault((j, s), set()).add(u)
    out = {}
    for name, a in state["adapters"].items():
        slices = a["prefix"]
        hit = set().union(*(by_shard_slice.get((a["shard"], s), set()) for s in slices))
        out[name] = hit <= set(a["excluded"])
    return out


def valid_prefix_length(chain: Sequence[str | None], valid: Mapping[str, bool]) -> int:
    """How many leading stages of ``chain`` are trained and valid."""
    n = 0
    for name in chain:
        if name is None or not valid.get(name, False):
            break
        n += 1
    return n


def served_chains(state: Mapping[str, Any], valid: Mapping[str, bool]) -> dict[int, list[str]]:
    """Live shard -> adapter chain it serves (its sequence with the longest valid prefix; ties: lowest index)."""
    out = {}
    for j_str, sh in state["shards"].items():
        best: list[str] = []
        for chain in sh["chains"]:
            n = valid_prefix_length(chain, valid)
            if n > len(best):
                best = list(chain[:n])
        if best:
            out[int(j_str)] = best
    return out


def apply_deletion(
    state: dict[str, Any], uids: Sequence[str], valid_before: Mapping[str, bool]
) -> tuple[dict[str, Any], list[str]]:
    """Delete ``uids`` from ``state`` in place: record them, cut every chain at its first invalid stage and drop
    the invalid adapters from the inventory.

    Args:
        state: the inventory (changed in place).
        uids: uids to delete (strings); already deleted ones are no-ops.
        valid_before: :func:`validity` of ``state`` before the call.

    Returns:
        ``(report, removed)``: the report (``deleted``, ``already_deleted``, ``shards_hit``, ``cuts``,
        ``adapters_removed``, ``live_shards``, ``dead_shards``, ``served_prefix_lengths``) and the names of the
        adapters dropped from the inventory (their weights are still to be freed).

    Raises:
        KeyError: naming unknown uids (nothing is changed then).
    """
    assignment = state["assignment"]
    unknown = sorted({u for u in uids if u not in assignment})
    if unknown:
        raise KeyError(f"unknown uid(s) {unknown[:10]} ({len(unknown)} in all): not in the training data")
    deleted = set(state["deleted"])
    new = list(dict.fromkeys(u for u in uids if u not in deleted))
    already = sorted({u for u in uids if u in deleted})
    before = {j: [valid_prefix_length(c, valid_before) for c in sh["chains"]] for j, sh in state["shards"].items()}
    state["deleted"] = sorted(deleted | set(new))
    valid = validity(state)
    removed = [n for n, ok in valid.items() if not ok]
    cuts = []
    for j, sh in state["shards"].items():
        for q, chain in enumerate(sh["chains"]):
            n = valid_prefix_length(chain, valid)
            if n != before[j][q]:
                cuts.append(
                    {
                        "shard": int(j),
                        "sequence": q,
                        "from": before[j][q],
                        "to": n,
                        "stages_cut": [c for c in chain[n : before[j][q]] if c is not None],
                    }
                )
            sh["chains"][q] = [c if c is not None and valid.get(c, False) else None for c in chain]
    for name in removed:  # out of the inventory now: no chain can name it; its weights are freed later
        state["adapters"].pop(name, None)
    served = served_chains(state, validity(state))
    report = {
        "deleted": new,
        "already_deleted": already,
        "shards_hit": sorted({assignment[u][0] for u in new}),
        "cuts": cuts,
        "adapters_removed": removed,
        "live_shards": sorted(served),
        "dead_shards": sorted(int(j) for j in state["shards"] if int(j) not in served),
        "served_prefix_lengths": {j: len(c) for j, c in served.items()},
    }
    return report, removed


def merge_inventories(
    parts: Sequence[tuple[str, dict[str, Any]]], shards: Sequence[Sequence[int]] | None = None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Join the inventories of parts that each trained (or retrained) a disjoint set of shards.

    Args:
        parts: ``(label, inventory)`` pairs, in order; the label names the part in errors.
        shards: one list of shard indices per part: shard j is taken from the one part that lists it, so parts may
            be whole systems (e.g. each rank's copy after ``retrain(shards=...)``). Every shard must be listed
            exactly once, and every part must have the same assignment, config and deleted uids. Default: shard j
            is taken from the part that trained it (the only part whose shard j has sequences).

    Returns:
        ``(merged, taken)``: the joined inventory and ``(label, adapter name)`` for every adapter it takes from a
        part (to copy its folder).

    Raises:
        ValueError: no parts, parts of another config, dataset or deletion history, a shard trained in two parts
            (``shards=None``), or a ``shards`` that does not list every shard exactly once.

    Example:
        >>> a = new_state({"x": [0, 0]}, {0: [[0]], 1: []}, n_blocks=2, layers_per_slice=1, config={})
        >>> b = new_state({"x": [0, 0]}, {0: [], 1: [[0]]}, n_blocks=2, layers_per_slice=1, config={})
        >>> merged, _ = merge_inventories([("a", a), ("b", b)], shards=[[0], [1]])
        >>> merged["shards"]["1"]["sequences"]
        [[0]]
    """
    if not parts:
        raise ValueError("merge_saved needs at least one part")
    first, base = parts[0]
    n_shards = len(base["shards"])
    for label, st in parts[1:]:
        if st["assignment"] != base["assignment"] or st["config"] != base["config"]:
            raise ValueError(f"{label} was trained with another config or dataset than {first}")
        if st.get("base_fingerprint") and base.get("base_fingerprint") not in (None, st["base_fingerprint"]):
            raise ValueError(f"{label} was trained on another base model than {first}")
    if shards is None:
        owned: list[list[str]] = []
        seen: set[str] = set()
        for _, st in parts:
            mine = [j for j, sh in st["shards"].items() if sh["sequences"]]
            for j in mine:
                if j in seen:
                    raise ValueError(f"shard {j} was trained in two parts")
                seen.add(j)
            owned.append(mine)
    else:
        owned = _check_shard_lists(parts, shards, n_shards)
    merged = copy.deepcopy(base)
    merged["adapters"] = {}
    for sh in merged["shards"].values():
        sh["sequences"], sh["chains"] = [], []
    merged["generation"] = max(st.get("generation", 0) for _, st in parts)
    taken: list[tuple[str, str]] = []
    for (label, st), mine in zip(parts, owned):
        for j in mine:
            sh = st["shards"][j]
            merged["shards"][j] = sh
            for chain in sh["chains"]:
                for name in chain:
                    if name is not None and name not in merged["adapters"]:
                        merged["adapters"][name] = st["adapters"][name]
                        taken.append((label, name))
    merged["deleted"] = sorted(set(merged["deleted"]))
    return merged, taken


def _check_shard_lists(
    parts: Sequence[tuple[str, dict[str, Any]]], shards: Sequence[Sequence[int]], n_shards: int
) -> list[list[str]]:
    """Validate ``merge_inventories``'s ``shards`` (one list per part, every shard exactly once, same deletions)."""
    labels = [label for label, _ in parts]
    if isinstance(shards, (str, bytes)) or len(shards) != len(parts):
        raise ValueError(f"shards must hold one list of shard indices per part ({len(parts)} parts: {labels})")
    valid = list(range(n_shards))
    where: dict[int, str] = {}
    owned = []
    for (label, _), mine in zip(parts, shards):
        if isinstance(mine, (int, str)):
            raise ValueError(f"shards for part {label} must be a list of shard indices, got {mine!r}")
        for j in mine:
            if not isinstance(j, int) or isinstance(j, bool) or j not in valid:
                raise ValueError(f"shard index {j!r} for part {label} is not a shard; valid shard indices: {valid}")
            if j in where:
                raise ValueError(f"shard {j} is listed for two parts: {where[j]} and {label}")
            where[j] = label
        owned.append([str(j) for j in mine])
    missing = [j for j in valid if j not in where]
    if missing:
        raise ValueError(f"shard(s) {missing} are listed for no part: every shard in {valid} must be listed once")
    first, base = parts[0]
    for label, st in parts[1:]:
        if sorted(st["deleted"]) != sorted(base["deleted"]):
            diff = sorted(set(st["deleted"]) ^ set(base["deleted"]))
            raise ValueError(
                f"{label} and {first} have deleted different uids ({diff[:5]}...): delete the same uids in every "
                "part before merging"
            )
    for (label, st), mine in zip(parts, owned):
        for j in mine:
            if not st["shards"][j]["sequences"] and any(other["shards"][j]["sequences"] for _, other in parts):
                raise ValueError(f"part {label} did not train shard {j} (another part did): it cannot provide it")
    return owned
