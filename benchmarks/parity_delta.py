"""How much the OpenUnlearning-parity definitions move the reported numbers (issue 22), on the same models.

The protocol of a setting is run once (target, gold, and a few methods on one forget split); every model is then
evaluated twice with the same generations settings: ``definitions="paper"`` (the definitions of the earlier
committed tables: EOS scored, the paraphrase in the real-authors / world-facts truth ratio, ...) and
``definitions="open_unlearning"`` (the default since report_version 2). The table prints each headline metric under
both and their difference, so a reader of an old table knows how far its numbers are from today's.

Usage::

    python benchmarks/parity_delta.py --setting demo --threads 1

Writes ``benchmarks/results/parity_delta_<setting>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

METHODS = ("grad_ascent", "npo", "ssd")
VARIANTS = ("paper", "open_unlearning")


def headline(result: dict) -> dict[str, float | None]:
    """The numbers a benchmark table shows, from one ``evaluate_unlearning`` result."""
    sp = {k: v.get("aggregate", {}) for k, v in result["splits"].items()}
    mia = result.get("mia", {})
    return {
        "forget_quality": result.get("forget_quality"),
        "model_utility": result.get("model_utility"),
        "forget_probability": sp["forget"].get("probability"),
        "forget_truth_ratio": sp["forget"].get("truth_ratio"),
        "forget_rougeL_recall": sp["forget"].get("rougeL_recall"),
        "forget_exact_memorization": sp["forget"].get("exact_memorization"),
        "forget_extraction_strength": sp["forget"].get("extraction_strength"),
        "real_authors_truth_ratio": sp.get("real_authors", {}).get("truth_ratio"),
        "world_facts_truth_ratio": sp.get("world_facts", {}).get("truth_ratio"),
        "min_k_auc": (mia.get("min_k") or {}).get("auc"),
        "min_k_privleak": (mia.get("min_k") or {}).get("privleak"),
    }


def main(argv: list[str] | None = None) -> int:
    from hf_unlearn.evaluation import evaluate_unlearning
    from hf_unlearn.pipeline import SETTINGS, autocast_for, evaluation_kwargs, run_protocol

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="demo", choices=sorted(SETTINGS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rep = run_protocol(args.setting, methods=args.methods.split(","), progress=False, evaluate=False)
    ctx, results = rep["_context"], rep["_results"]
    models = {"target": ctx.target, **{m: r.model for m, r in results.items()}}
    kw = evaluation_kwargs(ctx)
    out: dict[str, dict[str, dict]] = {}
    for variant in VARIANTS:
        with autocast_for(ctx):
            gold = evaluate_unlearning(
                ctx.gold, ctx.tokenizer, ctx.bench, skip_forget_quality=True, definitions=variant, **kw
            )
            out.setdefault("gold", {})[variant] = headline(gold)
            for name, model in models.items():
                res = evaluate_unlearning(model, ctx.tokenizer, ctx.bench, reference=gold, definitions=variant, **kw)
                out.setdefault(name, {})[variant] = headline(res)
    keys = list(out["target"]["paper"])
    lines = [
        f"Setting `{args.setting}`, {ctx.forget_split}; the same models evaluated under both definitions "
        f"(`benchmarks/parity_delta.py`, one seed).",
        "",
        "| model | metric | paper | open_unlearning (default) | change |",
        "|---|---|---|---|---|",
    ]
    for name, by in out.items():
        for k in keys:
            a, b = by["paper"][k], by["open_unlearning"][k]
            if a is None and b is None:
                continue
            d = "-" if a is None or b is None else f"{b - a:+.4g}"
            fa = "-" if a is None else f"{a:.4g}"
            fb = "-" if b is None else f"{b:.4g}"
            lines.append(f"| {name} | {k} | {fa} | {fb} | {d} |")
    md = "\n".join(lines) + "\n"
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"parity_delta_{args.setting}.json").write_text(json.dumps(out, indent=2))
    (root / f"parity_delta_{args.setting}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
