"""Unlearning cost against training-set size, every method, retraining as the reference (issue 9, item 4).

For each training-set size (number of fictitious authors; ``full`` grows with it) the protocol of
``hf_unlearn.pipeline`` runs without the evaluation suite: fine-tune the target (with every recorder) and the same
recipe on a plain Trainer, fine-tune the gold model on the retain split (= retraining), and unlearn ``forget01``
(one author, 20 QA, whatever the size: the forget set stays fixed while D grows) with every method. Cost against
forget-set size comes from ``benchmarks/run.py`` (forget01/05/10 in one run, ``scaling_forget.png``).

Writes ``benchmarks/results/<setting>/scaling_train.json``, ``.md`` and ``.png``.

Usage:
    python benchmarks/scaling.py                          # cpu-tiny recipe, 10/20/40/80 authors (part of make bench)
    python benchmarks/scaling.py --sizes 5,10 --methods ssd,npo --setting test
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def _sibling(name: str):
    """benchmarks/<name>.py as a module (by path: a bare ``import run`` could pick up another ``run``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"hf_unlearn_bench_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_run = _sibling("run")
REFERENCE_ROWS = _run.REFERENCE_ROWS


def measure_size(setting, n_authors: int, methods: list[str] | None, forget_split: str) -> dict:
    """One point of the curve: the protocol at ``n_authors`` without evaluation, costs per method."""
    from hf_unlearn.pipeline import forward_backward_seconds, run_protocol

    s = replace(setting, name=f"{setting.name}-n{n_authors}", n_authors=n_authors, forget_split=forget_split)
    report = run_protocol(s, methods=methods, progress=False, evaluate=False, price_recording=True)
    ctx = report["_context"]
    fb = forward_backward_seconds(ctx.target, ctx.tokenizer, ctx.forget, s.max_length, reps=3)
    rows = report["rows"]
    retrain = rows["gold (retrain)"]["unlearn_seconds"]
    point = {
        "n_authors": n_authors,
        "n_full": report["finetune"]["n_full"],
        "n_forget": len(ctx.forget),
        "retrain_s": retrain,
        "target_finetune_s": report["finetune"]["target_seconds"],
        "plain_finetune_s": report["finetune"]["plain_seconds"],
        "forward_backward_s": fb,
        "methods": {},
    }
    for name, r in rows.items():
        if name in REFERENCE_ROWS or r.get("unlearn_seconds") is None:
            continue
        point["methods"][name] = {
            "seconds": r["unlearn_seconds"],
            "vs_retrain": r["unlearn_seconds"] / retrain,
            "vs_forward_backward": r["unlearn_seconds"] / fb,
            "forget_nll": r["forget_nll"],
            "retain_nll": r["retain_nll"],
        }
    s3t = report["details"].get("s3t") or {}
    if "s3t_training_seconds" in s3t:
        point["methods"]["s3t"]["training_s"] = s3t["s3t_training_seconds"]
    return point


def _secs(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 0.1 else f"{x:.2f} s"


def markdown(result: dict) -> str:
    pts = result["points"]
    names = sorted({n for p in pts for n in p["methods"] if n != "retrain"})  # retrain is the reference row
    st = result["setting"]
    lines = [
        "# Unlearning cost vs training-set size",
        "",
        f"Setting `{st['name']}` recipe ({st['ft_epochs']:g} epochs, tiny Llama {st['num_layers']} x "
        f"{st['hidden_size']}), forget set `{result['forget_split']}` "
        f"({pts[0]['n_forget']} examples, fixed) while the training set grows. Wall time; in brackets the ratio "
        "to retraining at the same size. One process, CPU, "
        f"{result['environment']['threads']} torch thread(s).",
        "",
        "| method | " + " | ".join(f"D = {p['n_full']}" for p in pts) + " |",
        "|---|" + "---|" * len(pts),
        "| retrain (gold fine-tune) | " + " | ".join(_secs(p["retrain_s"]) for p in pts) + " |",
        "| 1 fwd+bwd over F | " + " | ".join(_secs(p["forward_backward_s"]) for p in pts) + " |",
        "| target fine-tune with recorders / plain | "
        + " | ".join(f"{p['target_finetune_s'] / p['plain_finetune_s']:.2f}x" for p in pts)
        + " |",
    ]
    for n in names:
        cells = []
        for p in pts:
            m = p["methods"].get(n)
            cells.append("-" if m is None else f"{_secs(m['seconds'])} ({m['vs_retrain']:.3g})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if any("training_s" in p["methods"].get("s3t", {}) for p in pts):
        lines.append(
            "| s3t training (ahead of time) | "
            + " | ".join(_secs(p["methods"].get("s3t", {}).get("training_s", float("nan"))) for p in pts)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = result["points"]
    xs = [p["n_full"] for p in pts]
    names = sorted({n for p in pts for n in p["methods"] if n != "retrain"})  # retrain: the dashed reference
    fig = Figure(figsize=(11, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for a in (ax, ax2):
        a.set_prop_cycle(color=_run.line_colors())
    for n in names:
        ys = [p["methods"].get(n, {}).get("seconds", float("nan")) for p in pts]
        rs = [p["methods"].get(n, {}).get("vs_retrain", float("nan")) for p in pts]
        ax.plot(xs, ys, marker="o", label=n)
        ax2.plot(xs, rs, marker="o", label=n)
    ax.plot(xs, [p["retrain_s"] for p in pts], "k--", label="retrain")
    for a, ylabel in ((ax, "unlearning wall time (s)"), (ax2, "unlearning time / retraining time")):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("training-set size |D| (examples)")
        a.set_ylabel(ylabel)
        a.grid(True, alpha=0.3)
    ax2.axhline(1.0, color="grey", ls="--", lw=1)
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"fixed forget set ({pts[0]['n_forget']} examples), growing training set")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> dict:
    from hf_unlearn.pipeline import SETTINGS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="cpu-tiny", choices=sorted(SETTINGS))
    p.add_argument("--sizes", default="10,20,40,80", help="Comma-separated numbers of authors.")
    p.add_argument("--methods", default=None, help="Comma-separated (default: every registered method).")
    p.add_argument("--forget-split", default="forget01")
    p.add_argument("--epochs", type=float, default=None, help="Fine-tuning epochs (default: the setting's).")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="Results root (default benchmarks/results); writes <root>/<setting>/.")
    p.add_argument("--from-json", default=None, help="Rewrite the markdown and plot of a saved scaling_train.json.")
    args = p.parse_args(argv)
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        write_outputs(result, Path(args.from_json).parent)
        return result
    if args.threads:
        torch.set_num_threads(args.threads)
    setting = SETTINGS[args.setting]
    if args.epochs is not None:
        setting = replace(setting, ft_epochs=args.epochs)
    methods = args.methods.split(",") if args.methods else None
    points = []
    for n in [int(x) for x in args.sizes.split(",")]:
        points.append(measure_size(setting, n, methods, args.forget_split))
        print(json.dumps({k: v for k, v in points[-1].items() if k != "methods"}), flush=True)
    result = {
        "setting": {k: v for k, v in vars(setting).items() if k != "method_overrides"},
        "forget_split": args.forget_split,
        "points": points,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
    }
    out = Path(args.out or Path(__file__).parent / "results") / args.setting
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling_train.json").write_text(json.dumps(result, indent=2, default=str))
    write_outputs(result, out)
    print(markdown(result))
    return result


def write_outputs(result: dict, folder: Path) -> None:
    """``scaling_train.md`` and ``scaling_train.png`` from the result (the JSON alone)."""
    (folder / "scaling_train.md").write_text(markdown(result))
    plot(result, folder / "scaling_train.png")


if __name__ == "__main__":
    main()
