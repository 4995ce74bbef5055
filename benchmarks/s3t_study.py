"""S3T against a plain LoRA fine-tune, on the setting of a :func:`hf_unlearn.pipeline.run_protocol` run (issue 14).

The protocol's target IS the plain LoRA fine-tune (same base, same LoRA config, same epochs as S3T's stages when the
setting's ``s3t`` overrides say so). This study adds, on the same data and gold models:

* the trained S3T system before any deletion (m = 1, the protocol's own system), evaluated with the full suite;
* the same after deleting each forget split (served prefix lengths, dead shards, utility, forget metrics; the
  protocol already evaluated these models, the study collects them);
* after ``retrain()`` following the largest deletion (its wall time, and the utility it restores);
* an m > 1 system (``--s3t-shards``, default 2) trained on the same data: utility before and after each deletion,
  and how much averaging the shards' logits dilutes facts that only one shard learned (answer probability on the
  fictitious authors against the general-knowledge splits that every shard saw).

Called by ``benchmarks/run.py --s3t-study`` (on the SmolLM2 setting); writes ``<setting>.json["s3t_study"]``.
"""

from __future__ import annotations

import copy
import time
from typing import Any


def _utility_row(ev: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one evaluation the study reports."""
    agg = {role: s["aggregate"] for role, s in ev["splits"].items()}

    def get(role: str, key: str) -> float | None:
        return agg.get(role, {}).get(key)

    return {
        "model_utility": ev.get("model_utility"),
        "forget_quality": ev.get("forget_quality"),
        "forget_prob": get("forget", "probability"),
        "retain_prob": get("retain", "probability"),
        "forget_rougeL": get("forget", "rougeL_recall"),
        "retain_rougeL": get("retain", "rougeL_recall"),
        "real_authors_prob": get("real_authors", "probability"),
        "world_facts_prob": get("world_facts", "probability"),
        "privleak_min_k": (ev.get("mia", {}).get("min_k") or {}).get("privleak"),
    }


def _train(ctx: Any, cfg: Any) -> tuple[Any, float]:
    from hf_unlearn.methods.s3t import S3TModel

    build = getattr(S3TModel, "from_training", None) or S3TModel.train
    t0 = time.perf_counter()
    model = build(copy.deepcopy(ctx.base_model), ctx.tokenizer, ctx.bench["full"], cfg)
    return model, time.perf_counter() - t0


def run_study(
    report: dict[str, Any],
    n_shards: int = 2,
    retrain_split: str | None = None,
    evaluate_kwargs: dict[str, Any] | None = None,
) -> dict:
    """Run the S3T-vs-LoRA study on the context of a finished protocol run (``report["_context"]``).

    Args:
        report: what :func:`hf_unlearn.pipeline.run_protocol` returned (with ``evaluate=True`` and ``s3t`` run).
        n_shards: m of the multi-shard system.
        retrain_split: the split deleted before ``retrain()`` (default: the largest).
        evaluate_kwargs: overrides of :func:`hf_unlearn.pipeline.evaluation_kwargs`.

    Returns:
        A JSON-able dict (see the module docstring).
    """

    from hf_unlearn.evaluation import evaluate_unlearning
    from hf_unlearn.pipeline import autocast_for, evaluation_kwargs

    ctx = report["_context"]
    if "s3t" not in ctx.cache:
        raise ValueError("the S3T study needs a protocol run that included the 's3t' method")
    splits = list(report["splits"])
    largest = max(splits, key=lambda x: report["splits"][x]["n_forget"])
    retrain_split = retrain_split or largest
    if retrain_split != "none" and retrain_split not in splits:
        raise ValueError(f"retrain_split {retrain_split!r} is not a split of this run: {splits}")
    out: dict[str, Any] = {"largest_split": largest, "n_shards_multi": n_shards}

    def evaluate(model: Any, split: str) -> dict[str, Any]:
        ctx.use_split(split)
        kw = {**evaluation_kwargs(ctx), **(evaluate_kwargs or {})}
        gold = report["splits"][split]["evaluation"]["gold"]
        with autocast_for(ctx, model):
            return _utility_row(evaluate_unlearning(model, ctx.tokenizer, ctx.bench, reference=gold, **kw))

    # --- m = 1: the protocol's system -------------------------------------------------------------------------
    trained, train_s = ctx.cache["s3t"]
    cfg = trained.config_s3t
    lora_target_s = report["finetune"]["plain_seconds"]
    out["lora_target"] = {
        "train_seconds": lora_target_s,
        **{split: _utility_row(report["splits"][split]["evaluation"]["target"]) for split in splits},
    }
    m1: dict[str, Any] = {"n_shards": cfg.n_shards, "n_slices": cfg.n_slices, "train_seconds": train_s}
    m1["train_vs_lora"] = train_s / lora_target_s if lora_target_s else None
    m1["before_deletion"] = evaluate(trained, largest)
    m1["after_deletion"] = {}
    for split in splits:
        entry = report["splits"][split]
        ev = entry.get("evaluation", {}).get("s3t")
        m1["after_deletion"][split] = {
            "n_deleted": entry["n_forget"],
            "served_prefix_lengths": entry["details"].get("s3t", {}).get("served_prefix_lengths"),
            "dead_shards": entry["details"].get("s3t", {}).get("dead_shards"),
            **(_utility_row(ev) if ev else {"error": entry["rows"]["s3t"].get("error")}),
        }
    if retrain_split == "none":
        m1["retrain"] = None
        out["m1"] = m1
        return _multi(ctx, report, splits, largest, cfg, n_shards, lora_target_s, evaluate, out)
    ctx.use_split(retrain_split)
    deleted = copy.deepcopy(trained)
    rep = deleted.delete(list(ctx.forget["uid"]), persist=False)
    t0 = time.perf_counter()
    deleted.retrain(ctx.bench["full"])
    retrain_s = time.perf_counter() - t0
    m1["retrain"] = {
        "split": retrain_split,
        "prefix_lengths_before": rep.get("served_prefix_lengths"),
        "prefix_lengths_after": {str(k): v for k, v in deleted.served_prefix_lengths().items()},
        "seconds": retrain_s,
        "vs_s3t_training": retrain_s / train_s if train_s else None,
        **evaluate(deleted, retrain_split),
    }
    del deleted
    out["m1"] = m1
    return _multi(ctx, report, splits, largest, cfg, n_shards, lora_target_s, evaluate, out)


def _multi(ctx, report, splits, largest, cfg, n_shards, lora_target_s, evaluate, out) -> dict:
    """The m > 1 part of :func:`run_study`."""
    from dataclasses import replace

    multi, multi_s = _train(ctx, replace(cfg, n_shards=n_shards))
    mm: dict[str, Any] = {"n_shards": n_shards, "n_slices": cfg.n_slices, "train_seconds": multi_s}
    mm["train_vs_lora"] = multi_s / lora_target_s if lora_target_s else None
    mm["before_deletion"] = evaluate(multi, largest)
    mm["after_deletion"] = {}
    for split in splits:
        same = report["splits"][split].get("same_forget_set_as")
        if same:  # the same forget set as an earlier split: the same deletion
            mm["after_deletion"][split] = {**mm["after_deletion"][same], "same_forget_set_as": same}
            continue
        ctx.use_split(split)
        m = copy.deepcopy(multi)
        rep = m.delete(list(ctx.forget["uid"]), persist=False)
        row: dict[str, Any] = {
            "n_deleted": len(ctx.forget),
            "served_prefix_lengths": rep.get("served_prefix_lengths"),
            "dead_shards": rep.get("dead_shards"),
            "delete_seconds": rep.get("seconds"),
        }
        try:
            row.update(evaluate(m, split))
        except RuntimeError as err:  # every shard cut: a result, not a crash
            row["error"] = str(err)
        mm["after_deletion"][split] = row
        del m
    out["multi"] = mm
    return out


def study_markdown(study: dict[str, Any]) -> str:
    """The study as markdown tables."""

    def f(x: Any, nd: int = 3) -> str:
        return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    largest = study["largest_split"]
    lines = [
        "## S3T against a plain LoRA fine-tune (same base, LoRA config and epochs)",
        "",
        "| system | train (s) | vs LoRA | model utility | retain prob | forget prob | real authors prob "
        "| world facts prob |",
        "|---|---|---|---|---|---|---|---|",
    ]
    t = study["lora_target"]
    lt = t[largest]
    lines.append(
        f"| plain LoRA fine-tune (target) | {f(t['train_seconds'], 0)} | 1.00 | {f(lt['model_utility'])} | "
        f"{f(lt['retain_prob'])} | {f(lt['forget_prob'])} | {f(lt['real_authors_prob'])} | "
        f"{f(lt['world_facts_prob'])} |"
    )
    for key in ("m1", "multi"):
        s = study[key]
        b = s["before_deletion"]
        lines.append(
            f"| S3T m={s['n_shards']}, L={s['n_slices']} (no deletion) | {f(s['train_seconds'], 0)} | "
            f"{f(s['train_vs_lora'], 2)} | {f(b['model_utility'])} | {f(b['retain_prob'])} | {f(b['forget_prob'])} "
            f"| {f(b['real_authors_prob'])} | {f(b['world_facts_prob'])} |"
        )
    lines += [
        "",
        "After deleting each forget split (bookkeeping only; one copy of the trained system per split):",
        "",
        "| system | split | deleted | served prefix per shard | dead shards | model utility | forget quality | "
        "forget prob | privleak (Min-K) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("m1", "multi"):
        s = study[key]
        for split, r in s["after_deletion"].items():
            lines.append(
                f"| S3T m={s['n_shards']} | {split} | {r.get('n_deleted')} | {r.get('served_prefix_lengths')} | "
                f"{r.get('dead_shards')} | {f(r.get('model_utility'))} | {f(r.get('forget_quality'))} | "
                f"{f(r.get('forget_prob'))} | {f(r.get('privleak_min_k'), 1)} |"
            )
    r = study["m1"]["retrain"]
    if r is None:
        return "\n".join(lines + ["", "`retrain()` was not run in this study (`--s3t-retrain-split none`).", ""])
    lines += [
        "",
        f"`retrain()` after deleting {r['split']} (m=1): {f(r['seconds'], 0)} s "
        f"({f(r['vs_s3t_training'], 2)}x the S3T training), prefix lengths {r['prefix_lengths_before']} -> "
        f"{r['prefix_lengths_after']}, model utility {f(r['model_utility'])}, forget quality "
        f"{f(r['forget_quality'])}.",
        "",
    ]
    return "\n".join(lines)
