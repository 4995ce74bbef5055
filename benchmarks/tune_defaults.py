"""Choose per-method defaults for a real model on a VALIDATION split (issue 14 item 3).

The protocol's target and gold models are built once (``hf_unlearn.protocol.prepare``: the setting's LoRA
fine-tune of the pretrained model, and the gold fine-tune on the validation split's retain set). Each candidate
config of each method in :data:`GRID` then unlearns the validation forget set from a copy of the target and is scored
with the full metric suite of the protocol. The selection rule, applied per method and printed with the table:

1. **not collapsed**: model utility >= ``--min-utility`` (default 0.9) x the target's;
2. **not untouched**: forget NLL >= ``--min-forget-rise`` (default 1.1) x the target's;
3. among those, the forget NLL closest to the gold model's (``|log(forget NLL / gold forget NLL)|``): the gold model
   is the retrain without the forget set, so this is "forgets as much as retraining would";
4. if no candidate passes 1-2, none is chosen and the table says so.

The chosen configs are what ``Setting.method_overrides`` of ``cpu-smollm2`` carries (hf_unlearn/protocol/settings.py);
the reported split (forget10) is never looked at here.

Usage (the committed run; about 30 min on 2 CPU cores):
    python benchmarks/tune_defaults.py --setting cpu-smollm2 --split forget05 --threads 2 \
        --out benchmarks/results/tune_smollm2

Reproduction check: the protocol run with the chosen defaults must give, on the same forget set, exactly the numbers
of the chosen candidates (another process, the same code):
    python benchmarks/tune_defaults.py --compare benchmarks/results/tune_smollm2/tune.json \
        benchmarks/results/cpu-smollm2.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Candidates per method: overrides of the method's benchmark config ({} = its current declared defaults). The
# methods listed are those whose tiny-model defaults failed on SmolLM2 in the first cpu-smollm2 run (collapse: ssd;
# untouched: simnpo, rmu; far past the gold model: npo, undial).
GRID: dict[str, list[dict[str, Any]]] = {
    "ssd": [
        {},
        {"alpha": 300.0},
        {"alpha": 1000.0},
        {"target": "adapter"},
        {"target": "adapter", "alpha": 30.0},
    ],
    # a first step that raises the retain NLL past the calibration tolerance is rolled back to the start: too high
    # a learning rate leaves the model untouched, so the candidates go down
    "simnpo": [{}, {"learning_rate": 1e-3}, {"learning_rate": 3e-4}, {"learning_rate": 1e-4}],
    "rmu": [{}, {"steering_coeff": 20.0}, {"learning_rate": 2e-2}, {"learning_rate": 3e-2}],
    "npo": [{}, {"learning_rate": 3e-4}, {"learning_rate": 1e-4}, {"learning_rate": 5e-5}],
    "undial": [{}, {"learning_rate": 3e-4}, {"learning_rate": 1e-4}, {"learning_rate": 5e-5}],
}
# The other methods' declared defaults are checked against the same rule (one candidate each, {}).
CHECK_ONLY = (
    "grad_ascent", "grad_diff", "embedding_ga", "idk_dpo", "partial_grad_ascent", "partial_label_flip",
    "partial_amnesiac", "rum", "wga",
)  # fmt: skip


def _mia_privleak(e: dict[str, Any]) -> float | None:
    return ((e.get("mia") or {}).get("min_k") or {}).get("privleak")


def score(ev: dict[str, Any], nll: dict[str, float]) -> dict[str, Any]:
    return {
        "forget_quality": ev.get("forget_quality"),
        "model_utility": ev.get("model_utility"),
        "privleak": _mia_privleak(ev),
        "forget_nll": nll["forget_nll"],
        "retain_nll": nll["retain_nll"],
        "holdout_nll": nll["holdout_nll"],
    }


def choose(rows: list[dict[str, Any]], target: dict[str, Any], gold: dict[str, Any], min_utility: float,
           min_rise: float) -> tuple[int | None, list[str]]:  # fmt: skip
    """Index of the chosen candidate (or None) and, per candidate, why it passed or failed."""
    why, best, best_d = [], None, math.inf
    for i, r in enumerate(rows):
        if r.get("error"):
            why.append("failed: " + r["error"])
            continue
        if not r["model_utility"] >= min_utility * target["model_utility"]:
            why.append(f"collapsed (utility < {min_utility} x target)")
            continue
        if not r["forget_nll"] >= min_rise * target["forget_nll"]:
            why.append(f"untouched (forget NLL < {min_rise} x target)")
            continue
        d = abs(math.log(r["forget_nll"] / gold["forget_nll"]))
        why.append(f"ok: |log(forget NLL / gold)| = {d:.3f}")
        if d < best_d:
            best, best_d = i, d
    return best, why


def compare(tune: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """Lines comparing each chosen candidate (``{}`` where none was chosen) with the protocol report's row for the
    same forget set (the tune split, or the split it duplicates); ``DIFFERS`` marks any unequal number."""
    splits = report["splits"]
    split = tune["split"]
    sp = splits[split]
    sp = splits[sp["same_forget_set_as"]] if sp.get("same_forget_set_as") else sp
    out = []

    def numbers(row: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
        return score(ev, row)

    for name, key in (("gold", "gold (retrain)"), ("target", "target")):
        ev = sp["evaluation"]["gold" if name == "gold" else "target"]
        got = numbers(sp["rows"][key], ev)
        want = tune[name]
        keys = ("forget_nll", "retain_nll", "holdout_nll") + (("model_utility",) if name == "gold" else tuple(got))
        same = all(got[k] == want[k] for k in keys)
        out.append(f"{name}: {'equal' if same else 'DIFFERS'}")
    for m, d in tune["methods"].items():
        chosen = d["chosen"] if d["chosen"] is not None else {}
        cand = next((c for c in d["candidates"] if c["overrides"] == chosen), None)
        if cand is None or m not in sp["rows"] or cand.get("error"):
            out.append(f"{m}: not comparable")
            continue
        got = numbers(sp["rows"][m], sp["evaluation"][m])
        diffs = {k: (cand[k], got[k]) for k in got if cand[k] != got[k]}
        out.append(f"{m}: " + ("equal" if not diffs else f"DIFFERS {diffs}"))
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--compare":
        if len(argv) != 3:
            raise SystemExit("usage: tune_defaults.py --compare TUNE_JSON REPORT_JSON")
        lines = compare(json.loads(Path(argv[1]).read_text()), json.loads(Path(argv[2]).read_text()))
        print("\n".join(lines))
        return 1 if any("DIFFERS" in x for x in lines) else 0
    from hf_unlearn.evaluation import evaluate_unlearning
    from hf_unlearn.protocol import SETTINGS
    from hf_unlearn.protocol.context import autocast_for, prepare
    from hf_unlearn.protocol.nll import nll_row
    from hf_unlearn.protocol.runner import _short, builtin_runners, evaluation_kwargs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="cpu-smollm2", choices=sorted(SETTINGS))
    p.add_argument("--split", default="forget05", help="The validation forget split (never the reported one).")
    every = [*GRID, *CHECK_ONLY]
    p.add_argument("--methods", default=",".join(every), help="Comma-separated subset of: " + ", ".join(every))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-utility", type=float, default=0.9)
    p.add_argument("--min-forget-rise", type=float, default=1.1)
    p.add_argument("--out", default="benchmarks/results/tune_smollm2")
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in every]
    if unknown:
        p.error(f"no candidates for {unknown}; choose from: {', '.join(every)}")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s = replace(SETTINGS[a.setting], forget_split=a.split)
    ctx = prepare(s, methods, None, progress=False)  # with the recorders the methods need (partial_amnesiac)
    kw = evaluation_kwargs(ctx)
    with autocast_for(ctx):
        gold_ev = evaluate_unlearning(ctx.gold, ctx.tokenizer, ctx.bench, skip_forget_quality=True, **kw)
        target_ev = evaluate_unlearning(ctx.target, ctx.tokenizer, ctx.bench, reference=gold_ev, **kw)
    gold = score(gold_ev, nll_row(ctx.gold, ctx))
    target = score(target_ev, nll_row(ctx.target, ctx))
    report: dict[str, Any] = {
        "setting": a.setting,
        "split": a.split,
        "n_forget": len(ctx.forget),
        "rule": {"min_utility": a.min_utility, "min_forget_rise": a.min_forget_rise},
        "torch": torch.__version__,
        "threads": a.threads,
        "gold": gold,
        "target": target,
        "methods": {},
    }
    runners = builtin_runners()
    base_overrides = dict(s.method_overrides)
    for m in methods:
        rows = []
        for cand in GRID.get(m, [{}]):
            ctx.setting = replace(s, method_overrides={**base_overrides, m: {**base_overrides.get(m, {}), **cand}})
            t = time.perf_counter()
            try:
                res = runners[m].run(ctx)
                with autocast_for(ctx):
                    ev = evaluate_unlearning(res.model, ctx.tokenizer, ctx.bench, reference=gold_ev, **kw)
                row = score(ev, nll_row(res.model, ctx))
                row["unlearn_seconds"] = res.timings.get("unlearn")
                row["details"] = _short(res.details or {})
                del res
            except Exception as err:  # a failing candidate is a row, not the end of the run
                row = {"error": f"{type(err).__name__}: {err}"}
            row["overrides"] = cand
            row["seconds"] = time.perf_counter() - t
            rows.append(row)
            print(m, cand, {k: row.get(k) for k in ("model_utility", "forget_nll", "privleak", "error")}, flush=True)
        ctx.setting = s
        best, why = choose(rows, target, gold, a.min_utility, a.min_forget_rise)
        for r, w in zip(rows, why):
            r["verdict"] = w
        report["methods"][m] = {"candidates": rows, "chosen": None if best is None else rows[best]["overrides"]}
        (out / "tune.json").write_text(json.dumps(report, indent=2, default=str))
    report["total_seconds"] = time.perf_counter() - t0
    (out / "tune.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "tune.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def _f(x: Any, nd: int = 3) -> str:
    from summary import _f as fmt  # the benchmarks' one number formatter (benchmarks/summary.py)

    return fmt(x, nd)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Default selection on `{r['setting']}`, validation split `{r['split']}` ({r['n_forget']} forget QA)",
        "",
        "Printed by `benchmarks/tune_defaults.py` (one seed, torch "
        f"{r['torch']}, {r['threads']} CPU threads). Rule: utility >= {r['rule']['min_utility']} x target "
        f"(not collapsed), forget NLL >= {r['rule']['min_forget_rise']} x target (not untouched), then the forget "
        "NLL closest to the gold model's.",
        "",
        "| method | overrides | forget quality | model utility | privleak | forget NLL | retain NLL | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("gold", "target"):
        g = r[name]
        lines.append(
            f"| {name} | | {_f(g['forget_quality'])} | {_f(g['model_utility'])} | {_f(g['privleak'], 1)} | "
            f"{_f(g['forget_nll'])} | {_f(g['retain_nll'])} | |"
        )
    for m, d in r["methods"].items():
        for c in d["candidates"]:
            mark = " **chosen**" if d["chosen"] is not None and c["overrides"] == d["chosen"] else ""
            lines.append(
                f"| {m} | `{json.dumps(c['overrides'])}` | {_f(c.get('forget_quality'))} | "
                f"{_f(c.get('model_utility'))} | {_f(c.get('privleak'), 1)} | {_f(c.get('forget_nll'))} | "
                f"{_f(c.get('retain_nll'))} | {c.get('verdict', '')}{mark} |"
            )
    if "total_seconds" in r:
        lines += ["", f"total wall time {r['total_seconds'] / 60:.1f} min"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
