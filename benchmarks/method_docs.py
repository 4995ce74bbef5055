"""Write the real-model numbers into each method's doc (docs/methods/*.md, section "On a real model").

Every number in those sections comes from two committed reports, and this script is what prints them:

* ``benchmarks/results/cpu-smollm2.json`` (``make bench-smollm2``): forget quality, model utility, Min-K privleak and
  NLLs per method on forget10 (the reported split) and forget01;
* ``benchmarks/results/tune_smollm2/tune.json`` (``benchmarks/tune_defaults.py``): how the method's defaults on this
  model were chosen on the validation split forget05.

The generated text sits between two HTML comments in each doc; what follows the closing comment (the reading of
the numbers) is written by hand and left alone.

    python benchmarks/method_docs.py            # rewrite the blocks
    python benchmarks/method_docs.py --check    # exit 1 when a doc's block differs from what the reports give
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- BEGIN numbers: written by benchmarks/method_docs.py from the committed reports; do not edit -->"
END = "<!-- END numbers -->"
HEADING = "## On a real model (SmolLM2-135M-Instruct, `cpu-smollm2`)"
DOCS: dict[str, list[str]] = {
    "baselines.md": ["grad_ascent", "grad_diff", "npo"],
    "embedding_ga.md": ["embedding_ga"],
    "idk_dpo.md": ["idk_dpo"],
    "partial.md": ["partial_amnesiac", "partial_grad_ascent", "partial_label_flip"],
    "rmu.md": ["rmu"],
    "rum.md": ["rum"],
    "simnpo.md": ["simnpo"],
    "ssd.md": ["ssd"],
    "undial.md": ["undial"],
    "wga.md": ["wga"],
}
BENCH_LINK = "../../BENCHMARKS.md#real-model-cpu-smollm2-smollm2-135m-instruct-lora-cpu"


def _num(x: Any, nd: int = 3, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def _split_numbers(report: dict[str, Any], split: str, m: str) -> str:
    sp = report["splits"][split]
    row = sp["rows"].get(m) or {}
    ev = (sp.get("evaluation") or {}).get(m) or {}
    if row.get("error"):
        return f"{split} ({sp['n_forget']} QA): failed ({row['error']})"
    mia = (ev.get("mia") or {}).get("min_k") or {}
    t = row.get("unlearn_seconds")
    return (
        f"{split} ({sp['n_forget']} QA): forget quality {_num(ev.get('forget_quality'))}, privleak "
        f"{_num(mia.get('privleak'), 1, sign=True)}, model utility {_num(ev.get('model_utility'))}, forget NLL "
        f"{_num(row.get('forget_nll'), 2)}, retain NLL {_num(row.get('retain_nll'), 2)}"
        + (f", {t:.1f} s" if t is not None else "")
    )


def _choice(tune: dict[str, Any], m: str) -> str:
    d = tune["methods"].get(m)
    if d is None:
        return "the class's `benchmark_defaults` (not part of the selection run)"
    cands = d["candidates"]
    chosen = d["chosen"]
    ref = f"gold {tune['gold']['forget_nll']:.3f}, target {tune['target']['forget_nll']:.3f}"
    if chosen is None:
        why = "; ".join(sorted({c.get("verdict", "") for c in cands}))
        return (
            f"no candidate passed the selection rule on {tune['split']} ({why}; forget NLL "
            f"{', '.join(_num(c.get('forget_nll')) for c in cands)} vs {ref}): the class's `benchmark_defaults` run"
        )
    c = next(c for c in cands if c["overrides"] == chosen)
    if chosen:
        what = f"`{json.dumps(chosen)}` over the class's `benchmark_defaults`, the best of {len(cands)} candidates"
    else:
        what = "the class's `benchmark_defaults`, kept: they pass the rule"
    return (
        f"{what} on the validation split {tune['split']} (model utility {_num(c.get('model_utility'))} vs the "
        f"target's {_num(tune['target']['model_utility'])}; forget NLL {_num(c.get('forget_nll'))} vs {ref})"
    )


def block(report: dict[str, Any], tune: dict[str, Any], methods: list[str]) -> str:
    sp = report["splits"]["forget10"]
    ev = sp.get("evaluation") or {}
    tmia = ((ev.get("target") or {}).get("mia") or {}).get("min_k") or {}
    f01 = report["splits"].get("forget01") or {}
    same = ""
    if (
        f01.get("same_forget_set_as") == tune["split"]
        or report["splits"].get(tune["split"], {}).get("same_forget_set_as") == "forget01"
    ):
        same = (
            f" forget01 holds the same author as {tune['split']}: its numbers are on the data the defaults were "
            "chosen on."
        )
    lines = [
        BEGIN,
        "",
        f"`make bench-smollm2`, one seed; the setting and what its small forget sets can and cannot show are in "
        f"[BENCHMARKS.md]({BENCH_LINK}). Defaults on this model are chosen on the validation split "
        f"{tune['split']} by `benchmarks/tune_defaults.py` (`benchmarks/results/tune_smollm2/`; rule: model utility "
        f">= {tune['rule']['min_utility']}x the target's, forget NLL >= {tune['rule']['min_forget_rise']}x the "
        "target's, then the forget NLL closest to the gold model's), never on forget10. On forget10 the target "
        f"reads privleak {_num(tmia.get('privleak'), 1, sign=True)} / utility "
        f"{_num((ev.get('target') or {}).get('model_utility'))} / forget NLL "
        f"{_num(sp['rows']['target']['forget_nll'], 2)} and the gold model 0 / "
        f"{_num((ev.get('gold') or {}).get('model_utility'))} / {_num(sp['rows']['gold (retrain)']['forget_nll'], 2)}."
        + same,
        "",
    ]
    for m in methods:
        lines.append(
            f"* **`{m}`**: {_split_numbers(report, 'forget10', m)}; {_split_numbers(report, 'forget01', m)}. "
            f"Defaults: {_choice(tune, m)}."
        )
    lines += ["", END]
    return "\n".join(lines)


def update(text: str, new_block: str, name: str) -> str:
    if BEGIN in text:
        a = text.index(BEGIN)
        b = text.index(END, a) + len(END)
        return text[:a] + new_block + text[b:]
    if HEADING not in text:
        raise ValueError(f"{name}: no '{HEADING}' section")
    a = text.index(HEADING) + len(HEADING)
    return text[:a] + "\n\n" + new_block + "\n" + text[a:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", default=str(ROOT / "benchmarks/results/cpu-smollm2.json"))
    p.add_argument("--tune", default=str(ROOT / "benchmarks/results/tune_smollm2/tune.json"))
    p.add_argument("--docs", default=str(ROOT / "docs/methods"))
    p.add_argument("--check", action="store_true", help="Only check that every block is up to date.")
    a = p.parse_args(argv)
    report = json.loads(Path(a.report).read_text())
    tune = json.loads(Path(a.tune).read_text())
    stale = []
    for name, methods in DOCS.items():
        path = Path(a.docs) / name
        text = path.read_text()
        new = update(text, block(report, tune, methods), name)
        if new != text:
            stale.append(name)
            if not a.check:
                path.write_text(new)
    print(("stale: " if a.check else "updated: ") + (", ".join(stale) or "none"))
    return 1 if (a.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
