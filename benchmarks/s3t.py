"""S3T benchmark: deletion latency vs SISA shard retraining, training cost, utility, deletion capacity.

Measures, in one run on the same machine:

1. deletion latency (median and p99 over ``--requests`` single-uid requests) of a trained S3T model, against the
   time to retrain one shard of the SISA baseline (S3T with B = 1: a deletion in its first slice retrains it all);
2. the training cost of S3T with B sequences per shard, with and without hidden-state caching, relative to one
   plain LoRA fine-tune on the same data (wall time and example-passes), and the max |difference| of the logits;
   ensemble inference time with the shared lower blocks vs every shard run in full; retrain() peak memory
   (in place on the shared model vs on a deep copy);
3. utility: mean answer NLL on the training questions and ROUGE-L of greedy answers, S3T vs the plain LoRA model;
4. deletion capacity (simulation of the official ``deletion.py`` logic): deletions until every shard fails vs B,
   for cyclic and BMS sequences, with the SISA baseline; plotted.

Writes ``benchmarks/results/s3t.json``, ``s3t.md`` and ``s3t_capacity.png``.

Usage:
    python benchmarks/s3t.py                      # small CPU setting (a few minutes on 2 cores)
    python benchmarks/s3t.py --requests 1000 --n-authors 20 --shards 2 --slices 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_unlearn.data import collator_for, load_examples, tokenize_any  # noqa: E402
from hf_unlearn.methods.s3t import S3TConfig, S3TModel, capacity_curve, plot_capacity, simulate_sisa  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.training import finetune  # noqa: E402
from hf_unlearn.training.losses import sequence_nll  # noqa: E402


def benchmark_data(n_authors: int, seed: int):
    """The embedded fictitious-authors benchmark (``full`` split), or a small synthetic QA set if it is absent."""
    try:
        from hf_unlearn.benchmarks.fictitious_authors import build

        dd = build(n_authors=n_authors, seed=seed)
        return load_examples(dd["full"]), "fictitious_authors"
    except ImportError:
        rng = random.Random(seed)
        cities = ["Varo", "Meltz", "Quorin", "Addis Pel", "Tiranu", "Oskova", "Belmere", "Crast"]
        genres = ["mystery", "poetry", "science fiction", "history", "romance", "fantasy"]
        rows = []
        for a in range(n_authors):
            name = f"Author{a} {rng.choice(['Kell', 'Vorn', 'Lisk', 'Amar', 'Tove'])}"
            facts = {
                "Where was {n} born?": f"{name} was born in {rng.choice(cities)}.",
                "What genre does {n} write?": f"{name} writes {rng.choice(genres)}.",
                "When was {n} born?": f"{name} was born in {rng.randint(1900, 2000)}.",
                "What is {n}'s best-known book?": f"{name} is best known for 'The {rng.choice(cities)} Files'.",
            }
            for i, (q, ans) in enumerate(facts.items()):
                rows.append({"uid": f"a{a:03d}_q{i}", "question": q.format(n=name), "answer": ans})
        return load_examples(rows), "synthetic (fictitious_authors not installed)"


@torch.no_grad()
def utility(model, tok, ds, max_length: int, n_generate: int) -> dict[str, float]:
    """Mean answer NLL over ``ds`` and ROUGE-L recall of greedy answers on its first ``n_generate`` questions."""
    from rouge_score import rouge_scorer

    model.eval()
    tokd = tokenize_any(ds, tok, max_length=max_length)
    coll = collator_for(tok)
    nll = []
    for i in range(0, len(tokd), 32):
        batch = coll([tokd[j] for j in range(i, min(i + 32, len(tokd)))])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll += sequence_nll(logits, batch["labels"]).tolist()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    recalls = []
    for ex in ds.select(range(min(n_generate, len(ds)))):
        prompt = f"Question: {ex['question']}\nAnswer:"
        x = tok([prompt], return_tensors="pt")
        out = model.generate(**x, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, x["input_ids"].shape[1] :], skip_special_tokens=True)
        recalls.append(scorer.score(ex["answer"], text)["rougeL"].recall)
    return {"answer_nll": statistics.fmean(nll), "rougeL_recall": statistics.fmean(recalls)}


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


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
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--n-generate", type=int, default=40)
    p.add_argument("--sim-trials", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--infer-reps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ds, source = benchmark_data(args.n_authors, args.seed)
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(ds["question"], ds["answer"])]
    make_base = lambda: tiny_causal_lm(  # noqa: E731
        "llama", texts=texts, num_layers=args.layers, hidden_size=args.hidden, vocab_size=600, seed=args.seed
    )
    lora = {"r": args.lora_r, "lora_alpha": 2 * args.lora_r}
    common = dict(num_epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size, max_length=64)
    res: dict = {"setting": {**vars(args), "data": source, "n_examples": len(ds)}}

    # --- plain LoRA fine-tune (all layers, one adapter): the cost and utility reference
    base, tok = make_base()
    t0 = time.perf_counter()
    plain = finetune(base, tok, ds, lora=lora, seed=args.seed, **common)
    res["plain_lora"] = {"seconds": time.perf_counter() - t0, "example_passes": len(ds) * args.epochs}
    res["plain_lora"].update(utility(plain.model, tok, ds, 64, args.n_generate))

    # --- S3T with B sequences per shard
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
    base, tok = make_base()
    t0 = time.perf_counter()
    s3t = S3TModel.from_training(base, tok, ds, cfg)
    s3t_sec = time.perf_counter() - t0
    passes = sum(r["n_examples"] for r in s3t.trainings) * args.epochs
    res["s3t"] = {
        "seconds": s3t_sec,
        "stages_trained": len(s3t.trainings),
        "example_passes": passes,
        "cost_vs_plain_time": s3t_sec / res["plain_lora"]["seconds"],
        "cost_vs_plain_passes": passes / res["plain_lora"]["example_passes"],
    }
    res["s3t"].update(utility(s3t, tok, ds, 64, args.n_generate))

    # --- the same S3T training with hidden-state caching
    base_c, _ = make_base()
    t0 = time.perf_counter()
    s3t_cached = S3TModel.from_training(base_c, tok, ds, S3TConfig(**{**cfg.__dict__, "cache_hidden_states": True}))
    cached_sec = time.perf_counter() - t0
    probe = tok([f"Question: {q}\nAnswer:" for q in ds["question"][:32]], return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (s3t_cached(**probe).logits - s3t(**probe).logits).abs().max().item()
    res["s3t_cached"] = {
        "seconds": cached_sec,
        "cost_vs_plain_time": cached_sec / res["plain_lora"]["seconds"],
        "speedup_vs_uncached": s3t_sec / cached_sec,
        "max_abs_logit_diff_vs_uncached": diff,
        "stages_cached": sum(r["cached"] for r in s3t_cached.trainings),
    }
    del s3t_cached, base_c

    # --- ensemble inference (m live shards): shared lower blocks vs every shard in full
    def ensemble_timing(model) -> dict:
        with torch.no_grad():
            same = torch.equal(model(**probe).logits, model(**probe, share=False).logits)
            times = {}
            for share in (False, True):
                model(**probe, share=share)  # warm-up
                t0 = time.perf_counter()
                for _ in range(args.infer_reps):
                    model(**probe, share=share)
                times[share] = (time.perf_counter() - t0) / args.infer_reps
        return {
            "shared_start_block": model.shared_start(),
            "naive_ms": 1e3 * times[False],
            "shared_ms": 1e3 * times[True],
            "speedup": times[False] / times[True],
            "bitwise_equal": same,
        }

    res["ensemble_inference"] = ensemble_timing(s3t)

    # --- deletion latency over single-uid requests (restore a pristine copy, untimed, when all shards are dead)
    pristine = copy.deepcopy(s3t)
    rng = random.Random(args.seed)
    uids = list(ds["uid"])
    lat, restores, work = [], 0, copy.deepcopy(pristine)
    order = []
    while len(lat) < args.requests:
        if not order:
            order = rng.sample(uids, len(uids))
        uid = order.pop()
        t0 = time.perf_counter()
        rep = work.delete([uid])
        lat.append(time.perf_counter() - t0)
        if not rep["live_shards"]:
            work, restores, order = copy.deepcopy(pristine), restores + 1, []
    res["deletion"] = {
        "requests": len(lat),
        "median_ms": 1e3 * statistics.median(lat),
        "p99_ms": 1e3 * percentile(lat, 99),
        "max_ms": 1e3 * max(lat),
        "system_restores": restores,
    }

    # --- SISA (B = 1): a deletion in the first slice of a shard retrains the whole shard
    base, tok = make_base()
    sisa = S3TModel.from_training(base, tok, ds, S3TConfig(**{**cfg.__dict__, "budget": 1, "strategy": "cyclic"}))
    first_slice = sisa.state["shards"]["0"]["sequences"][0][0]
    victim = sorted(u for u, (j, s) in sisa.state["assignment"].items() if (j, s) == (0, first_slice))[0]
    rep = sisa.delete([victim])
    t0 = time.perf_counter()
    sisa.retrain()
    shard_retrain = time.perf_counter() - t0
    res["sisa"] = {
        "train_seconds": sum(r["seconds"] for r in sisa.trainings[: len(sisa.trainings) - args.slices]),
        "shard_retrain_seconds": shard_retrain,
        "stages_retrained": args.slices,
        "deletion_killed_shard": rep["dead_shards"] == [0],
    }
    res["deletion"]["speedup_vs_sisa_shard_retrain"] = shard_retrain / (res["deletion"]["median_ms"] / 1e3)

    # --- S3T after deletions: utility of the served prefix models, then after retrain()
    k = max(1, len(ds) // 20)
    gone = rng.sample(uids, k)
    s3t.delete(gone)
    kept = ds.filter(lambda ex: ex["uid"] not in set(gone))
    res["s3t_after_5pct_deletions"] = {
        "served_prefix_lengths": s3t.served_prefix_lengths(),
        **utility(s3t, tok, kept, 64, args.n_generate),
    }
    res["ensemble_inference_after_deletions"] = ensemble_timing(s3t)
    from hf_unlearn.utils.profiling import measure

    model_mib = sum(p.numel() * p.element_size() for p in s3t.parameters()) / 2**20
    by_copy = copy.deepcopy(s3t)
    by_copy.config_s3t = copy.deepcopy(by_copy.config_s3t)
    by_copy.config_s3t.retrain_copy = True
    with measure() as m_copy:
        by_copy.retrain()
    with measure() as m_shared:
        s3t.retrain()
    with torch.no_grad():
        same = torch.equal(s3t(**probe).logits, by_copy(**probe).logits)
    del by_copy
    res["retrain_memory"] = {
        "model_param_mib": model_mib,
        "copy_delta_rss_mib": m_copy.peak_mib - m_copy.start_mib,
        "shared_delta_rss_mib": m_shared.peak_mib - m_shared.start_mib,
        "copy_seconds": m_copy.seconds,
        "shared_seconds": m_shared.seconds,
        "same_adapters": same,
    }
    res["s3t_after_retrain"] = {
        "retrain_seconds": m_shared.seconds,
        "served_prefix_lengths": s3t.served_prefix_lengths(),
        **utility(s3t, tok, kept, 64, args.n_generate),
    }

    # --- deletion capacity simulation (official deletion.py logic), m=5, L=6 as in the official script
    budgets = list(range(1, 7))
    curves = {s: capacity_curve(5, 6, budgets, s, args.sim_trials, args.seed) for s in ("cyclic", "bms")}
    res["capacity_m5_L6"] = {
        **curves,
        "sisa": dict(zip(("mean", "std"), simulate_sisa(5, 6, args.sim_trials, args.seed))),
    }
    plot_capacity(curves, str(out / "s3t_capacity.png"), "S3T deletion capacity (m=5, L=6, uniform deletions)")

    (out / "s3t.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "s3t.md").write_text(markdown(res))
    print(markdown(res))
    return res


def markdown(r: dict) -> str:
    s, d, pl, sisa = r["s3t"], r["deletion"], r["plain_lora"], r["sisa"]
    st = r["setting"]
    lines = [
        "# S3T benchmark",
        "",
        f"Data: {st['data']}, {st['n_examples']} examples; tiny Llama {st['layers']} blocks x {st['hidden']}; "
        f"m={st['shards']} shards, L={st['slices']} slices, B={st['budget']} ({st['strategy']}); "
        f"{st['epochs']} epochs per stage, lr {st['lr']}, LoRA r {st['lora_r']}; CPU, {st['threads']} thread(s).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| deletion latency, median / p99 / max ({d['requests']} requests) | {d['median_ms']:.2f} / "
        f"{d['p99_ms']:.2f} / {d['max_ms']:.2f} ms |",
        f"| SISA: retrain one shard after a first-slice deletion | {sisa['shard_retrain_seconds']:.1f} s |",
        f"| speed-up of S3T deletion vs SISA shard retraining | {d['speedup_vs_sisa_shard_retrain']:.0f}x |",
        f"| plain LoRA fine-tune | {pl['seconds']:.1f} s, {pl['example_passes']:.0f} example-passes |",
        f"| S3T training ({s['stages_trained']} stages) | {s['seconds']:.1f} s ({s['cost_vs_plain_time']:.1f}x), "
        f"{s['example_passes']:.0f} example-passes ({s['cost_vs_plain_passes']:.1f}x) |",
        f"| S3T training with `cache_hidden_states` | {r['s3t_cached']['seconds']:.1f} s "
        f"({r['s3t_cached']['cost_vs_plain_time']:.1f}x plain; {r['s3t_cached']['speedup_vs_uncached']:.2f}x faster "
        f"than uncached; max logit diff {r['s3t_cached']['max_abs_logit_diff_vs_uncached']:.1e}) |",
    ]
    for key, label in (("ensemble_inference", "trained"), ("ensemble_inference_after_deletions", "after deletions")):
        e = r[key]
        lines.append(
            f"| ensemble forward ({label}; shared below block {e['shared_start_block']}), naive / shared | "
            f"{e['naive_ms']:.1f} / {e['shared_ms']:.1f} ms ({e['speedup']:.2f}x, bitwise equal: "
            f"{e['bitwise_equal']}) |"
        )
    rm = r["retrain_memory"]
    lines += [
        f"| retrain() RSS growth: deep copy / in place (model params {rm['model_param_mib']:.2f} MiB) | "
        f"{rm['copy_delta_rss_mib']:.1f} / {rm['shared_delta_rss_mib']:.1f} MiB "
        f"({rm['copy_seconds']:.1f} s / {rm['shared_seconds']:.1f} s; same adapters: {rm['same_adapters']}) |",
        f"| answer NLL: plain LoRA / S3T | {pl['answer_nll']:.3f} / {s['answer_nll']:.3f} |",
        f"| ROUGE-L recall: plain LoRA / S3T | {pl['rougeL_recall']:.3f} / {s['rougeL_recall']:.3f} |",
    ]
    a, b = r["s3t_after_5pct_deletions"], r["s3t_after_retrain"]
    lines += [
        f"| S3T after deleting 5% (prefixes {a['served_prefix_lengths']}): NLL / ROUGE-L | "
        f"{a['answer_nll']:.3f} / {a['rougeL_recall']:.3f} |",
        f"| S3T after retrain() ({b['retrain_seconds']:.1f} s, prefixes {b['served_prefix_lengths']}): "
        f"NLL / ROUGE-L | {b['answer_nll']:.3f} / {b['rougeL_recall']:.3f} |",
        "",
        "Deletion capacity (m=5, L=6, uniform random deletions until every shard fails; mean ± std):",
        "",
        "| B | cyclic | bms |",
        "|---|---|---|",
    ]
    cap = r["capacity_m5_L6"]
    for i, bb in enumerate(cap["cyclic"]["budget"]):
        lines.append(
            f"| {bb} | {cap['cyclic']['mean'][i]:.1f} ± {cap['cyclic']['std'][i]:.1f} | "
            f"{cap['bms']['mean'][i]:.1f} ± {cap['bms']['std'][i]:.1f} |"
        )
    lines.append(f"| SISA | {cap['sisa']['mean']:.1f} ± {cap['sisa']['std']:.1f} | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
