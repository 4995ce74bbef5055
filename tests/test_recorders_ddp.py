"""The three training-time recorders under DDP (2 gloo CPU processes) against a single-process run.

Both runs see the same global batches: per-device batch 2, and the single process accumulates 2 micro-batches per
optimizer step, so its step k holds exactly the examples the two ranks hold at step k (the loss is normalised by
the label tokens of the whole step, summed over ranks, in both). Hence the weights, the amnesiac updates and the
per-example statistics agree. With 2 ranks the all-reduce adds the same two partial gradients the single process
accumulates (a + b == b + a in floating point), so the agreement is bitwise and tested with exact equality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from hf_unlearn.methods.embedding_ga.recorder import EmbeddingGradientStore
from hf_unlearn.methods.partial.recorder import AmnesiacRecording

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "tests" / "recorders_ddp_run.py")


@pytest.mark.multiproc
def test_recorders_two_processes_match_one(tmp_path):
    env = {**os.environ, "HF_HOME": tempfile.mkdtemp(prefix="hf_home_"), "PYTHONPATH": str(REPO)}
    env["OMP_NUM_THREADS"] = "1"  # HF_HOME: no stale accelerate default config
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    kw = {"cwd": str(REPO), "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    one = subprocess.Popen([sys.executable, SCRIPT, str(tmp_path / "one"), "2"], env=env, **kw)
    two = subprocess.Popen(
        [torchrun, "--nproc_per_node", "2", SCRIPT, str(tmp_path / "two"), "1"],
        env={**env, "ACCELERATE_USE_CPU": "1"}, **kw,
    )  # fmt: skip
    out_one, out_two = one.communicate(timeout=300)[0], two.communicate(timeout=300)[0]
    assert one.returncode == 0, out_one[-4000:]
    assert two.returncode == 0, out_two[-4000:]
    s1, s2 = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("one", "two"))
    assert (s1["num_processes"], s2["num_processes"]) == (1, 2) and s1["steps"] == s2["steps"] == 8

    # embedding gradients: every example of epoch 1 exactly once, the value it received in the 1-process run
    e1, e2 = EmbeddingGradientStore(tmp_path / "one" / "egrads"), EmbeddingGradientStore(tmp_path / "two" / "egrads")
    uids = [f"u{i}" for i in range(16)]
    assert sorted(e2.uids(epoch=1)) == sorted(e1.uids(epoch=1)) == sorted(uids)
    assert all(len(e2.index[u]["1"]) == 1 for u in uids)  # filed once, not once per rank
    shards = {entry[0] for u in uids for entry in e2.index[u]["1"]}
    assert {s.split("-")[1] for s in shards} == {"r0", "r1"}  # both ranks really recorded
    for u in uids:
        ids1, pos1, g1 = e1.load(u, 1)
        ids2, pos2, g2 = e2.load(u, 1)
        assert torch.equal(ids1, ids2) and torch.equal(pos1, pos2)
        assert g1.abs().max() > 0
        assert torch.equal(g2, g1), u

    # amnesiac: each global step's update (identical on every rank) filed with the uids of BOTH ranks' batches
    a1, a2 = AmnesiacRecording(tmp_path / "one" / "amnesiac"), AmnesiacRecording(tmp_path / "two" / "amnesiac")
    assert len(a1.steps) == len(a2.steps) == 8
    for st1, st2 in zip(a1.steps, a2.steps):
        assert sorted(st1["uids"]) == sorted(st2["uids"]) and len(st2["uids"]) == 4
        d1, d2 = a1.load_step(st1["step"]), a2.load_step(st2["step"])
        assert d1.keys() == d2.keys()
        for name in d1:
            assert torch.equal(d2[name][1], d1[name][1]), (st1["step"], name)
    assert a2.uid_to_steps == a1.uid_to_steps

    # learning events: every example counted once per epoch, with the statistics of the 1-process run
    r1, r2 = (json.loads((tmp_path / r / "events.json").read_text()) for r in ("one", "two"))
    assert r2["counts"] == r1["counts"] == {u: 2 for u in uids}
    assert r2["sums"] == r1["sums"]
