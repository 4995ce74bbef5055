"""Print the compact quality tables of BENCHMARKS.md from a committed ``benchmarks/run.py`` result.

Every row comes from ``<setting>.json`` alone: forget quality, model utility and the Min-K privleak from the
evaluation suite, the answer NLLs and the unlearning wall time from the protocol's rows, and the cost relative to
the split's gold retraining. Methods are sorted by forget quality (the gold retrain and the target come first).

Usage::

    python benchmarks/summary.py benchmarks/results/cpu-smollm2.json --split forget10
    python benchmarks/summary.py benchmarks/results/cpu-tiny.json --split forget10 --s3t-study

A method that failed or could not serve shows its error instead of numbers; nothing is dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if x != 0 and abs(x) < 10 ** (-nd):
            return f"{x:.0e}"
        return f"{x:.{nd}f}"
    return str(x)


def quality_table(report: dict[str, Any], split: str) -> str:
    """The compact table of one forget split (see the module docstring)."""
    entry = report["splits"][split]
    ev = entry.get("evaluation") or {}
    rows = entry["rows"]
    retrain_s = rows.get("gold (retrain)", {}).get("unlearn_seconds")
    names = [m for m in rows if m not in ("target", "gold (retrain)", "retrain")]

    def fq(m: str) -> float:
        v = (ev.get(m) or {}).get("forget_quality")
        return -1.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v

    names.sort(key=fq, reverse=True)
    lines = [
        "| method | forget quality | model utility | privleak (Min-K) | forget NLL | retain NLL | holdout NLL "
        "| unlearn time (s) | / retraining |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, key, ev_key in [
        ("retrain (gold)", "gold (retrain)", "gold"),
        ("target (no unlearning)", "target", "target"),
    ]:
        r, e = rows[key], ev.get(ev_key) or {}
        lines.append(_line(label, r, e, retrain_s, gold=key == "gold (retrain)"))
    for m in names:
        lines.append(_line(m, rows[m], ev.get(m) or {}, retrain_s))
    errors = [f"* `{m}`: {rows[m]['error']}" for m in names if rows[m].get("error")]
    return "\n".join(lines + ([""] + errors if errors else []))


def _line(label: str, r: dict, e: dict, retrain_s: float | None, gold: bool = False) -> str:
    mia = (e.get("mia") or {}).get("min_k") or {}
    fq = 1.0 if gold else e.get("forget_quality")
    priv = 0.0 if gold else mia.get("privleak")
    t = r.get("unlearn_seconds")
    ratio = t / retrain_s if (t is not None and retrain_s) else None
    return (
        f"| {label} | {_f(fq)} | {_f(e.get('model_utility'))} | {_f(priv, 1)} | {_f(r.get('forget_nll'))} | "
        f"{_f(r.get('retain_nll'))} | {_f(r.get('holdout_nll'))} | {_f(t, 2)} | {_f(ratio, 4)} |"
    )


def cost_table(report: dict[str, Any]) -> str:
    """Unlearning wall time per method and split, in seconds and in forward+backward passes over F."""
    costs = report["costs"]["splits"]
    splits = [x for x in report["splits"] if not report["splits"][x].get("same_forget_set_as")]
    methods: list[str] = []
    for x in splits:
        methods += [m for m in costs[x]["methods"] if m not in methods]
    head = " | ".join(splits)
    lines = [
        f"| method | {head} | in fb passes over F ({' / '.join(splits)}) | / retraining ({' / '.join(splits)}) |",
        "|---|" + "---|" * (len(splits) + 2),
    ]
    for m in methods:
        cells = [costs[x]["methods"].get(m, {}) for x in splits]
        secs = " | ".join(_f(c.get("seconds"), 3) + " s" if c.get("seconds") is not None else "-" for c in cells)
        fb = " / ".join(_f(c.get("vs_forward_backward"), 1) for c in cells)
        rt = " / ".join(_f(c.get("vs_retrain"), 4) for c in cells)
        lines.append(f"| {m} | {secs} | {fb} | {rt} |")
    fin = report["costs"]
    lines += [
        "",
        "retraining (gold fine-tune): "
        + ", ".join(f"{x} {costs[x]['retrain_s']:.1f} s" for x in splits)
        + "; one fb pass over F: "
        + ", ".join(f"{x} {costs[x]['forward_backward_s'] * 1e3:.0f} ms" for x in splits)
        + (
            "; recorders' training-time overhead not priced (--no-price-recording)"
            if report["finetune"].get("plain_seconds") == report["finetune"].get("target_seconds")
            else f"; recorders' training-time overhead {fin.get('recording_overhead', float('nan')):.2f}x"
        )
        + "; recorded bytes "
        + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in fin.get("recorded_bytes", {}).items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", help="A <setting>.json written by benchmarks/run.py.")
    p.add_argument("--split", default=None, help="Forget split (default: every split of the run).")
    p.add_argument("--s3t-study", action="store_true", help="Also print the S3T-vs-LoRA study, if the run has one.")
    p.add_argument("--costs", action="store_true", help="Also print the cost table (every distinct split).")
    args = p.parse_args(argv)
    report = json.loads(Path(args.json).read_text())
    splits = [args.split] if args.split else list(report["splits"])
    for split in splits:
        if split not in report["splits"]:
            raise SystemExit(f"split {split!r} is not in {args.json}: {sorted(report['splits'])}")
        entry = report["splits"][split]
        print(f"### {split} ({entry['n_forget']} forget examples, {entry['n_retain']} retain)\n")
        if entry.get("same_forget_set_as"):
            print(f"Same forget set as {entry['same_forget_set_as']}: the same results.\n")
        print(quality_table(report, split) + "\n")
    fin = report.get("finetune", {})
    print(f"total protocol wall time: {report.get('total_seconds', float('nan')) / 60:.1f} min; "
          f"target fine-tune {fin.get('target_seconds', float('nan')):.0f} s")  # fmt: skip
    if args.costs:
        print("\n" + cost_table(report))
    if args.s3t_study:
        if "s3t_study" not in report:
            print(f"\n(no S3T study in this run: {report.get('s3t_study_error', 'not requested')})")
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from s3t_study import study_markdown

            print("\n" + study_markdown(report["s3t_study"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
