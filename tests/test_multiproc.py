"""Every trainer-based method under 2 gloo CPU processes matches the single-process run (``pytest -m multiproc``).

One target is fine-tuned here (one process) and saved; ``tests/multiproc_driver.py`` then runs every method that
:func:`hf_unlearn.list_methods` returns (a new method is picked up automatically) in ONE 2-process launch and in one
plain process, with the same global batch (2 processes x per-device batch vs 1 process x 2 accumulation steps).
The unlearned weights are compared bitwise: the gradient of a micro-batch mean loss, halved by accumulation or by
DDP's average, is the same float computation (a division by 2 is exact), so the math allows exact equality for
every method here. ``TOLERANCE`` lists the exceptions (none today). Methods in the driver's ``SKIP`` run no Trainer.

Run with ``make test-multiproc``: 33-71 s measured on 2 shared CPU cores (one 2-process and one 1-process launch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import hf_unlearn

pytestmark = pytest.mark.multiproc

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "multiproc_driver.py"
#: method -> max |w1 - w2| allowed between the 1- and 2-process results, where bitwise equality cannot hold.
TOLERANCE: dict[str, float] = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, script):
    driver = script("tests/multiproc_driver.py")
    root = tmp_path_factory.mktemp("multiproc")
    driver.prepare(root / "prep")
    env = {
        **os.environ,
        "HF_HOME": tempfile.mkdtemp(prefix="hf_home_"),  # no stale accelerate default config
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    args = [str(DRIVER), "--prep", str(root / "prep")]
    one = subprocess.Popen(
        [sys.executable, *args, "--out", str(root / "one")],
        env={k: v for k, v in env.items() if k != "ACCELERATE_USE_CPU"},
        cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    two = subprocess.Popen(  # --standalone: a free rendezvous port (torchrun's --master_port 0 hangs)
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args,
         "--out", str(root / "two")],
        env={**env, "ACCELERATE_USE_CPU": "1"},
        cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out_one, out_two = one.communicate(timeout=900)[0], two.communicate(timeout=900)[0]
    except subprocess.TimeoutExpired:
        for proc in (one, two):
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        raise
    assert one.returncode == 0, out_one[-4000:]
    assert two.returncode == 0, out_two[-4000:]
    s1 = json.loads((root / "one" / "summary.json").read_text())
    s2 = json.loads((root / "two" / "summary.json").read_text())
    return root, driver, s1, s2


def test_two_processes_really_ran(runs):
    _, driver, s1, s2 = runs
    assert (s1["num_processes"], s2["num_processes"]) == (1, 2)
    expected = sorted((set(hf_unlearn.list_methods()) - set(driver.SKIP)) | set(driver.CONFIG_RUNS))
    assert sorted(s1["methods"]) == sorted(s2["methods"]) == expected
    assert s2["methods"]["grad_ascent"]["config"]["gradient_accumulation_steps"] == 1
    assert s1["methods"]["grad_ascent"]["config"]["gradient_accumulation_steps"] == 2


@pytest.mark.parametrize("method", hf_unlearn.list_methods())
def test_method_matches_single_process(runs, method):
    root, driver, s1, s2 = runs
    if method in driver.SKIP:
        pytest.skip(f"{method}: {driver.SKIP[method]}")
    from safetensors.torch import load_file

    # DDP kept the two replicas identical
    ranks = [(root / "two" / f"hash_rank{r}_{method}.txt").read_text() for r in (0, 1)]
    assert ranks[0] == ranks[1] == s2["methods"][method]["hash"]
    assert s1["methods"][method]["steps"] == s2["methods"][method]["steps"]
    one = load_file(str(root / "one" / f"{method}.safetensors"))
    two = load_file(str(root / "two" / f"{method}.safetensors"))
    assert sorted(one) == sorted(two)
    # the method did something: its weights left the prepared target (retrain: the base it restarts from)
    start = load_file(str(root / "prep" / ("base" if method == "retrain" else "target") / "model.safetensors"))
    assert any(not torch.equal(one[k], start[k]) for k in start if k in one), method
    if method in TOLERANCE:
        diff = max((one[k] - two[k]).abs().max().item() for k in one)
        assert diff <= TOLERANCE[method], (method, diff)
    else:
        bad = [k for k in one if not torch.equal(one[k], two[k])]
        assert not bad, f"{method}: 1 and 2 processes differ in {bad[:3]} (max |diff| " + str(
            max((one[k] - two[k]).abs().max().item() for k in bad)
        ) + ")"


def test_retain_method_configured_through_training_arguments_matches_single_process(runs):
    """grad_diff (a retain set) built as ``GradDiffConfig(num_train_epochs=..., per_device_train_batch_size=...,
    optim="sgd", gradient_checkpointing=True, ...)``: on 2 processes the fields reach every rank's Trainer (SGD gives
    other weights than the default AdamW run, checkpointing is on) and the result equals 1 process, bitwise."""
    root, driver, s1, s2 = runs
    from safetensors.torch import load_file

    name = "grad_diff+training_args"
    for s in (s1, s2):
        run = s["methods"][name]
        assert run["config"]["optim"] == "sgd" and run["config"]["gradient_checkpointing"] is True
        assert run["gradient_checkpointing"] is True and run["steps"] == s["methods"]["grad_diff"]["steps"]
    assert s1["methods"][name]["config"]["gradient_accumulation_steps"] == 2
    assert s2["methods"][name]["config"]["gradient_accumulation_steps"] == 1
    ranks = [(root / "two" / f"hash_rank{r}_{name}.txt").read_text() for r in (0, 1)]
    assert ranks[0] == ranks[1] == s2["methods"][name]["hash"]
    one = load_file(str(root / "one" / f"{name}.safetensors"))
    two = load_file(str(root / "two" / f"{name}.safetensors"))
    assert all(torch.equal(one[k], two[k]) for k in one)
    default = load_file(str(root / "one" / "grad_diff.safetensors"))
    assert any(not torch.equal(one[k], default[k]) for k in one)  # optim="sgd" was applied, not dropped
