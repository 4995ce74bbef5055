"""Overhead of the three training-time recorders (issue #17 item 5): plain vs recorded fine-tunes, alternating.

One process, a tiny causal LM, the same recipe and data: ``--repeats`` pairs of fine-tunes, each pair a plain
Trainer run (no callbacks) and a run with all three recorders attached (EmbeddingGradientRecorder,
AmnesiacRecorder, LearningEventRecorder), in alternating order so that drift in machine load hits both. The ratio
is the median recorded wall time over the median plain wall time (``finetune``'s ``wall_time``: ``trainer.train()``
only, recording and the final flush included). Peak memory (RSS, or CUDA peak on a GPU) is reported beside it.
Also reported: the median over pairs of the within-pair ratio, and the same ratios for the process CPU time
(``time.process_time`` over the run, every thread: the training threads and the recorders' background writer). On a
loaded machine the CPU time is the steadier measure of the work the recorders add; on an idle 2-core machine, where
training already keeps both cores busy, added CPU time tends to show up as wall time.

Usage:
    python benchmarks/recorders.py [--repeats 5]          # 4 x 128 llama (the cpu-tiny shape), 128 examples, 3 epochs
    python benchmarks/recorders.py --layers 2 --hidden 64 --examples 96 --epochs 2 --repeats 7 \
        --out benchmarks/results/recorders_small
    python benchmarks/recorders.py --recorders amnesiac --out /tmp/rec_amnesiac   # one recorder alone

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

RECORDERS = ("embedding_ga", "amnesiac", "rum")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--kappa", type=float, default=0.1)
    ap.add_argument("--recorders", default=",".join(RECORDERS), help=f"comma-separated subset of {RECORDERS}")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--out", default="benchmarks/results/recorders")
    a = ap.parse_args()
    chosen = [r.strip() for r in a.recorders.split(",") if r.strip()]
    bad = [r for r in chosen if r not in RECORDERS]
    if bad or not chosen:
        raise ValueError(f"--recorders: unknown {bad}; choose from {list(RECORDERS)}")
    if a.threads:
        torch.set_num_threads(a.threads)
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
        made = {}
        if kind == "recorded":
            makers = {
                "embedding_ga": lambda: EmbeddingGradientRecorder(work / "egrads"),
                "amnesiac": lambda: AmnesiacRecorder(work / "amnesiac", kappa=a.kappa),
                "rum": lambda: LearningEventRecorder(),
            }
            made = {name: makers[name]() for name in chosen}
        cpu0 = time.process_time()
        r = finetune(
            model0, tok, data, num_epochs=a.epochs, batch_size=a.batch_size, callbacks=list(made.values()), seed=0
        )
        cpu = time.process_time() - cpu0  # the whole call (model/data setup too), every thread of the process
        out = {
            "seconds": r.wall_time,
            "cpu_seconds": cpu,
            "peak_mib": r.peak_memory_mib,
            "steps": r.steps,
            "loss": r.train_loss,
        }
        if made:
            out["record_seconds"] = {
                name: rec.seconds if name == "rum" else rec.record_seconds for name, rec in made.items()
            }
        return out

    one("plain")  # warm-up (imports, allocator, first-call costs), not counted
    for rep in range(a.repeats):
        order = ("plain", "recorded") if rep % 2 == 0 else ("recorded", "plain")
        for kind in order:
            runs[kind].append(one(kind))
            print(kind, json.dumps(runs[kind][-1]), flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    med_cpu = {k: statistics.median(r["cpu_seconds"] for r in v) for k, v in runs.items()}
    pair_ratio = [r["seconds"] / p["seconds"] for r, p in zip(runs["recorded"], runs["plain"])]
    pair_cpu_ratio = [r["cpu_seconds"] / p["cpu_seconds"] for r, p in zip(runs["recorded"], runs["plain"])]
    peak = {k: max(r["peak_mib"] for r in v) for k, v in runs.items()}
    res = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "recorders": chosen,
        "model": f"tiny llama {a.layers} x {a.hidden}, {n_params} params",
        "examples": a.examples,
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "kappa": a.kappa,
        "repeats": a.repeats,
        "median_seconds": med,
        "ratio": med["recorded"] / med["plain"],
        "ratio_median_of_pairs": statistics.median(pair_ratio),
        "median_cpu_seconds": med_cpu,
        "cpu_ratio": med_cpu["recorded"] / med_cpu["plain"],
        "cpu_ratio_median_of_pairs": statistics.median(pair_cpu_ratio),
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
        f"device {res['device']}, {res['torch_threads']} torch threads, {a.repeats} alternating pairs after one "
        f"warm-up run ({res['date']}). Recorders: {', '.join(chosen)}.",
        "",
        "| run | median wall s | median CPU s | peak memory MiB |",
        "|---|---|---|---|",
        f"| plain Trainer | {med['plain']:.2f} | {med_cpu['plain']:.2f} | {peak['plain']:.0f} |",
        f"| recorded | {med['recorded']:.2f} | {med_cpu['recorded']:.2f} | {peak['recorded']:.0f} |",
        "",
        f"Ratio recorded / plain: **{res['ratio']:.2f}x** wall (median of the within-pair ratios "
        f"{res['ratio_median_of_pairs']:.2f}x; target <= 1.15x); CPU time {res['cpu_ratio']:.2f}x (median of pairs "
        f"{res['cpu_ratio_median_of_pairs']:.2f}x).",
        "",
        "Seconds each recorder reported (median over the recorded runs; work on the training thread plus the wait for",
        "its background writer at the end of training): "
        + ", ".join(f"{k} {statistics.median(r['record_seconds'][k] for r in runs['recorded']):.2f}" for k in chosen)
        + f". 1-minute load average after the run: {res['load_average_after']:.1f} (the CPU is shared).",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
