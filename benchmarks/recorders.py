"""Overhead of the three training-time recorders (issue #17 item 5): plain vs recorded fine-tunes, alternating.

One process, a tiny causal LM, the same recipe and data: ``--repeats`` pairs of fine-tunes, each pair a plain
Trainer run (no callbacks) and a run with all three recorders attached (EmbeddingGradientRecorder,
AmnesiacRecorder, LearningEventRecorder), in alternating order so that drift in machine load hits both. The ratio
is the median recorded wall time over the median plain wall time (``finetune``'s ``wall_time``: ``trainer.train()``
only, recording and the final flush included). Peak memory (RSS, or CUDA peak on a GPU) is reported beside it.

Usage:
    python benchmarks/recorders.py [--repeats 5]          # 4 x 128 llama (the cpu-tiny shape), 128 examples, 3 epochs
    python benchmarks/recorders.py --layers 2 --hidden 64 --examples 96 --epochs 2 --repeats 7 \
        --out benchmarks/results/recorders_small

The embedding-gradient recorder records epoch 1 only (its default); the amnesiac recorder every step (kappa 0.1);
the learning-event recorder every step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hf_unlearn.methods.embedding_ga.recorder import EmbeddingGradientRecorder
from hf_unlearn.methods.partial.recorder import AmnesiacRecorder
from hf_unlearn.methods.rum.recorder import LearningEventRecorder
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.training import finetune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--kappa", type=float, default=0.1)
    ap.add_argument("--out", default="benchmarks/results/recorders")
    a = ap.parse_args()
    torch.manual_seed(0)
    data = [
        {"uid": f"u{i}", "question": f"What is item {i} of the list?", "answer": f"It is number {i * 7 % 101}."}
        for i in range(a.examples)
    ]
    texts = [f"Question: {d['question']} Answer: {d['answer']}" for d in data]
    model0, tok = tiny_causal_lm("llama", texts=texts, num_layers=a.layers, hidden_size=a.hidden, vocab_size=400)
    state = {k: v.clone() for k, v in model0.state_dict().items()}
    n_params = sum(p.numel() for p in model0.parameters())
    runs: dict[str, list[dict]] = {"plain": [], "recorded": []}
    work = Path(tempfile.mkdtemp(prefix="rec_bench_"))

    def one(kind: str) -> dict:
        model0.load_state_dict(state)
        cbs = []
        if kind == "recorded":
            cbs = [
                EmbeddingGradientRecorder(work / "egrads"),
                AmnesiacRecorder(work / "amnesiac", kappa=a.kappa),
                LearningEventRecorder(),
            ]
        r = finetune(model0, tok, data, num_epochs=a.epochs, batch_size=a.batch_size, callbacks=cbs, seed=0)
        out = {"seconds": r.wall_time, "peak_mib": r.peak_memory_mib, "steps": r.steps, "loss": r.train_loss}
        if cbs:
            out["record_seconds"] = {
                "embedding_ga": cbs[0].record_seconds,
                "amnesiac": cbs[1].record_seconds,
                "rum": cbs[2].seconds,
            }
        return out

    one("plain")  # warm-up (imports, allocator, first-call costs), not counted
    for rep in range(a.repeats):
        order = ("plain", "recorded") if rep % 2 == 0 else ("recorded", "plain")
        for kind in order:
            runs[kind].append(one(kind))
            print(kind, json.dumps(runs[kind][-1]), flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    peak = {k: max(r["peak_mib"] for r in v) for k, v in runs.items()}
    res = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": f"tiny llama {a.layers} x {a.hidden}, {n_params} params",
        "examples": a.examples,
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "kappa": a.kappa,
        "repeats": a.repeats,
        "median_seconds": med,
        "ratio": med["recorded"] / med["plain"],
        "peak_mib": peak,
        "runs": runs,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_after": os.getloadavg()[0],
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = [
        "# Recorder overhead (benchmarks/recorders.py)",
        "",
        f"{res['model']}, {a.examples} examples, {a.epochs} epochs, batch {a.batch_size}, kappa {a.kappa}, "
        f"device {res['device']}, {a.repeats} alternating pairs after one warm-up run ({res['date']}).",
        "",
        "| run | median wall s | peak memory MiB |",
        "|---|---|---|",
        f"| plain Trainer | {med['plain']:.2f} | {peak['plain']:.0f} |",
        f"| all three recorders | {med['recorded']:.2f} | {peak['recorded']:.0f} |",
        "",
        f"Ratio recorded / plain: **{res['ratio']:.2f}x** (target <= 1.15x).",
        "",
        "Seconds each recorder reported (median over the recorded runs; work on the training thread plus the wait for",
        "its background writer at the end of training): "
        + ", ".join(
            f"{k} {statistics.median(r['record_seconds'][k] for r in runs['recorded']):.2f}"
            for k in ("embedding_ga", "amnesiac", "rum")
        )
        + f". 1-minute load average after the run: {res['load_average_after']:.1f} (the CPU is shared).",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
