"""S3T over processes: ``recipes/s3t/train_s3t.py`` on 2 gloo CPU processes equals 1 process (``-m multiproc``).

Two flows of real launches, run side by side:

* 2 processes: train (``--no-delete``; each rank trains one shard, rank 0 merges), ``--delete-only`` (one process),
  ``--retrain`` (each rank retrains the cut stages of its shard of the deleted system, rank 0 merges the copies);
* 1 process: train (deleting the forget split right after), ``--retrain``.

The final merged systems must hold the same adapters, bitwise. The in-process exactness against training from
scratch on the survivors is ``test_retrain_shards_on_copies_then_merge_equals_one_process_retrain_and_scratch``
(``tests/test_s3t.py``).
Runs under ``make test-multiproc``: 37-80 s wall (54 s CPU in all processes) measured on 2 cores shared with a running
benchmark.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.multiproc

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "s3t" / "train_s3t.py")
TINY = {
    "model": {"arch": "llama", "num_layers": 2, "hidden_size": 16, "num_heads": 2, "vocab_size": 300},
    "benchmark": {"n_authors": 2, "qa_per_author": 4, "seed": 0, "forget_split": "forget10"},
    "method_config": {
        "n_shards": 2,
        "n_slices": 2,
        "budget": 1,
        "layers_per_slice": 1,
        "num_epochs": 1,
        "max_steps": 2,
        "batch_size": 8,
        "max_length": 48,
        "learning_rate": 1.0e-2,
        "seed": 0,
    },
    "num_threads": 1,
}


def _flow(root: Path, name: str, steps: list[list[str]], env: dict) -> subprocess.Popen:
    cfg = root / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "output_dir": str(root / name)}))
    script = " && ".join(shlex.join([*cmd, RECIPE, "--config", str(cfg), *extra]) for *cmd, extra in steps)
    return subprocess.Popen(
        ["bash", "-c", script], env=env, cwd=str(REPO), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _adapters(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {
        d.name: load_file(str(d / "adapter_model.safetensors"))
        for d in sorted((folder / "adapters").iterdir())
        if d.is_dir()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3t_multiproc")
    env = {
        **os.environ,
        "HF_HOME": tempfile.mkdtemp(prefix="hf_home_"),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    py = sys.executable
    two_procs = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _flow(
        root,
        "two",
        [[*two_procs, ["--no-delete"]], [py, ["--delete-only"]], [*two_procs, ["--retrain"]]],
        {**env, "ACCELERATE_USE_CPU": "1"},
    )
    one = _flow(
        root, "one", [[py, []], [py, ["--retrain"]]], {k: v for k, v in env.items() if k != "ACCELERATE_USE_CPU"}
    )
    try:
        out_one, out_two = one.communicate(timeout=600)[0], two.communicate(timeout=600)[0]
    except subprocess.TimeoutExpired:
        for proc in (one, two):
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        raise
    assert one.returncode == 0, out_one[-4000:]
    assert two.returncode == 0, out_two[-4000:]
    return root


def test_two_process_retrain_of_the_merged_deleted_system_equals_one_process(runs):
    root = runs
    one, two = root / "one", root / "two"
    # each of the 2 ranks retrained its own shard, and both had cut stages to rebuild
    done = [json.loads((two / "parts" / f"retrain_rank{r}" / "DONE").read_text()) for r in (0, 1)]
    assert [d["shards"] for d in done] == [[0], [1]]
    assert all(d["new_adapters"] for d in done)
    new_two = sorted(n for d in done for n in d["new_adapters"])
    assert new_two == sorted(json.loads((one / "parts" / "retrain_rank0" / "DONE").read_text())["new_adapters"])
    inv = {k: json.loads((k / "model" / "s3t_inventory.json").read_text()) for k in (one, two)}
    assert inv[one]["deleted"] == inv[two]["deleted"] and len(inv[two]["deleted"]) == 4  # the forget split
    for st in inv.values():  # every shard serves its full sequence again
        assert all(None not in chain for sh in st["shards"].values() for chain in sh["chains"])
    assert set(new_two) <= set(inv[two]["adapters"])
    a1, a2 = _adapters(one / "model"), _adapters(two / "model")
    assert sorted(a1) == sorted(a2) == sorted(inv[two]["adapters"])
    for name in a1:
        assert sorted(a1[name]) == sorted(a2[name])
        assert all(torch.equal(a1[name][k], a2[name][k]) for k in a1[name]), name
    # the retrained stages are new weights, not the pre-deletion ones (those saw the deleted uids)
    trained = {**_adapters(two / "parts" / "rank0"), **_adapters(two / "parts" / "rank1")}
    for name in new_two:
        before = trained[name.removesuffix("_g1")]
        assert any(not torch.equal(before[k], a2[name][k]) for k in before), name
