"""Quality and cost of every registered method, side by side (issue 9; protocol of shared/BENCHMARK.md).

    python benchmarks/run.py --setting cpu-tiny            # part of `make bench`
    python benchmarks/run.py --setting test --methods npo,ssd --splits forget10
    python benchmarks/run.py --setting gpu-smollm2         # on a GPU machine (SmolLM2-135M LoRA, offline)

The target is fine-tuned once on ``full`` with every recorder attached; each forget split (forget01/05/10 by default)
gets its gold model (fine-tuned on the matching retain split) and every method's unlearning run, then the full
TOFU-style suite. Writes into benchmarks/results/<setting>/:

    protocol.json            everything: NLL rows, timings, per-method details, the evaluation, the costs
    protocol.md              NLL / time rows per forget split
    report.md                the full suite per forget split (forget quality, model utility, ROUGE, MIA, ...)
    eval/<split>/            one JSON per model, report.md and report.png (forget quality vs model utility)
    costs.md, costs.json     per method and split: unlearning wall time relative to retraining and to one
                             forward+backward pass over the forget set (both measured in this process), peak
                             memory, tokens processed; training-time recording overhead (tokens/s of the target
                             fine-tune with the recorders vs the same recipe on a plain Trainer) and the storage
                             of what was recorded; S3T deletion latency and ahead-of-time training
    costs.png                unlearning time / retraining time per method and split (log)
    scaling_forget.png       unlearning wall time vs forget-set size (the three splits)

All numbers come from one process, so ratios are comparable even on a noisy machine. Cost against training-set size
is measured by benchmarks/scaling.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

SPLITS = ["forget01", "forget05", "forget10"]
REFERENCE_ROWS = ("target", "gold (retrain)")


def forward_backward_seconds(model, tokenizer, ds, max_length: int, batch_size: int = 8, reps: int = 3) -> float:
    """Median wall time of one forward+backward pass over ``ds`` (the unit unlearning costs are expressed in)."""
    import copy

    from hf_unlearn.data import collator_for, encode_examples
    from hf_unlearn.training.losses import batch_nll
    from hf_unlearn.training.trainer import model_inputs

    m = copy.deepcopy(model).train()
    rows = encode_examples(ds, tokenizer, max_length=max_length)
    coll = collator_for(tokenizer)
    batches = [coll(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    device = next(m.parameters()).device
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if k != "uid"}
            batch_nll(m(**model_inputs(batch)).logits, batch["labels"]).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        m.zero_grad(set_to_none=True)
    return statistics.median(times)


def recorded_bytes(recorder) -> int:
    """Storage of what a training-time recorder kept: its files on disk, else its pickled in-memory state."""
    if hasattr(recorder, "storage_bytes"):
        return int(recorder.storage_bytes())
    folder = getattr(recorder, "output_dir", None)
    if folder is not None and Path(folder).is_dir():
        return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    state = {k: v for k, v in vars(recorder).items() if not k.startswith("_")}
    return len(pickle.dumps({k: dict(v) if isinstance(v, dict) else v for k, v in state.items()}))


def cost_tables(report: dict, fb_seconds: dict[str, float], storage: dict[str, int]) -> tuple[str, dict]:
    """Markdown and JSON of the cost accounting, per forget split."""
    ft = report["finetune"]
    overhead = ft["target_seconds"] / ft["plain_seconds"] if ft["plain_seconds"] else float("nan")
    out: dict = {
        "recording_overhead": overhead,
        "recorded_bytes": storage,
        "target_finetune_s": ft["target_seconds"],
        "plain_finetune_s": ft["plain_seconds"],
        "splits": {},
    }
    lines = [
        "# Cost per method",
        "",
        f"Target fine-tune with every recorder attached: **{overhead:.2f}x** the wall time of the same recipe on a "
        f"plain Trainer ({ft['target_seconds']:.1f} s vs {ft['plain_seconds']:.1f} s, {ft['n_full']} examples).",
        "",
        "Recorded at training time: "
        + (", ".join(f"{m} {b / 2**20:.2f} MiB" for m, b in sorted(storage.items())) or "nothing")
        + ".",
        "",
    ]
    for split, entry in report["splits"].items():
        rows = entry["rows"]
        retrain_s = rows["gold (retrain)"]["unlearn_seconds"]
        fb = fb_seconds[split]
        per: dict = {}
        lines += [
            f"## {split} ({entry['n_forget']} forget examples, {entry['n_retain']} retain)",
            "",
            f"Retraining (the gold fine-tune): {retrain_s:.1f} s. One forward+backward pass over the forget set: "
            f"{fb * 1e3:.0f} ms.",
            "",
            "| method | unlearn (s) | vs retrain | vs 1 fwd+bwd over F | peak RSS (MiB) | tokens |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            t = r.get("unlearn_seconds")
            if t is None or name in REFERENCE_ROWS:
                continue
            per[name] = {
                "seconds": t,
                "vs_retrain": t / retrain_s,
                "vs_forward_backward": t / fb,
                "peak_rss_mib": r.get("peak_rss_mib"),
                "tokens": r.get("tokens"),
            }
            lines.append(
                f"| {name} | {t:.3f} | {t / retrain_s:.4f} | {t / fb:.1f} | {r.get('peak_rss_mib')} | "
                f"{r.get('tokens')} |"
            )
        s3t = entry["details"].get("s3t")
        if s3t and "s3t_training_seconds" in s3t:
            per.setdefault("s3t", {})["training_s"] = s3t["s3t_training_seconds"]
            lines += [
                "",
                f"S3T: the deletion above is pure bookkeeping (deactivating adapters); its system was trained ahead "
                f"of time in {s3t['s3t_training_seconds']:.1f} s ({s3t['s3t_training_seconds'] / retrain_s:.2f}x "
                "one retraining), once for every request.",
            ]
        lines.append("")
        out["splits"][split] = {"retrain_s": retrain_s, "forward_backward_s": fb, "methods": per}
    return "\n".join(lines), out


def plot_costs(costs: dict, path: Path) -> None:
    """Grouped horizontal bars: unlearning time / retraining time per method, one bar per forget split."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    splits = list(costs["splits"])
    names = sorted({n for s in splits for n in costs["splits"][s]["methods"]})
    fig = Figure(figsize=(7.5, 0.5 * len(names) * max(1, len(splits) / 2) + 1.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(len(splits), 1)
    for k, split in enumerate(splits):
        meth = costs["splits"][split]["methods"]
        ys = [i + k * height for i in range(len(names))]
        ax.barh(ys, [meth.get(n, {}).get("vs_retrain", float("nan")) for n in names], height=height, label=split)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))])
    ax.set_yticklabels(names)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("unlearning wall time / retraining wall time (log; < 1 is cheaper than retraining)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def plot_scaling_forget(report: dict, path: Path) -> None:
    """Unlearning wall time (log) vs forget-set size, one line per method, retraining dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    splits = report["splits"]
    sizes = [splits[s]["n_forget"] for s in splits]
    names = sorted({n for s in splits.values() for n in s["rows"] if n not in REFERENCE_ROWS})
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for n in names:
        ax.plot(sizes, [splits[s]["rows"].get(n, {}).get("unlearn_seconds") or float("nan") for s in splits],
                marker="o", label=n)  # fmt: skip
    ax.plot(sizes, [splits[s]["rows"]["gold (retrain)"]["unlearn_seconds"] for s in splits], "k--", label="retrain")
    ax.set_yscale("log")
    ax.set_xlabel("forget-set size (examples)")
    ax.set_ylabel("unlearning wall time (s, log)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    from hf_unlearn.evaluation.report import markdown_report, write_report
    from hf_unlearn.pipeline import SETTINGS, markdown_table, run_protocol

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="cpu-tiny", choices=sorted(SETTINGS))
    p.add_argument("--methods", default=None, help="Comma-separated (default: every registered method).")
    p.add_argument("--splits", default=",".join(SPLITS), help="Comma-separated forget splits.")
    p.add_argument("--out", default=None, help="Output folder (default benchmarks/results/<setting>).")
    p.add_argument("--no-eval", action="store_true", help="Skip the full metric suite (NLL rows only).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest for tiny models).")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or Path(__file__).parent / "results" / args.setting)
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",") if args.methods else None
    splits = args.splits.split(",")
    report = run_protocol(
        args.setting,
        methods=methods,
        out_dir=None,
        progress=True,
        evaluate=not args.no_eval,
        price_recording=True,
        forget_splits=splits,
    )
    ctx = report.pop("_context")
    for key in ("_results", "_results_per_split", "rows", "details", "evaluation"):
        report.pop(key, None)  # the per-split entries hold them
    fb = {}
    for split in splits:
        ctx.use_split(split)
        fb[split] = forward_backward_seconds(ctx.target, ctx.tokenizer, ctx.forget, ctx.setting.max_length)
    storage = {m: sum(recorded_bytes(r) for r in recs) for m, recs in ctx.recorders.items()}
    costs_md, costs = cost_tables(report, fb, storage)
    report["costs"] = costs
    report["environment"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
    }
    (out / "protocol.json").write_text(json.dumps(report, indent=2, default=str))
    per_split = report["splits"].items()
    sections = [f"## {s} ({e['n_forget']} forget examples)\n\n{markdown_table(e)}" for s, e in per_split]
    (out / "protocol.md").write_text("\n".join(sections))
    (out / "costs.md").write_text(costs_md)
    (out / "costs.json").write_text(json.dumps(costs, indent=2))
    plot_costs(costs, out / "costs.png")
    plot_scaling_forget(report, out / "scaling_forget.png")
    sections = []
    for split, entry in report["splits"].items():
        if "evaluation" not in entry:
            continue
        named = {name: {**r, "name": name} for name, r in entry["evaluation"].items()}
        write_report(named, out / "eval" / split, stem="report")
        sections.append(f"## {split} ({entry['n_forget']} forget examples)\n\n{markdown_report(named)}\n")
    if sections:
        (out / "report.md").write_text("# Full evaluation suite per forget split\n\n" + "\n".join(sections))
        print("\n".join(sections))
    print(costs_md)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
