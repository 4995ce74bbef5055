"""Markdown of a protocol report."""

from __future__ import annotations

from typing import Any


def markdown_table(report: dict[str, Any]) -> str:
    """A markdown table of the NLL/time rows of a :func:`run_protocol` report."""
    lines = ["| model | forget NLL | retain NLL | holdout NLL | unlearn time (s) |", "|---|---|---|---|---|"]
    gold = report["rows"].get("gold (retrain)")
    for name, r in report["rows"].items():
        if name == "retrain" and gold and all(r.get(k) == v for k, v in gold.items()):
            continue  # the benchmark's retrain IS the gold fine-tune (same model): show it once, as the gold row
        t = r.get("unlearn_seconds")
        lines.append(
            f"| {name} | {r['forget_nll']:.3f} | {r['retain_nll']:.3f} | {r['holdout_nll']:.3f} | "
            f"{'-' if t is None else f'{t:.2f}'} |"
        )
    notes = [f"* {name}: {r['error']}" for name, r in report["rows"].items() if r.get("error")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
