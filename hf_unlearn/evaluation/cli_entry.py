"""``hf-unlearn evaluate``: the TOFU-style report of one model, and optionally the comparison report.

Examples::

    # the gold retain model first (no reference), then a model unlearned from the target
    hf-unlearn evaluate --model out/gold --skip-forget-quality --output results/gold.json
    hf-unlearn evaluate --model out/npo --reference results/gold.json --output results/npo.json \\
        --report-dir results/ --compare results/gold.json
    # several processes / GPUs: items are sharded, the main process writes the files
    accelerate launch -m hf_unlearn.cli evaluate --model out/npo --reference results/gold.json --output npo.json

The benchmark is a ``save_to_disk`` folder (``--benchmark``) or the embedded fictitious-authors benchmark built with
``--n-authors`` / ``--seed`` (``--qa-per-author``), which must match the one the model was trained on.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_evaluate_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to an argparse subparsers object (``func`` = :func:`cmd_evaluate`).

    Example:
        >>> p = argparse.ArgumentParser(prog="hf-unlearn")
        >>> sub = p.add_subparsers(dest="command")
        >>> _ = add_evaluate_subparser(sub)
        >>> a = p.parse_args(["evaluate", "--model", "m", "--skip-forget-quality", "--no-generation"])
        >>> a.func.__name__, a.generation, a.forget_split
        ('cmd_evaluate', False, 'forget10')
    """
    e = subparsers.add_parser(
        "evaluate",
        help="TOFU-style unlearning report (forget quality, model utility, ROUGE, MIA, privleak) of one model.",
        description=__doc__.split("\n")[0],
    )
    e.add_argument("--model", required=True, help="Local model or adapter folder, Hub id, or smollm2-135m-offline.")
    e.add_argument("--benchmark", default=None, help="A save_to_disk DatasetDict folder (default: build embedded).")
    e.add_argument("--n-authors", type=int, default=None, help="Embedded benchmark: number of authors.")
    e.add_argument("--seed", type=int, default=None, help="Embedded benchmark: seed.")
    e.add_argument("--qa-per-author", type=int, default=None, help="Embedded benchmark: QA items per author.")
    ref = e.add_mutually_exclusive_group()
    ref.add_argument("--reference", default=None, help="JSON result of the gold retain model (forget quality).")
    ref.add_argument(
        "--skip-forget-quality", action="store_true", help="No reference: forget quality and privleak are null."
    )
    e.add_argument("--forget-split", default="forget10")
    e.add_argument("--retain-split", default=None, help="Default: retain<100-pct>.")
    e.add_argument("--holdout-split", default=None, help="Default: holdout<pct>.")
    e.add_argument("--max-new-tokens", type=int, default=200, help="Greedy generation length for ROUGE (TOFU: 200).")
    e.add_argument("--batch-size", type=int, default=16, help="Per-process batch size.")
    e.add_argument(
        "--max-length", type=int, default=512, help="Tokenization limit (prompt + answer; OpenUnlearning 512)."
    )
    e.add_argument(
        "--definitions",
        default="open_unlearning",
        choices=["open_unlearning", "paper"],
        help="Metric definitions: OpenUnlearning's numbers (default) or the papers' (docs/metrics.md).",
    )
    e.add_argument("--template", default="plain", choices=["plain", "chat"], help="Prompt template used in training.")
    e.add_argument("--retain-max-items", type=int, default=400, help="Retain items evaluated (0: all).")
    e.add_argument("--no-generation", dest="generation", action="store_false", help="Skip generation and ROUGE.")
    e.add_argument("--no-gradnorm", dest="gradnorm", action="store_false", help="Skip the GradNorm MIA.")
    e.add_argument("--name", default=None, help="Label of this model in reports (default: the --model value).")
    e.add_argument("--output", default=None, help="Write the full JSON result here.")
    e.add_argument("--report-dir", default=None, help="Write JSON per model, report.md and report.png here.")
    e.add_argument("--compare", nargs="*", default=[], help="Earlier result JSONs to include in --report-dir.")
    e.set_defaults(func=cmd_evaluate)
    return e


def _benchmark(args: argparse.Namespace) -> Any:
    if args.benchmark:
        from datasets import load_from_disk

        return load_from_disk(args.benchmark)
    from hf_unlearn.benchmarks.fictitious_authors import build

    kw = {k: v for k, v in (("n_authors", args.n_authors), ("seed", args.seed)) if v is not None}
    if args.qa_per_author is not None:
        kw["qa_per_author"] = args.qa_per_author
    return build(**kw)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a result (what ``hf-unlearn evaluate`` prints).

    Example:
        >>> summary({"name": "m", "forget_quality": None, "model_utility": 0.5, "splits": {}, "mia": {}})["name"]
        'm'
    """
    splits = result.get("splits", {})
    out: dict[str, Any] = {
        "name": result.get("name"),
        "forget_quality": result.get("forget_quality"),
        "model_utility": result.get("model_utility"),
        "definitions": result.get("meta", {}).get("definitions"),
    }
    for role in ("forget", "retain"):
        agg = splits.get(role, {}).get("aggregate", {})
        for key in ("probability", "rougeL_recall", "truth_ratio", "exact_memorization", "extraction_strength"):
            if key in agg:
                out[f"{role}_{key}"] = agg[key]
    for attack, entry in result.get("mia", {}).items():
        out[f"mia_auc_{attack}"] = entry.get("auc")
        if entry.get("privleak") is not None:
            out[f"privleak_{attack}"] = entry["privleak"]
    out["perplexity"] = result.get("perplexity")
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run :func:`hf_unlearn.evaluation.evaluate_unlearning` from parsed arguments; the main process writes files."""
    from accelerate import PartialState

    from hf_unlearn.evaluation import evaluate_unlearning
    from hf_unlearn.evaluation.report import load_results, write_json, write_report
    from hf_unlearn.models import load_model

    if args.reference is None and not args.skip_forget_quality:
        raise ValueError(
            "forget quality needs the gold retain model's result: pass --reference gold.json (from "
            "`hf-unlearn evaluate --model <gold> --skip-forget-quality --output gold.json`) or --skip-forget-quality"
        )
    model, tokenizer = load_model(args.model)
    result = evaluate_unlearning(
        model,
        tokenizer,
        _benchmark(args),
        reference=args.reference,
        forget_split=args.forget_split,
        retain_split=args.retain_split,
        holdout_split=args.holdout_split,
        skip_forget_quality=args.skip_forget_quality,
        generation=args.generation,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        max_length=args.max_length,
        template=args.template,
        retain_max_items=args.retain_max_items or None,
        gradnorm=args.gradnorm,
        definitions=args.definitions,
        name=args.name or str(args.model),
    )
    if not PartialState().is_main_process:
        return 0
    if args.output:
        write_json(result, args.output)
    if args.report_dir:
        results = load_results(args.compare) if args.compare else {}
        results[result["name"]] = result
        paths = write_report(results, args.report_dir)
        print(f"report: {paths['markdown']} {paths['png']}")
    print(json.dumps(summary(result), indent=2))
    return 0
