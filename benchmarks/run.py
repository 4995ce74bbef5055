"""Quality and cost of every registered method, side by side (issue 9; protocol of shared/BENCHMARK.md).

    python benchmarks/run.py --setting cpu-tiny            # part of `make bench`
    python benchmarks/run.py --setting test --methods npo,ssd --splits forget10
    python benchmarks/run.py --setting gpu-smollm2         # on a GPU machine (SmolLM2-135M LoRA, offline)

The target is fine-tuned once on ``full`` with every recorder attached; each forget split (forget01/05/10 by default)
gets its gold model (fine-tuned on the matching retain split) and every method's unlearning run, then the full
TOFU-style suite. Writes into benchmarks/results/ (``--out``):

    <setting>.json           everything: NLL rows, timings, per-method details, the evaluation (aggregates; per-example
                             records with --keep-per-item), the costs
    <setting>.md             per forget split: the full suite (forget quality, model utility, ROUGE, MIA, ...) and
                             NLL / time rows; then the costs: per method and split, unlearning wall time relative to
                             retraining and to one forward+backward pass over the forget set (both measured in this
                             process), peak memory, tokens processed; training-time recording overhead (the target
                             fine-tune with the recorders vs the same recipe on a plain Trainer) and the storage of
                             what was recorded; S3T deletion latency and ahead-of-time training
    <setting>/eval/<split>/  one JSON per model, report.md and report.png (forget quality vs model utility)
    <setting>/costs.png      unlearning time / retraining time per method and split (log)
    <setting>/scaling_forget.png   unlearning wall time vs forget-set size (the three splits)

All numbers come from one process, so ratios are comparable even on a noisy machine. Cost against training-set size
is measured by benchmarks/scaling.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

SPLITS = ["forget01", "forget05", "forget10"]
REFERENCE_ROWS = ("target", "gold (retrain)")


def recorded_bytes(recorder) -> int:
    """Storage of what a training-time recorder kept: its files on disk, else its pickled in-memory state."""
    if hasattr(recorder, "storage_bytes"):
        return int(recorder.storage_bytes())
    folder = getattr(recorder, "output_dir", None)
    if folder is not None and Path(folder).is_dir():
        return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    state = {k: v for k, v in vars(recorder).items() if not k.startswith("_")}
    return len(pickle.dumps({k: dict(v) if isinstance(v, dict) else v for k, v in state.items()}))


def compute_costs(report: dict, fb_seconds: dict[str, float], storage: dict[str, int]) -> dict:
    """The cost accounting of a :func:`hf_unlearn.pipeline.run_protocol` report, per forget split."""
    ft = report["finetune"]
    out: dict = {
        "recording_overhead": ft["target_seconds"] / ft["plain_seconds"] if ft["plain_seconds"] else float("nan"),
        "recorded_bytes": storage,
        "target_finetune_s": ft["target_seconds"],
        "plain_finetune_s": ft["plain_seconds"],
        "splits": {},
    }
    for split, entry in report["splits"].items():
        rows = entry["rows"]
        retrain_s = rows["gold (retrain)"]["unlearn_seconds"]
        fb = fb_seconds[split]
        per: dict = {}
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
        s3t = entry["details"].get("s3t") or {}
        if "s3t_training_seconds" in s3t and "s3t" in per:
            per["s3t"]["training_s"] = s3t["s3t_training_seconds"]
        if "delete_seconds" in s3t and "s3t" in per:
            per["s3t"]["delete_s"] = s3t["delete_seconds"]  # the deletion itself, without the dispatcher
        out["splits"][split] = {"retrain_s": retrain_s, "forward_backward_s": fb, "methods": per}
    return out


def costs_markdown(report: dict) -> str:
    costs, ft = report["costs"], report["finetune"]
    storage = costs["recorded_bytes"]
    lines = [
        f"Target fine-tune with every recorder attached: **{costs['recording_overhead']:.2f}x** the wall time of the "
        f"same recipe on a plain Trainer ({ft['target_seconds']:.1f} s vs {ft['plain_seconds']:.1f} s, "
        f"{ft['n_full']} examples). Recorded at training time: "
        + (", ".join(f"{m} {b / 2**20:.2f} MiB" for m, b in sorted(storage.items())) or "nothing")
        + ".",
        "",
    ]
    for split, c in costs["splits"].items():
        entry = report["splits"][split]
        lines += [
            f"### {split} ({entry['n_forget']} forget examples, {entry['n_retain']} retain)",
            "",
            f"Retraining (the gold fine-tune): {c['retrain_s']:.1f} s. One forward+backward pass over the forget set: "
            f"{c['forward_backward_s'] * 1e3:.0f} ms.",
            "",
            "| method | unlearn (s) | vs retrain | vs 1 fwd+bwd over F | peak RSS (MiB) | tokens |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in c["methods"].items():
            lines.append(
                f"| {name} | {m['seconds']:.3f} | {m['vs_retrain']:.4f} | {m['vs_forward_backward']:.1f} | "
                f"{m['peak_rss_mib']} | {m['tokens']} |"
            )
        if "training_s" in c["methods"].get("s3t", {}):
            t, d = c["methods"]["s3t"]["training_s"], c["methods"]["s3t"].get("delete_s")
            latency = f" (the deletion itself: {d * 1e3:.2f} ms; the rest is the dispatcher)" if d is not None else ""
            lines += [
                "",
                f"S3T: the deletion above is bookkeeping (deactivating adapters){latency}; its system was trained "
                f"ahead of time in {t:.1f} s ({t / c['retrain_s']:.2f}x one retraining), once for every request.",
            ]
        lines.append("")
    return "\n".join(lines)


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


def line_colors() -> list:
    """Twenty distinct colours (tab20, dark shades first): one per method line, never two alike."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    return list(tab20[0::2]) + list(tab20[1::2])


def plot_scaling_forget(report: dict, path: Path) -> None:
    """Unlearning wall time (log) vs forget-set size, one line per method, retraining dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    splits = report["splits"]
    sizes = [splits[s]["n_forget"] for s in splits]
    names = sorted({n for s in splits.values() for n in s["rows"] if n not in (*REFERENCE_ROWS, "retrain")})
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_prop_cycle(color=line_colors())
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


def drop_per_item(report: dict) -> dict:
    """The report without the evaluation's per-example records (generations, per-item scores): the aggregates stay.

    They are most of the bytes (about 180 KB per model and split on cpu-tiny); ``--keep-per-item`` keeps them.
    """
    import copy

    report = copy.deepcopy(report)  # the caller's report keeps them (the S3T study scores against the gold's)
    for entry in report["splits"].values():
        for result in (entry.get("evaluation") or {}).values():
            for split_result in (result.get("splits") or {}).values():
                split_result.pop("per_item", None)
    return report


def write_outputs(report: dict, root: Path, keep_per_item: bool = False) -> Path:
    """``<root>/<setting>.json`` and ``.md``, and the plots and per-model results under ``<root>/<setting>/``."""
    from hf_unlearn.evaluation.report import markdown_report, write_report
    from hf_unlearn.pipeline import markdown_table

    if not keep_per_item:
        report = drop_per_item(report)
    name = report["setting"]["name"]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    plot_costs(report["costs"], folder / "costs.png")
    plot_scaling_forget(report, folder / "scaling_forget.png")
    s, env = report["setting"], report.get("environment", {})
    start = (
        f"pretrained {s['pretrain_epochs']:g} epochs on {s['pretrain_authors']} other authors"
        if s.get("pretrain_epochs")
        else "from scratch"
    )
    model = s["model_name"] or f"tiny {s['arch']} {s['num_layers']} x {s['hidden_size']} ({start})"
    md = [
        f"# Benchmark results: `{name}`",
        "",
        f"Written by `benchmarks/run.py --setting {name}`; read in BENCHMARKS.md. Model: {model}; "
        f"{s['n_authors']} fictitious authors x {s['qa_per_author']} QA ({report['finetune']['n_full']} examples in "
        f"`full`), fine-tuned {s['ft_epochs']:g} epochs at lr {s['ft_lr']:g}. {env.get('device', '?')}, "
        f"{env.get('threads', '?')} torch thread(s), torch {env.get('torch', '?')}; one process, one seed.",
        "",
        f"Plots: `{name}/eval/<split>/report.png` (forget quality vs model utility), `{name}/costs.png`, "
        f"`{name}/scaling_forget.png`.",
        "",
    ]
    for split, entry in report["splits"].items():
        md.append(f"## {split} ({entry['n_forget']} forget examples)\n")
        if entry.get("same_forget_set_as"):
            md.append(f"Same forget set as {entry['same_forget_set_as']} at this benchmark size: the same results.\n")
        if "evaluation" in entry:
            named = {n: {**r, "name": n} for n, r in entry["evaluation"].items()}
            write_report(named, folder / "eval" / split, stem="report")
            md.append(markdown_report(named) + "\n")
        md.append("Answer NLL (token mean) and unlearning wall time:\n")
        md.append(markdown_table(entry))
    md += ["## Cost", "", costs_markdown(report)]
    if "s3t_study" in report:
        sys.path.insert(0, str(Path(__file__).parent))
        from s3t_study import study_markdown

        md += ["", study_markdown(report["s3t_study"])]
    path = root / f"{name}.md"
    path.write_text("\n".join(md))
    return path


def main(argv: list[str] | None = None) -> int:
    from hf_unlearn.pipeline import SETTINGS, forward_backward_seconds, run_protocol

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="cpu-tiny", choices=sorted(SETTINGS))
    p.add_argument("--methods", default=None, help="Comma-separated (default: every registered method).")
    p.add_argument("--splits", default=",".join(SPLITS), help="Comma-separated forget splits.")
    p.add_argument("--out", default=None, help="Results root (default benchmarks/results).")
    p.add_argument("--no-eval", action="store_true", help="Skip the full metric suite (NLL rows only).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest for tiny models).")
    p.add_argument("--from-json", default=None, help="Only rewrite the markdown and plots of a saved <setting>.json.")
    p.add_argument("--keep-per-item", action="store_true", help="Keep per-example evaluation records in the JSON.")
    p.add_argument(
        "--calibration-variants",
        action="store_true",
        help="Also run each calibrated method with calibrate=False (rows '<method>-nocal'; docs/calibration.md).",
    )
    p.add_argument(
        "--s3t-study",
        action="store_true",
        help="Also compare S3T with the plain LoRA fine-tune (m=1, m>1, deletions, retrain): benchmarks/s3t_study.py",
    )
    p.add_argument("--s3t-shards", type=int, default=2, help="m of the multi-shard system of --s3t-study.")
    p.add_argument(
        "--s3t-retrain-split", default=None, help="Split deleted before retrain() (default: largest; 'none': skip)."
    )
    p.add_argument(
        "--no-price-recording",
        action="store_true",
        help="Skip the second (recorder-free) target fine-tune that prices the recorders' overhead.",
    )
    args = p.parse_args(argv)
    root = Path(args.out or Path(__file__).parent / "results")
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        print(f"wrote {write_outputs(report, root, args.keep_per_item)}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = args.splits.split(",")
    setting = SETTINGS[args.setting]
    if args.calibration_variants:
        setting = dataclasses.replace(setting, calibration_variants=True)
    report = run_protocol(
        setting,
        methods=args.methods.split(",") if args.methods else None,
        out_dir=None,
        progress=True,
        evaluate=not args.no_eval,
        price_recording=not args.no_price_recording,
        forget_splits=splits,
        keep_models=False,  # one split's unlearned models in memory at a time (a real model: ~0.5 GB a copy)
    )
    ctx = report.pop("_context")
    for key in ("_results", "_results_per_split", "rows", "details", "evaluation"):
        report.pop(key, None)  # the per-split entries hold them
    fb = {}
    for split in splits:
        ctx.use_split(split)
        fb[split] = forward_backward_seconds(ctx.target, ctx.tokenizer, ctx.forget, ctx.setting.max_length, reps=3)
    storage = {m: sum(recorded_bytes(r) for r in recs) for m, recs in ctx.recorders.items()}
    report["costs"] = compute_costs(report, fb, storage)
    report["environment"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
    }
    if args.s3t_study:
        # the protocol's results are written first: a study that fails or is killed does not lose them
        print(f"wrote {write_outputs(report, root, args.keep_per_item)} (the S3T study follows)", flush=True)
        sys.path.insert(0, str(Path(__file__).parent))
        from s3t_study import run_study

        try:
            report["s3t_study"] = run_study(
                {**report, "_context": ctx}, n_shards=args.s3t_shards, retrain_split=args.s3t_retrain_split
            )
        except Exception as err:  # the protocol's results are still written
            import traceback

            traceback.print_exc()
            report["s3t_study_error"] = f"{type(err).__name__}: {err}"
    path = write_outputs(report, root, args.keep_per_item)
    print(path.read_text())
    print(f"results in {path} and {root / args.setting}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
