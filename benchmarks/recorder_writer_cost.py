"""CPU cost of the amnesiac recorder's per-step work on its background writer thread, torch path vs numpy path.

On CPU, AmnesiacRecorder hands every step's flat update to a writer thread that selects each tensor's top-kappa
entries and writes one safetensors file. This script measures, for the update of benchmarks/recorders.py's model
(tiny Llama 4 x 128, about 1.1M trainable entries, kappa 0.1):

1. whether torch ops on a second Python thread start a second OpenMP team (the OS threads the process gains, beyond
   the new thread itself, while one parallel torch op runs on a new thread, against a numpy op);
2. the CPU time (``time.thread_time``, so other processes' load does not count) of one step's selection with the
   torch path (``AmnesiacRecorder._select``) and the numpy path (``_select_host``), and of writing the step with
   ``safetensors.torch`` and ``safetensors.numpy`` (the same bytes), alternated, medians over ``--repeats``.

Usage:
    python benchmarks/recorder_writer_cost.py [--repeats 30] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch

from hf_unlearn.methods.partial.masks import trainable_parameters
from hf_unlearn.methods.partial.recorder import AmnesiacRecorder
from hf_unlearn.models import tiny_causal_lm


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else -1


def _threads_started_by(fn) -> int:
    """OS threads the process gained while ``fn`` ran once on a new Python thread, beyond that thread itself."""
    before = _os_threads()
    seen = []
    t = threading.Thread(target=lambda: (fn(), seen.append(_os_threads())))
    t.start()
    t.join()
    return seen[0] - before - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--kappa", type=float, default=0.1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    texts = [f"Question: What is item {i} of the list? Answer: It is number {i * 7 % 101}." for i in range(128)]
    model, _ = tiny_causal_lm("llama", texts=texts, num_layers=4, hidden_size=128, vocab_size=400)  # recorders.py's
    work = Path(tempfile.mkdtemp(prefix="rec_writer_"))
    rec = AmnesiacRecorder(work / "rec", kappa=a.kappa)
    rec._params = trainable_parameters(model)
    numel = sum(p.numel() for p in rec._params.values())
    delta = torch.randn(numel) * 1e-3
    x = torch.randn(1_000_000)
    x.abs().gt(0.5).nonzero()  # the main thread's own OpenMP team exists before counting
    threads = {  # numpy first: a finished torch thread's OpenMP worker may linger and skew the next count
        "numpy_op_on_new_thread": _threads_started_by(lambda: np.flatnonzero(np.abs(x.numpy()) > 0.5)),
        "torch_op_on_new_thread": _threads_started_by(lambda: x.abs().gt(0.5).nonzero()),
    }
    pt, _ = rec._select(delta)
    host = rec._select_host(delta)
    if host is None:
        raise RuntimeError("the numpy path did not apply")
    arrays, _ = host
    for key, ref in pt.items():  # the two paths record the same bits
        if not torch.equal(torch.from_numpy(arrays[key]).view(torch.uint8), ref.contiguous().view(torch.uint8)):
            raise RuntimeError(f"the numpy path differs from the torch path at {key}")
    fns = {
        "select_torch": lambda: rec._select(delta),
        "select_numpy": lambda: rec._select_host(delta),
        "save_torch": lambda: save_torch(pt, str(work / "pt.safetensors")),
        "save_numpy": lambda: save_numpy(arrays, str(work / "np.safetensors")),
    }
    for fn in fns.values():
        fn()
    cpu = {k: [] for k in fns}
    for _ in range(a.repeats):
        for k, fn in fns.items():
            c = time.thread_time()
            fn()
            cpu[k].append(time.thread_time() - c)
    med = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    res = {
        "benchmark": "recorder_writer_cost",
        "trainable_entries": numel,
        "kappa": a.kappa,
        "torch_threads": torch.get_num_threads(),
        "extra_os_threads_started": threads,  # beyond the new thread itself: its own OpenMP workers
        "cpu_ms_per_step_median": {k: round(v, 3) for k, v in med.items()},
        "writer_cpu_ms_per_step": {
            "torch": round(med["select_torch"] + med["save_torch"], 3),
            "numpy": round(med["select_numpy"] + med["save_numpy"], 3),
        },
        "same_file_bytes": (work / "pt.safetensors").read_bytes() == (work / "np.safetensors").read_bytes(),
        "repeats": a.repeats,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg()[0],
    }
    line = json.dumps(res)
    print(line)
    if a.out:
        Path(a.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
