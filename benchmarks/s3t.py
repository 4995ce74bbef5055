"""S3T benchmark: deletion latency, training cost against its own ideal, honest cost/utility after k deletions.

Measures, in one run on the same machine (CPU, one thread by default):

1. training: a plain LoRA fine-tune (all blocks, one adapter) as the reference; S3T with B sequences per shard
   without and with ``cache_hidden_states``; per stage, the measured wall time next to the ideal (the stage's
   steps times the time of one bare forward+backward+AdamW step on the same batch, no Trainer), and the block-pass
   cost model of docs/methods/s3t.md;
2. deletion latency over ``--requests`` single-uid requests, p50/p99/max, for all requests and for those that cut
   adapters, in memory and bound to a folder (persisting the inventory: its cost reported separately);
3. an honest comparison after k uniformly random deletions (k in ``--ks``): cost and served utility (mean answer
   NLL on the surviving examples, teacher-forced) of S3T (bookkeeping only, serving shorter prefixes), S3T followed
   by ``retrain()``, SISA-style shard retraining (B = 1: the hit shards are retrained from the hit slice on) and
   full retraining (a plain LoRA fine-tune on the survivors);
4. deletion capacity (simulation of the official ``deletion.py`` logic, m = 5, L = 6): cyclic, the official BMS
   (``bms(L)[:B]``), our ``bms_budget``, and SISA.

Writes ``benchmarks/results/s3t.json``, ``s3t.md`` and ``s3t_capacity.png``.

Usage:
    python benchmarks/s3t.py                      # the committed run (about 5 minutes on one CPU thread)
    python benchmarks/s3t.py --epochs 1 --ks 1,4 --requests 200   # quicker
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_unlearn.data import collator_for, load_examples, model_batches, tokenize_any  # noqa: E402
from hf_unlearn.methods.s3t import S3TConfig, S3TModel, capacity_curve, plot_capacity, simulate_sisa  # noqa: E402
from hf_unlearn.methods.s3t.stages import _from_block  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.training import finetune  # noqa: E402
from hf_unlearn.training.losses import sequence_nll  # noqa: E402


def benchmark_data(n_authors: int, seed: int):
    """The embedded fictitious-authors benchmark (``full`` split)."""
    from hf_unlearn.benchmarks.fictitious_authors import build

    return load_examples(build(n_authors=n_authors, seed=seed)["full"]), "fictitious_authors"


@torch.no_grad()
def answer_nll(model, tok, ds, max_length: int = 64) -> float | None:
    """Mean answer NLL (teacher-forced) over ``ds``; None when the model cannot serve (every S3T shard dead)."""
    if hasattr(model, "served") and not model.served():
        return None
    model.eval()
    nll = []
    for _, batch in model_batches(model, tok, ds, batch_size=32, max_length=max_length):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll += sequence_nll(logits, batch["labels"]).tolist()
    return statistics.fmean(nll)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def lat_stats(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "p50_ms": 1e3 * statistics.median(xs),
        "p99_ms": 1e3 * percentile(xs, 99),
        "max_ms": 1e3 * max(xs),
    }


# ---------------------------------------------------------------------------------------------- training cost
def stage_passes(t: int, k: int, n_blocks: int, cached: bool) -> int:
    """Block passes per example of stage t (forward = 1, backward of a frozen-base LoRA block = 1; head excluded).

    Uncached: forward through all N blocks, backward through the top t*k blocks (the trained group and the groups
    above it; nothing below has a trainable parameter). Cached: forward and backward through the top t*k blocks.
    A plain LoRA fine-tune costs 2N.
    """
    return 2 * t * k if cached else n_blocks + t * k


def bare_step_seconds(s3t: S3TModel, record: dict, ds, tok, batch_size: int, cached: bool, reps: int) -> float:
    """Time of one bare training step of a stage (forward, backward, AdamW; no Trainer, lock or re-activation)."""
    work = copy.deepcopy(s3t)
    name, shard, prefix = record["adapter"], record["shard"], record["prefix"]
    chain = next(c for c in work.state["shards"][str(shard)]["chains"] if name in c)
    chain = chain[: chain.index(name) + 1]
    work._activate(chain, inference_mode=False)
    params = [p for n, p in work.peft_model.named_parameters() if f".{name}." in n]
    work._freeze_all_but(name)
    rows = work._stage_data(ds, shard, prefix, set())[:batch_size]
    tokd = tokenize_any(ds.select(rows), tok, max_length=64)
    batch = collator_for(tok)([tokd[i] for i in range(len(tokd))])
    uids = batch.pop("uid", None) or [tokd[i]["uid"] for i in range(len(tokd))]
    start = min(work.state["adapters"][name]["blocks"])
    hidden = None
    if cached and start > 0:
        cache = work._build_cache(ds, shard, [start])
        mask = batch["attention_mask"].bool()
        states = [cache[u][start] for u in uids]
        hidden = torch.zeros(*mask.shape, states[0].shape[-1], dtype=states[0].dtype)
        hidden[mask] = torch.cat(states)
    opt = torch.optim.AdamW(params, lr=1e-4)
    work.peft_model.train()
    times = []
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        if hidden is not None:
            with _from_block(work.peft_model, start, hidden):
                loss = work.peft_model(**inputs).loss
        else:
            loss = work.peft_model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def training_section(args, ds, tok, make_base, cfg, common, lora, res) -> S3TModel:
    base, _ = make_base()
    t0 = time.perf_counter()
    plain = finetune(base, tok, ds, lora=lora, seed=args.seed, **common)
    res["plain_lora"] = {
        "seconds": time.perf_counter() - t0,
        "example_passes": len(ds) * args.epochs,
        "block_passes_per_example": 2 * args.layers,
        "answer_nll": answer_nll(plain.model, tok, ds),
    }
    runs = {}
    for cached in (False, True):
        base, _ = make_base()
        t0 = time.perf_counter()
        model = S3TModel.from_training(base, tok, ds, S3TConfig(**{**cfg.__dict__, "cache_hidden_states": cached}))
        runs[cached] = (model, time.perf_counter() - t0)
    s3t, sec = runs[False]
    s3t_c, sec_c = runs[True]
    probe = tok([f"Question: {q}\nAnswer:" for q in ds["question"][:32]], return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (s3t_c(**probe).logits - s3t(**probe).logits).abs().max().item()
    k, n = args.layers_per_slice, args.layers
    stages = []
    for rec, rec_c in zip(s3t.trainings, s3t_c.trainings):
        t = len(rec["prefix"])
        bare = bare_step_seconds(s3t, rec, ds, tok, args.batch_size, False, args.bare_reps)
        bare_c = bare_step_seconds(s3t_c, rec_c, ds, tok, args.batch_size, True, args.bare_reps)
        stages.append(
            {
                "adapter": rec["adapter"],
                "prefix": rec["prefix"],
                "n_examples": rec["n_examples"],
                "steps": rec["steps"],
                "block_passes": stage_passes(t, k, n, False),
                "block_passes_cached": stage_passes(t, k, n, True),
                "measured_s": rec["seconds"],
                "ideal_s": rec["steps"] * bare,
                "measured_cached_s": rec_c["seconds"],
                "ideal_cached_s": rec_c["steps"] * bare_c,
            }
        )
    passes = sum(r["n_examples"] for r in s3t.trainings) * args.epochs
    res["s3t"] = {
        "seconds": sec,
        "stages_trained": len(s3t.trainings),
        "example_passes": passes,
        "cost_vs_plain_time": sec / res["plain_lora"]["seconds"],
        "cost_vs_plain_passes": passes / res["plain_lora"]["example_passes"],
        "ideal_seconds": sum(s["ideal_s"] for s in stages),
        "answer_nll": answer_nll(s3t, tok, ds),
    }
    res["s3t_cached"] = {
        "seconds": sec_c,
        "cost_vs_plain_time": sec_c / res["plain_lora"]["seconds"],
        "speedup_vs_uncached": sec / sec_c,
        "ideal_seconds": sum(s["ideal_cached_s"] for s in stages),
        "stage_seconds": sum(r["seconds"] for r in s3t_c.trainings),
        "max_abs_logit_diff_vs_uncached": diff,
    }
    res["stages"] = stages
    return s3t


# ---------------------------------------------------------------------------------------------- deletion latency
def latency_section(args, s3t: S3TModel, uids: list[str], res) -> None:
    out = {}
    for bound in (False, True):
        pristine = copy.deepcopy(s3t)
        folder = tempfile.mkdtemp(prefix="s3t_bench_") if bound else None
        if bound:
            pristine.save_pretrained(folder)

        def fresh(pristine=pristine, folder=folder):
            m = copy.deepcopy(pristine)
            if folder is not None:
                m.save_pretrained(folder)  # the folder describes the restored system again (untimed)
            return m

        rng = random.Random(args.seed)
        lat, lat_cut, persist, restores, order = [], [], [], 0, []
        work = fresh()
        while len(lat) < args.requests:
            if not order:
                order = rng.sample(uids, len(uids))
            uid = order.pop()
            t0 = time.perf_counter()
            rep = work.delete([uid])
            dt = time.perf_counter() - t0
            lat.append(dt)
            persist.append(rep["persist_seconds"])
            if rep["adapters_removed"]:
                lat_cut.append(dt)
            if not rep["live_shards"]:  # untimed: wait for the cleanup, restore the trained system
                work.flush_deletions()
                work, restores, order = fresh(), restores + 1, []
        work.flush_deletions()
        out["bound_to_folder" if bound else "in_memory"] = {
            "all": lat_stats(lat),
            "cutting_adapters": lat_stats(lat_cut),
            "persist_inventory": lat_stats(persist) if bound else None,
            "without_persist": lat_stats([a - b for a, b in zip(lat, persist)]),
            "system_restores": restores,
        }
    res["deletion_latency"] = out


# ---------------------------------------------------------------------------------------------- k deletions
def k_deletions_section(args, s3t, ds, tok, make_base, cfg, common, lora, res) -> None:
    uids = list(ds["uid"])
    base, _ = make_base()
    t0 = time.perf_counter()
    sisa0 = S3TModel.from_training(base, tok, ds, S3TConfig(**{**cfg.__dict__, "budget": 1, "strategy": "cyclic"}))
    sisa_train = time.perf_counter() - t0
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        gone = random.Random(args.seed + k).sample(uids, k)
        gone_set = set(gone)
        kept = ds.filter(lambda ex, g=gone_set: ex["uid"] not in g)
        row = {"k": k}
        # S3T: bookkeeping only, serving the surviving prefixes
        m = copy.deepcopy(s3t)
        t0 = time.perf_counter()
        for u in gone:
            m.delete([u])
        row["s3t_delete_s"] = time.perf_counter() - t0
        row["s3t_prefixes"] = m.served_prefix_lengths()
        row["s3t_nll"] = answer_nll(m, tok, kept)
        # S3T + retrain() once after the k requests
        t0 = time.perf_counter()
        m.retrain()
        row["s3t_retrain_s"] = time.perf_counter() - t0
        row["s3t_retrained_nll"] = answer_nll(m, tok, kept)
        del m
        # SISA-style: B = 1, retrain the hit shards from the hit slice on
        m = copy.deepcopy(sisa0)
        for u in gone:
            m.delete([u])
        row["sisa_prefixes"] = m.served_prefix_lengths()
        t0 = time.perf_counter()
        m.retrain()
        row["sisa_retrain_s"] = time.perf_counter() - t0
        row["sisa_nll"] = answer_nll(m, tok, kept)
        del m
        # full retraining: a plain LoRA fine-tune on the survivors
        base, _ = make_base()
        t0 = time.perf_counter()
        full = finetune(base, tok, kept, lora=lora, seed=args.seed, **common)
        row["full_retrain_s"] = time.perf_counter() - t0
        row["full_nll"] = answer_nll(full.model, tok, kept)
        rows.append(row)
        print(row, flush=True)
    res["k_deletions"] = {"sisa_train_seconds": sisa_train, "rows": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-authors", type=int, default=10)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--slices", type=int, default=3)
    p.add_argument("--budget", type=int, default=3)
    p.add_argument("--strategy", default="cyclic")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--layers-per-slice", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--ks", default="1,8,32", help="numbers of deletions for the cost/utility comparison")
    p.add_argument("--bare-reps", type=int, default=3)
    p.add_argument("--sim-trials", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma list of sections to skip: training,latency,k,capacity")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--name", default="s3t", help="result file stem (e.g. s3t_training for a --skip run)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))

    ds, source = benchmark_data(args.n_authors, args.seed)
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(ds["question"], ds["answer"])]

    def make_base():
        return tiny_causal_lm(
            "llama", texts=texts, num_layers=args.layers, hidden_size=args.hidden, vocab_size=600, seed=args.seed
        )

    _, tok = make_base()
    lora = {"r": args.lora_r, "lora_alpha": 2 * args.lora_r}
    common = dict(num_epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size, max_length=64)
    res: dict = {"setting": {**vars(args), "data": source, "n_examples": len(ds), "torch": torch.__version__}}
    cfg = S3TConfig(
        n_shards=args.shards,
        n_slices=args.slices,
        budget=args.budget,
        strategy=args.strategy,
        layers_per_slice=args.layers_per_slice,
        lora=lora,
        seed=args.seed,
        **common,
    )
    res["setting"]["stage_trainer"] = {
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "warmup_ratio": cfg.warmup_ratio,
    }
    t_all = time.perf_counter()
    if "training" in skip:
        base, _ = make_base()
        s3t = S3TModel.from_training(base, tok, ds, cfg)
    else:
        s3t = training_section(args, ds, tok, make_base, cfg, common, lora, res)
    print(f"training done {time.perf_counter() - t_all:.0f}s", flush=True)
    if "latency" not in skip:
        latency_section(args, s3t, list(ds["uid"]), res)
        print(f"latency done {time.perf_counter() - t_all:.0f}s", flush=True)
    if "k" not in skip:
        k_deletions_section(args, s3t, ds, tok, make_base, cfg, common, lora, res)
    if "capacity" not in skip:
        budgets = list(range(1, 7))
        strategies = ("cyclic", "bms", "bms_budget")
        curves = {s: capacity_curve(5, 6, budgets, s, args.sim_trials, args.seed) for s in strategies}
        res["capacity_m5_L6"] = {
            **curves,
            "sisa": dict(zip(("mean", "std"), simulate_sisa(5, 6, args.sim_trials, args.seed))),
        }
        plot_capacity(curves, str(out / "s3t_capacity.png"), "S3T deletion capacity (m=5, L=6, uniform deletions)")
    res["total_seconds"] = time.perf_counter() - t_all
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=str))
    (out / f"{args.name}.md").write_text(markdown(res))
    print(markdown(res))
    return res


def _f(x, fmt=".3f"):
    return "dead (no model)" if x is None else format(x, fmt)


def markdown(r: dict) -> str:
    st = r["setting"]
    tr = st["stage_trainer"]
    lines = [
        "# S3T benchmark",
        "",
        f"Printed by `python benchmarks/s3t.py` ({st['torch']}, CPU, {st['threads']} thread, seed {st['seed']}). "
        f"Data: {st['data']}, {st['n_examples']} examples; tiny Llama {st['layers']} blocks x {st['hidden']}; "
        f"m={st['shards']} shards, L={st['slices']} slices, k={st['layers_per_slice']} blocks per stage, "
        f"B={st['budget']} ({st['strategy']}); {st['epochs']} epochs per stage, lr {st['lr']}, batch "
        f"{st['batch_size']}, LoRA r {st['lora_r']}; stage Trainer: weight decay {tr['weight_decay']}, max grad "
        f"norm {tr['max_grad_norm']}, warmup ratio {tr['warmup_ratio']}. One run, one seed.",
        "",
    ]
    if "s3t" in r:
        pl, s, c = r["plain_lora"], r["s3t"], r["s3t_cached"]
        lines += [
            "## Training cost",
            "",
            "| run | wall s | vs plain LoRA | ideal s (bare steps) | measured / ideal | answer NLL |",
            "|---|---|---|---|---|---|",
            f"| plain LoRA (all blocks) | {pl['seconds']:.1f} | 1.00x | | | {_f(pl['answer_nll'])} |",
            f"| S3T, {s['stages_trained']} stages | {s['seconds']:.1f} | {s['cost_vs_plain_time']:.2f}x | "
            f"{s['ideal_seconds']:.1f} | {s['seconds'] / s['ideal_seconds']:.2f}x | {_f(s['answer_nll'])} |",
            f"| S3T, `cache_hidden_states` | {c['seconds']:.1f} | {c['cost_vs_plain_time']:.2f}x | "
            f"{c['ideal_seconds']:.1f} | {c['seconds'] / c['ideal_seconds']:.2f}x | (max logit diff "
            f"{c['max_abs_logit_diff_vs_uncached']:.1e}) |",
            "",
            f"Example-passes: plain {pl['example_passes']:.0f}, S3T {s['example_passes']:.0f} "
            f"({s['cost_vs_plain_passes']:.1f}x). Cached / uncached wall time: {1 / c['speedup_vs_uncached']:.2f}.",
            "",
            "Per stage (shard 0 and 1 interleaved as trained; block passes per example: forward 1, backward 1, "
            f"head excluded; plain LoRA = {pl['block_passes_per_example']}):",
            "",
            "| stage | prefix | examples | steps | block passes plain / cached | measured s | ideal s | "
            "measured cached s | ideal cached s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for x in r["stages"]:
            lines.append(
                f"| {x['adapter']} | {x['prefix']} | {x['n_examples']} | {x['steps']} | {x['block_passes']} / "
                f"{x['block_passes_cached']} | {x['measured_s']:.2f} | {x['ideal_s']:.2f} | "
                f"{x['measured_cached_s']:.2f} | {x['ideal_cached_s']:.2f} |"
            )
        lines.append("")
    if "deletion_latency" in r:
        lines += [
            "## Deletion latency (single-uid requests)",
            "",
            "| setting | requests | p50 ms | p99 ms | max ms | cutting requests: n / p99 / max ms | "
            "persist p50 / p99 ms | without persist p99 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, d in r["deletion_latency"].items():
            a, cut, pe, wo = d["all"], d["cutting_adapters"], d["persist_inventory"], d["without_persist"]
            cut_s = f"{cut['n']} / {cut['p99_ms']:.2f} / {cut['max_ms']:.2f}" if cut["n"] else "0"
            pe_s = f"{pe['p50_ms']:.2f} / {pe['p99_ms']:.2f}" if pe else "-"
            lines.append(
                f"| {key} | {a['n']} | {a['p50_ms']:.3f} | {a['p99_ms']:.2f} | {a['max_ms']:.2f} | {cut_s} | "
                f"{pe_s} | {wo['p99_ms']:.2f} |"
            )
        lines.append("")
    if "k_deletions" in r:
        kd = r["k_deletions"]
        lines += [
            "## Cost and served utility after k random deletions",
            "",
            "Utility: mean answer NLL on the surviving examples (lower is better; the trained S3T model and the "
            "plain LoRA model are the references above). S3T serves its surviving prefixes at once; `retrain()`, "
            "SISA and full retraining run once after the k requests. SISA-style: the same S3T code with B = 1 "
            f"(trained in {kd['sisa_train_seconds']:.1f} s), retraining each hit shard from its hit slice on.",
            "",
            "| k | S3T delete s | S3T served prefixes | S3T NLL | S3T retrain s | NLL | SISA prefixes before | "
            "SISA retrain s | NLL | full retrain s | NLL |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for x in kd["rows"]:
            lines.append(
                f"| {x['k']} | {x['s3t_delete_s']:.4f} | {x['s3t_prefixes']} | {_f(x['s3t_nll'])} | "
                f"{x['s3t_retrain_s']:.1f} | {_f(x['s3t_retrained_nll'])} | {x['sisa_prefixes']} | "
                f"{x['sisa_retrain_s']:.1f} | {_f(x['sisa_nll'])} | {x['full_retrain_s']:.1f} | {_f(x['full_nll'])} |"
            )
        lines.append("")
    if "capacity_m5_L6" in r:
        cap = r["capacity_m5_L6"]
        lines += [
            "## Deletion capacity (m=5, L=6, uniform random deletions until every shard fails; mean ± std)",
            "",
            f"{st['sim_trials']} trials per cell. `bms` = the official `bms(L)[:B]`; `bms_budget` = ours.",
            "",
            "| B | cyclic | bms (official) | bms_budget |",
            "|---|---|---|---|",
        ]
        for i, bb in enumerate(cap["cyclic"]["budget"]):
            cells = [f"{cap[s]['mean'][i]:.1f} ± {cap[s]['std'][i]:.1f}" for s in ("cyclic", "bms", "bms_budget")]
            lines.append(f"| {bb} | " + " | ".join(cells) + " |")
        lines.append(f"| SISA | {cap['sisa']['mean']:.1f} ± {cap['sisa']['std']:.1f} | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
