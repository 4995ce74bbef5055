"""S3T's stage recipe on the pretrained tiny base of ``make demo`` (issue 14 item 1): why its utility is low, and
which recipe fixes it.

For the target (the setting's full fine-tune) and for each candidate S3T recipe (``method_overrides["s3t"]``
entries, applied on top of the pipeline's S3T runner exactly as ``hf-unlearn demo`` applies them), prints:

* S3T training seconds (the runner's own timing) and the number of stages;
* TOFU model utility (the demo's evaluation options: generation, retain_max_items, max_new_tokens) and its
  components, plus the token-mean answer NLL on the retain split, BEFORE any deletion;
* the same AFTER deleting the setting's forget split (``forget10`` = 2 of the 20 authors in the demo), with the
  served prefix lengths;
* optionally (``--retrain``) the same after ``retrain()``.

The target and the S3T systems start from the same cached pretrained base (``hf_unlearn.pretrained_tiny_lm``).
The target is fine-tuned once and cached under ``--workdir`` (a rerun reuses it).

Usage (one CPU thread, niced, on the shared machine):
    nice -n 19 python benchmarks/s3t_demo_recipe.py --setting demo \
        --out benchmarks/results/s3t_demo_recipe
    nice -n 19 python benchmarks/s3t_demo_recipe.py --recipes current,e10_top --retrain
"""

from __future__ import annotations

import argparse
import copy
import json
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

# Candidate recipes: overrides of the pipeline S3T runner's config (its defaults: n_shards 1, n_slices 4,
# group_column author_id, LoRA r16 / alpha 32 on every linear layer of the stage's blocks, 3 epochs per stage,
# lr = the setting's ft_lr). "current" = no override (what the demo ran before this study).
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
RECIPES: dict[str, dict[str, Any]] = {
    "current": {},
    "e10": {"num_epochs": 10},
    "e20": {"num_epochs": 20},
    "lr1e-2": {"learning_rate": 1e-2},
    "lr2e-2": {"learning_rate": 2e-2},
    "e10_lr2e-3": {"num_epochs": 10, "learning_rate": 2e-3},
    "e10_r4": {"num_epochs": 10, "lora": {"r": 4, "lora_alpha": 8}},
    "e10_mlp": {"num_epochs": 10, "lora": {"r": 16, "lora_alpha": 32, "target_modules": MLP}},
    "e10_attn": {"num_epochs": 10, "lora": {"r": 16, "lora_alpha": 32, "target_modules": ATTN}},
    "e10_r32": {"num_epochs": 10, "lora": {"r": 32, "lora_alpha": 64}},
}
# General-knowledge QA (author_id 'world' / 'real': no person a deletion request could name) placed one by one by
# uid over every slice, instead of as two big groups (S3TConfig.ungrouped_values).
SPREAD = {"group_column": "author_id", "ungrouped_values": ["world", "real"]}
R64 = {"r": 64, "lora_alpha": 128}  # full rank on the demo's hidden size 64
RECIPES.update(
    {
        "spread": SPREAD,
        "spread_r64_lr1e-2": {**SPREAD, "lora": R64, "learning_rate": 1e-2},
        "spread_r64_lr1e-2_e5": {**SPREAD, "lora": R64, "learning_rate": 1e-2, "num_epochs": 5},
        "spread_r64_e5": {**SPREAD, "lora": R64, "num_epochs": 5},
        "spread_r64_lr2e-2_e5": {**SPREAD, "lora": R64, "learning_rate": 2e-2, "num_epochs": 5},
        "spread_r64_lr1e-2_e8": {**SPREAD, "lora": R64, "learning_rate": 1e-2, "num_epochs": 8},
        "spread_r64_lr1e-2_e5_const": {
            **SPREAD,
            "lora": R64,
            "learning_rate": 1e-2,
            "num_epochs": 5,
            "lr_scheduler_type": "constant",
        },
        "spread_L2_r64_lr1e-2": {**SPREAD, "n_slices": 2, "lora": R64, "learning_rate": 1e-2},
        "spread_L3_r64_lr1e-2": {**SPREAD, "n_slices": 3, "lora": R64, "learning_rate": 1e-2},
    }
)


def evaluation_options(setting: Any) -> dict[str, Any]:
    """The demo's evaluation options (hf_unlearn.pipeline.evaluation_kwargs) without GradNorm and forget quality."""
    from hf_unlearn.pipeline import paired_splits

    retain, holdout = paired_splits(setting.forget_split)
    return dict(
        forget_split=setting.forget_split,
        retain_split=retain,
        holdout_split=holdout,
        max_new_tokens=setting.eval_max_new_tokens,
        batch_size=setting.eval_batch_size,
        gradnorm=False,
        retain_max_items=setting.eval_retain_max_items,
        skip_forget_quality=True,
    )


def utility_row(model: Any, tok: Any, bench: Any, setting: Any) -> dict[str, Any]:
    """Model utility, its components and the retain / forget answer NLLs of ``model``."""
    from hf_unlearn.evaluation import evaluate_unlearning
    from hf_unlearn.pipeline import mean_answer_nll, paired_splits

    t0 = time.perf_counter()
    ev = evaluate_unlearning(model, tok, bench, **evaluation_options(setting))
    retain = paired_splits(setting.forget_split)[0]
    return {
        "model_utility": ev["model_utility"],
        "components": {k: round(float(v), 4) for k, v in ev["model_utility_components"].items()},
        "retain_nll": mean_answer_nll(model, tok, bench[retain], setting.max_length),
        "forget_nll": mean_answer_nll(model, tok, bench[setting.forget_split], setting.max_length),
        "eval_seconds": time.perf_counter() - t0,
    }


def load_target(setting: Any, base: Any, tok: Any, bench: Any, workdir: Path) -> tuple[Any, float]:
    """The setting's target (full fine-tune on ``full``), fine-tuned once and cached in ``workdir``."""
    from transformers import AutoModelForCausalLM

    from hf_unlearn.training import finetune

    path = workdir / f"target-{setting.name}"
    meta = path / "seconds.json"
    if meta.exists():
        return AutoModelForCausalLM.from_pretrained(path), json.loads(meta.read_text())["seconds"]
    s = setting
    ft = finetune(
        copy.deepcopy(base),
        tok,
        bench["full"],
        num_epochs=s.ft_epochs,
        learning_rate=s.ft_lr,
        batch_size=s.ft_batch_size,
        max_length=s.max_length,
        seed=s.seed,
        lora=s.lora,
        bf16=s.bf16,
    )
    ft.model.save_pretrained(path)
    meta.write_text(json.dumps({"seconds": ft.wall_time}))
    return ft.model, ft.wall_time


def slice_layout(setting: Any, bench: Any) -> dict[str, Any]:
    """Where the pipeline S3T runner's default layout (its defaults + the setting's overrides) puts the data: QA per
    slice, the slices of the forget split's authors and of the general-knowledge groups, the sequences, and the
    longest prefix that survives deleting the forget split (no training)."""
    from hf_unlearn.methods.s3t import S3TConfig
    from hf_unlearn.methods.s3t.bookkeeping import assign_uid, placement_keys
    from hf_unlearn.pipeline import builtin_runners

    cfg = S3TConfig(**{**builtin_runners()["s3t"].defaults, **setting.method_overrides.get("s3t", {})})
    full = bench["full"]

    def keys(ds: Any) -> list[str]:
        groups = ds[cfg.group_column] if cfg.group_column else None
        return placement_keys(ds["uid"], groups, cfg.ungrouped_values)

    full_keys = keys(full)
    slice_of = {g: assign_uid(g, cfg.n_shards, cfg.n_slices, cfg.seed) for g in set(full_keys)}
    per_slice: dict[str, int] = {}
    for g in full_keys:
        key = f"shard {slice_of[g][0]} slice {slice_of[g][1]}"
        per_slice[key] = per_slice.get(key, 0) + 1
    forget_groups = sorted(set(keys(bench[setting.forget_split])))
    general_splits = [x for x in ("world_facts", "real_authors") if x in bench]
    general: dict[str, int] = {}  # "shard j slice i" -> general-knowledge QA placed there
    for g in (g for x in general_splits for g in keys(bench[x])):
        key = f"shard {slice_of[g][0]} slice {slice_of[g][1]}"
        general[key] = general.get(key, 0) + 1
    cut = {slice_of[g] for g in forget_groups}
    served = {}
    for shard in range(cfg.n_shards):
        best: list[int] = []
        for seq in cfg.sequences_for(shard, cfg.seed):
            prefix = []
            for sl in seq:
                if (shard, sl) in cut:
                    break
                prefix.append(sl)
            best = prefix if len(prefix) > len(best) else best
        served[str(shard)] = best
    served_qa = sum(1 for g in full_keys if slice_of[g][1] in served[str(slice_of[g][0])])
    return {
        "n_shards": cfg.n_shards,
        "n_slices": cfg.n_slices,
        "group_column": cfg.group_column,
        "ungrouped_values": cfg.ungrouped_values,
        "qa_per_slice": dict(sorted(per_slice.items())),
        "forget_groups": {g: list(slice_of[g]) for g in forget_groups},
        "general_knowledge_qa_per_slice": dict(sorted(general.items())),
        "sequences": {str(j): cfg.sequences_for(j, cfg.seed) for j in range(cfg.n_shards)},
        "served_prefix_after_deletion": served,
        "qa_in_served_slices": served_qa,
        "n_full": len(full),
    }


def lora_reference(setting: Any, base: Any, tok: Any, bench: Any, lora: dict[str, Any]) -> dict[str, Any]:
    """A plain LoRA fine-tune with the target's recipe (epochs, lr, batch) and S3T's LoRA config on every block:
    what LoRA itself reaches on this base, without S3T's slicing."""
    from hf_unlearn.training import finetune

    s = setting
    ft = finetune(
        copy.deepcopy(base),
        tok,
        bench["full"],
        num_epochs=s.ft_epochs,
        learning_rate=s.ft_lr,
        batch_size=s.ft_batch_size,
        max_length=s.max_length,
        seed=s.seed,
        lora=lora,
    )
    return {"lora": lora, "epochs": s.ft_epochs, **utility_row(ft.model, tok, bench, s), "seconds": ft.wall_time}


def target_row(target: Any, tok: Any, bench: Any, setting: Any, seconds: float, workdir: Path) -> dict[str, Any]:
    """The target's utility row (cached beside the cached target: the same model gives the same numbers)."""
    path = workdir / f"target-{setting.name}" / "utility.json"
    if path.exists():
        return json.loads(path.read_text())
    row = {**utility_row(target, tok, bench, setting), "seconds": seconds}
    path.write_text(json.dumps(row))
    return row


def run_recipe(
    name: str,
    overrides: dict[str, Any],
    setting: Any,
    base: Any,
    tok: Any,
    bench: Any,
    retrain: bool,
    probe: list[int] | None = None,
):
    """Train S3T with the pipeline's runner and ``overrides``, evaluate before / after deletion (/ after retrain).

    ``probe``: train only this one slice order (``sequences=[probe]``). A stage is a pure function of the base, its
    prefix and its data, so when ``probe`` is the sequence the full system serves after the deletion, the served
    model after deletion is the full system's, at about a quarter of its training cost (B = 4); "before" is then
    that one sequence's full chain.
    """
    from hf_unlearn.pipeline import Context, builtin_runners, s3t_retrained

    if probe:
        overrides = {**overrides, "sequences": [probe]}
    s = replace(setting, method_overrides={**setting.method_overrides, "s3t": overrides})
    ctx = Context(setting=s, bench=bench, tokenizer=tok, base_model=base)
    ctx.split = s.forget_split
    res = builtin_runners()["s3t"].run(ctx)  # trains (cached in ctx.cache["s3t"]) then deletes the forget split
    trained, train_seconds = ctx.cache["s3t"]
    cfg = trained.config_s3t
    row: dict[str, Any] = {
        "recipe": name,
        "overrides": overrides,
        "config": {
            k: getattr(cfg, k)
            for k in ("n_shards", "n_slices", "budget", "num_epochs", "learning_rate", "lora", "group_column")
        },
        "layers_per_slice": trained.state["layers_per_slice"],
        "n_stages": len(trained.trainings),
        "train_seconds": train_seconds,
        "before": utility_row(trained, tok, bench, s),
    }
    before = row["before"]["model_utility"]
    print(f"[{name}] trained in {train_seconds:.1f}s; before deletion: {before:.3f}", flush=True)
    served = {str(k): v for k, v in res.model.served_prefix_lengths().items()}
    # every shard dead (possible with --probe: the one probed order can be cut at its first slice): nothing to serve
    live = any(served.values())
    row["after"] = {
        **(utility_row(res.model, tok, bench, s) if live else {"model_utility": None, "retain_nll": None}),
        "served_prefix_lengths": served,
        "delete_seconds": res.timings.get("delete"),
    }
    print(f"[{name}] after deleting {s.forget_split}: {row['after']['model_utility']} (served {served})", flush=True)
    if retrain:
        rt = s3t_retrained(res, ctx)
        row["retrained"] = {**utility_row(rt.model, tok, bench, s), "retrain_seconds": rt.details["retrain_seconds"]}
        print(f"[{name}] after retrain(): {row['retrained']['model_utility']:.3f}", flush=True)
    return row


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(report: dict[str, Any]) -> str:
    t = report["target"]
    ratio = 0.8 * t["model_utility"]
    lines = [
        "# S3T stage recipe on the pretrained tiny base",
        "",
        f"Printed by `python benchmarks/s3t_demo_recipe.py {' '.join(report['argv'])}` (torch {report['torch']}, "
        f"CPU, {report['threads']} thread, seed {report['seed']}; one run, one seed). Setting `{report['setting']}`: "
        f"{report['n_full']} training QA, forget split {report['forget_split']} ({report['n_forget']} QA), tiny "
        f"Llama {report['model']}, pretrained base `hf_unlearn.pretrained_tiny_lm`. Target: full fine-tune, "
        f"{report['ft_epochs']} epochs, lr {report['ft_lr']}, {t['seconds']:.1f} s. Runs shared 2 CPU cores with "
        "other jobs (niced): wall times are upper bounds.",
        "",
        f"Target model utility {t['model_utility']:.3f} (0.8x = {ratio:.3f}), retain NLL {t['retain_nll']:.3f}.",
        "",
    ]
    lr = report.get("lora_reference")
    if lr:
        lines += [
            f"Plain LoRA fine-tune (the target's recipe, LoRA {lr['lora']} on every block, {lr['epochs']} epochs, "
            f"{lr['seconds']:.1f} s): model utility {lr['model_utility']:.3f}, retain NLL {lr['retain_nll']:.3f}.",
            "",
        ]
    lines += [
        "| recipe | overrides | stages | S3T train s | utility before | retain NLL before | utility after "
        f"{report['forget_split']} | retain NLL after | served prefix | utility after retrain() |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["recipes"]:
        rt = r.get("retrained")
        lines.append(
            f"| {r['recipe']} | `{json.dumps(r['overrides'])}` | {r['n_stages']} | {r['train_seconds']:.1f} | "
            f"{r['before']['model_utility']:.3f} | {r['before']['retain_nll']:.3f} | "
            f"{_num(r['after']['model_utility'])} | {_num(r['after']['retain_nll'])} | "
            f"{r['after']['served_prefix_lengths']} | {'-' if rt is None else format(rt['model_utility'], '.3f')} |"
        )
    lines += ["", "Utility components (retain / real authors / world facts x probability, ROUGE-L, truth ratio):", ""]
    keys = list(t["components"])
    lines.append("| model | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---|" * len(keys))
    lines.append("| target | " + " | ".join(f"{t['components'][k]:.3f}" for k in keys) + " |")
    if lr:
        lines.append("| plain LoRA | " + " | ".join(f"{lr['components'][k]:.3f}" for k in keys) + " |")
    for r in report["recipes"]:
        for phase in ("before", "after", "retrained"):
            if phase in r and "components" in r[phase]:
                c = r[phase]["components"]
                cells = " | ".join(f"{c.get(k, float('nan')):.3f}" for k in keys)
                lines.append(f"| {r['recipe']} {phase} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="demo")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated names from {list(RECIPES)}")
    p.add_argument("--retrain", action="store_true", help="also evaluate after retrain() (costs a retraining)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layout-only", action="store_true", help="only print where the data sits (slices, deletion)")
    p.add_argument(
        "--lora-reference",
        action="store_true",
        help="also fine-tune a plain LoRA model (target recipe, S3T's LoRA r16 / alpha 32 on every block)",
    )
    p.add_argument(
        "--probe",
        default="",
        help="train only this slice order, e.g. 2,3,0,1 (the chain the demo serves after deleting forget10)",
    )
    p.add_argument("--workdir", default="/tmp/s3t_demo_recipe", help="caches the target fine-tune")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.pipeline import SETTINGS, pretrained_base

    names = [x for x in args.recipes.split(",") if x]
    unknown = [x for x in names if x not in RECIPES]
    if unknown:
        raise KeyError(f"unknown recipes {unknown}; choose from {list(RECIPES)}")
    s = SETTINGS[args.setting]
    bench = build(n_authors=s.n_authors, seed=s.seed, qa_per_author=s.qa_per_author)
    base, tok = pretrained_base(s)
    layout = slice_layout(s, bench)
    if args.layout_only:
        layouts = {
            name: slice_layout(replace(s, method_overrides={**s.method_overrides, "s3t": RECIPES[name]}), bench)
            for name in names
        }
        print(json.dumps({"setting": layout, "recipes": layouts}, indent=1))
        if args.out:
            Path(args.out + ".json").write_text(
                json.dumps({"setting": s.name, "layout": layout, "recipes": layouts}, indent=2)
            )
        return {"layout": layout, "recipes": layouts}
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    target, target_s = load_target(s, base, tok, bench, workdir)
    report: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "torch": torch.__version__,
        "threads": args.threads,
        "seed": s.seed,
        "setting": s.name,
        "setting_s3t_overrides": s.method_overrides.get("s3t"),
        "forget_split": s.forget_split,
        "n_full": len(bench["full"]),
        "n_forget": len(bench[s.forget_split]),
        "model": f"{s.num_layers} blocks x {s.hidden_size}",
        "ft_epochs": s.ft_epochs,
        "ft_lr": s.ft_lr,
        "layout": layout,
        "target": target_row(target, tok, bench, s, target_s, workdir),
        "recipes": [],
    }
    print(f"S3T layout of the setting: {json.dumps(report['layout'])}", flush=True)
    print(f"target utility {report['target']['model_utility']:.3f}", flush=True)
    if args.lora_reference:
        report["lora_reference"] = lora_reference(s, base, tok, bench, {"r": 16, "lora_alpha": 32})
        print(f"plain LoRA utility {report['lora_reference']['model_utility']:.3f}", flush=True)
    for name in names:
        probe = [int(x) for x in args.probe.split(",")] if args.probe else None
        report["recipes"].append(run_recipe(name, RECIPES[name], s, base, tok, bench, args.retrain, probe))
        if args.out:
            Path(args.out + ".json").write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    print(md)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(report, indent=2, default=str))
        Path(args.out + ".md").write_text(md)
    return report


if __name__ == "__main__":
    main()
