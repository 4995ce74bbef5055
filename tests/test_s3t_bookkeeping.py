"""S3T bookkeeping (hf_unlearn/methods/s3t/bookkeeping.py): pure functions on the inventory, no torch needed."""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "hf_unlearn" / "methods" / "s3t" / "bookkeeping.py"


def _load():
    spec = importlib.util.spec_from_file_location("s3t_bookkeeping_under_test", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bk = _load()


def test_imports_only_the_standard_library():
    tree = ast.parse(PATH.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert roots - {"__future__"} <= set(sys.stdlib_module_names), roots


def test_runs_with_torch_unavailable():
    """A fresh interpreter where ``import torch`` fails loads the module and runs a deletion."""
    code = f"""
import importlib.util, sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
spec = importlib.util.spec_from_file_location("bk", {str(PATH)!r})
bk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bk)
state = bk.new_state({{"a": [0, 0], "b": [0, 1]}}, {{0: [[0, 1]]}}, n_blocks=2, layers_per_slice=1, config={{}})
state["adapters"] = {{"x": {{"shard": 0, "prefix": [0], "excluded": []}},
                      "y": {{"shard": 0, "prefix": [0, 1], "excluded": []}}}}
state["shards"]["0"]["chains"] = [["x", "y"]]
report, removed = bk.apply_deletion(state, ["b"], bk.validity(state))
assert removed == ["y"] and report["served_prefix_lengths"] == {{0: 1}}, report
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_assign_uid_is_a_hash_of_seed_and_uid_alone():
    h = int.from_bytes(hashlib.sha256(b"7:author-3").digest()[:8], "big")
    assert bk.assign_uid("author-3", 5, 4, seed=7) == (h % 5, (h // 5) % 4)
    a = bk.assign_all(["p", "q", "r"], ["p", "q", "r"], 3, 2, 1)
    b = bk.assign_all(["r", "p"], ["r", "p"], 3, 2, 1)  # without q, and in another order: same places
    assert a["p"] == b["p"] and a["r"] == b["r"]
    grouped = bk.assign_all(["p", "q"], ["g", "g"], 7, 5, 0)  # grouped by a column: one place per group
    assert grouped["p"] == grouped["q"] == list(bk.assign_uid("g", 7, 5, 0))


def test_stage_blocks_and_seeds():
    assert bk.stage_blocks(1, 3, 12) == [9, 10, 11] and bk.stage_blocks(4, 3, 12) == [0, 1, 2]
    assert bk.stage_seed(0, 1, [0, 2]) == bk.stage_seed(0, 1, (0, 2)) != bk.stage_seed(0, 1, [2, 0])
    assert 0 <= bk.stage_seed(3, 0, [1]) < 2**31


def test_stage_rows_sorted_by_uid_cumulative_or_last_slice_minus_excluded():
    assignment = {"d": [0, 1], "a": [0, 0], "c": [0, 0], "b": [1, 0], "e": [0, 2]}
    uids = ["d", "c", "zz", "b", "a", "e"]  # "zz" is unknown to the assignment: left out
    assert bk.stage_rows(uids, assignment, 0, [0, 1], set()) == [4, 1, 0]  # a, c, d
    assert bk.stage_rows(uids, assignment, 0, [0, 1], set(), cumulative=False) == [0]  # d
    assert bk.stage_rows(uids, assignment, 0, [0, 1], {"c"}) == [4, 0]
    assert bk.prefix_uids(assignment, 0, [2, 1]) == {"d", "e"}


def _state():
    """Shard 0 serves x -> y (slices 0 then 1); shard 1 serves z (slice 0); one sequence each."""
    assignment = {"a": [0, 0], "b": [0, 1], "c": [1, 0], "gone": [0, 1]}
    state = bk.new_state(assignment, {0: [[0, 1]], 1: [[0]]}, n_blocks=4, layers_per_slice=2, config={"k": 1})
    state["deleted"] = ["gone"]  # deleted before y was trained: y excluded it
    state["adapters"] = {
        "x": {"shard": 0, "prefix": [0], "blocks": [2, 3], "excluded": []},
        "y": {"shard": 0, "prefix": [0, 1], "blocks": [0, 1], "excluded": ["gone"]},
        "z": {"shard": 1, "prefix": [0], "blocks": [2, 3], "excluded": []},
    }
    state["shards"]["0"]["chains"] = [["x", "y"]]
    state["shards"]["1"]["chains"] = [["z"]]
    return state


def test_deletion_cuts_at_the_first_stage_that_saw_the_uid():
    state = _state()
    valid = bk.validity(state)
    assert valid == {"x": True, "y": True, "z": True}  # "gone" was excluded from y's data
    assert bk.served_chains(state, valid) == {0: ["x", "y"], 1: ["z"]}
    report, removed = bk.apply_deletion(state, ["b", "b", "gone"], valid)
    assert removed == ["y"]
    assert report["deleted"] == ["b"] and report["already_deleted"] == ["gone"] and report["shards_hit"] == [0]
    assert report["cuts"] == [{"shard": 0, "sequence": 0, "from": 2, "to": 1, "stages_cut": ["y"]}]
    assert state["shards"]["0"]["chains"] == [["x", None]] and "y" not in state["adapters"]
    assert report["live_shards"] == [0, 1] and report["dead_shards"] == []
    report, removed = bk.apply_deletion(state, ["a"], bk.validity(state))  # slice 0 of shard 0: x dies
    assert removed == ["x"] and report["dead_shards"] == [0] and report["served_prefix_lengths"] == {1: 1}


def test_a_deleted_parent_slice_invalidates_a_non_cumulative_child():
    state = _state()
    state["adapters"]["y"]["excluded"] = []  # trained on slice 1 only, on top of x (slice 0)
    state["deleted"] = []
    report, removed = bk.apply_deletion(state, ["a"], bk.validity(state))
    assert sorted(removed) == ["x", "y"] and report["dead_shards"] == [0]


def test_unknown_uids_raise_and_change_nothing():
    state = _state()
    before = copy.deepcopy(state)
    with pytest.raises(KeyError, match="nope"):
        bk.apply_deletion(state, ["a", "nope"], bk.validity(state))
    assert state == before


def test_merge_inventories_joins_disjoint_shards_and_refuses_overlaps():
    full = _state()
    part0, part1 = copy.deepcopy(full), copy.deepcopy(full)
    part0["shards"]["1"] = {"sequences": [], "chains": []}
    part0["adapters"].pop("z")
    part1["shards"]["0"] = {"sequences": [], "chains": []}
    part1["adapters"] = {"z": full["adapters"]["z"]}
    merged, taken = bk.merge_inventories([("p0", part0), ("p1", part1)])
    assert merged == full and taken == [("p0", "x"), ("p0", "y"), ("p1", "z")]
    with pytest.raises(ValueError, match="shard 0 was trained in two parts"):
        bk.merge_inventories([("p0", part0), ("again", part0)])
    other = copy.deepcopy(part1)
    other["config"] = {"k": 2}
    with pytest.raises(ValueError, match="other config or dataset than p0"):
        bk.merge_inventories([("p0", part0), ("other", other)])
    with pytest.raises(ValueError, match="at least one part"):
        bk.merge_inventories([])
