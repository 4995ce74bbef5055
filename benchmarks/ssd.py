"""SSD benchmark: cost of one deletion request with a cached I_D, against one forward+backward pass over F.

Measures, in one run on the same machine (CPU, fixed threads):

1. ``fb_forget``: one forward+backward pass over the forget set (same batch size, eval mode, plain autograd);
2. one full SSD request through ``hf_unlearn.unlearn`` (tokenization, weights hash, cache read, I_F pass, dampening)
   with a warm I_D cache, relative to ``fb_forget`` (target <= 1.5x); the same without the cache (I_D over the whole
   training data every time) and the first, cache-filling request;
3. all of it for ``target="full"`` (a fully fine-tuned model) and ``target="adapter"`` (a LoRA fine-tune);
4. peak memory of a request over the model's own weights (RSS, sampled), next to the size of the two fp32 maps;
5. the opt-in importance variants (per-sample squared gradients, LFSSD) uncached, and the forget/retain answer NLL
   before/after each target, for context.

Writes ``benchmarks/results/ssd.json`` and ``ssd.md``.

``--sequence N`` measures instead a SEQUENCE of N deletion requests on one model (target=full), which is how
requests arrive: the ``--sequence-split`` examples are cut into N disjoint requests, each applied to the model the
previous one dampened, for every I_D cache policy (``anchored``, ``strict``, ``reuse``, ``refresh``). Per request:
its cost (seconds, and over one fwd+bwd pass over its own forget set) and the quality after it (answer NLL of that
request's forget set, of everything forgotten so far, and of the retain set). Writes ``ssd_sequence.json`` and
``.md``.

Usage:
    python benchmarks/ssd.py                   # about 2-4 minutes on 2 shared CPU cores
    python benchmarks/ssd.py --n-authors 40 --hidden 256 --layers 6 --reps 5
    python benchmarks/ssd.py --sequence 10     # 10 sequential requests, every cache policy
"""

from __future__ import annotations

import argparse
import copy
import json
import os
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

import hf_unlearn  # noqa: E402
from hf_unlearn.benchmarks.fictitious_authors import build, paired_splits  # noqa: E402
from hf_unlearn.methods.ssd import target_parameters  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.pipeline import forward_backward_seconds, mean_answer_nll, tokenizer_corpus  # noqa: E402
from hf_unlearn.training import finetune  # noqa: E402
from hf_unlearn.utils.profiling import measure, rss_mib  # noqa: E402


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-authors", type=int, default=20)
    p.add_argument("--qa-per-author", type=int, default=20)
    p.add_argument("--forget-split", default="forget05")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=float, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ssd-batch-size", type=int, default=16)
    p.add_argument("--alpha", type=float, default=10.0)
    p.add_argument("--lambda_", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sequence", type=int, default=0, help="N sequential requests (see the module docstring)")
    p.add_argument("--sequence-split", default="forget10", help="the examples the N requests forget")
    p.add_argument("--refresh-every", type=int, default=5, help="cache_policy='refresh' in --sequence")
    p.add_argument("--estimate-memory", action="store_true", help="print the 7B/70B memory table and exit")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    if args.estimate_memory:
        return estimate_memory()
    torch.set_num_threads(args.threads)

    dd = build(n_authors=args.n_authors, seed=args.seed, qa_per_author=args.qa_per_author)
    full, forget = dd["full"], dd[args.forget_split]
    retain = dd[paired_splits(args.forget_split)[0]]
    base, tok = tiny_causal_lm(
        "llama",
        texts=tokenizer_corpus(dd),
        vocab_size=1024,
        hidden_size=args.hidden,
        num_layers=args.layers,
        seed=args.seed,
    )
    ft = dict(num_epochs=args.epochs, learning_rate=args.lr, batch_size=16, max_length=args.max_length, seed=args.seed)
    t0 = time.perf_counter()
    targets = {"full": finetune(copy.deepcopy(base), tok, full, **ft).model}
    if args.sequence:
        return sequence(args, dd, tok, targets["full"], time.perf_counter() - t0)
    targets["adapter"] = finetune(copy.deepcopy(base), tok, full, lora={"r": 8, "lora_alpha": 16}, **ft).model
    finetune_s = time.perf_counter() - t0

    common = dict(
        method="ssd", tokenizer=tok, full_dataset=full, alpha=args.alpha, lambda_=args.lambda_,
        batch_size=args.ssd_batch_size, max_length=args.max_length,
    )  # fmt: skip
    rows: dict[str, dict] = {}
    for target, model in targets.items():
        n_params = sum(p.numel() for p in model.parameters())
        n_target = sum(p.numel() for p in target_parameters(model, target).values())
        model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        cache_dir = tempfile.mkdtemp(prefix=f"ssd_bench_{target}_")

        def request(cache: bool, model=model, target=target, cache_dir=cache_dir, **kw):
            m = copy.deepcopy(model)
            rss0 = rss_mib()
            with measure() as cost:
                res = hf_unlearn.unlearn(
                    m, forget, retain, target=target, use_cache=cache, cache_dir=cache_dir if cache else None,
                    **common, **kw,
                )  # fmt: skip
            return m, res, cost.seconds, cost.peak_mib - rss0

        first_m, first, first_s, first_mem = request(True)  # fills the cache
        # The baseline and the cached request alternate, so machine noise drifts hit both alike.
        fb, cached = [], []
        for _ in range(args.reps):
            fb.append(forward_backward_seconds(model, tok, forget, args.max_length, args.ssd_batch_size, train=False))
            cached.append(request(True))
        uncached = [request(False) for _ in range(min(args.reps, 2))]
        if target == "adapter":  # the cheap hash scope for a frozen base: only the adapter tensors are hashed
            cached_t = [request(True, cache_hash="targeted") for _ in range(args.reps + 1)][1:]  # first fills it
        assert all(r[1].details["cache"] == "hit" for r in cached), [r[1].details["cache"] for r in cached]
        same = all(
            torch.equal(a, b) for a, b in zip(cached[0][0].state_dict().values(), uncached[0][0].state_dict().values())
        )
        before = {
            "forget": mean_answer_nll(model, tok, forget, args.max_length),
            "retain": mean_answer_nll(model, tok, retain, args.max_length),
        }
        after = {
            "forget": mean_answer_nll(first_m, tok, forget, args.max_length),
            "retain": mean_answer_nll(first_m, tok, retain, args.max_length),
        }
        row = {
            "params": n_params,
            "targeted_params": n_target,
            "model_mib": round(model_mib, 2),
            "maps_mib": round(2 * 4 * n_target / 2**20, 2),
            "fb_forget_s": median(fb),
            "request_cached_s": median([r[2] for r in cached]),
            "request_uncached_s": median([r[2] for r in uncached]),
            "request_first_s": first_s,
            "cached_over_fb": median([r[2] for r in cached]) / median(fb),
            "uncached_over_fb": median([r[2] for r in uncached]) / median(fb),
            "cached_timings": cached[0][1].timings,
            "uncached_timings": uncached[0][1].timings,
            "peak_rss_over_start_mib_cached": round(max(r[3] for r in cached), 1),
            "peak_rss_over_start_mib_uncached": round(max(r[3] for r in uncached), 1),
            "cached_equals_uncached": same,
            "dampened_total": first.details["dampened_total"],
            "dampened_fraction": first.details["dampened_fraction"],
            "alpha_bound": first.details.get("alpha_bound"),
            "nll_before": before,
            "nll_after": after,
        }
        if target == "adapter":
            row["request_cached_targeted_hash_s"] = median([r[2] for r in cached_t])
            row["cached_targeted_hash_over_fb"] = row["request_cached_targeted_hash_s"] / median(fb)
            row["cached_targeted_hash_timings"] = cached_t[0][1].timings
        row["peak_over_model_cached"] = row["peak_rss_over_start_mib_cached"] / model_mib
        row["peak_over_model_uncached"] = row["peak_rss_over_start_mib_uncached"] / model_mib
        rows[target] = row
        print(target, json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}, default=str), flush=True)

    variants = {}
    for name, kw in {
        "batch_sq (official)": {},
        "per_sample_sq": {"importance": "per_sample_sq"},
        "label_free (LFSSD)": {"label_free": True},
    }.items():
        m = copy.deepcopy(targets["full"])
        with measure() as cost:
            res = hf_unlearn.unlearn(m, forget, retain, target="full", use_cache=False, **common, **kw)
        variants[name] = {
            "request_uncached_s": cost.seconds,
            "importance_full_s": res.timings.get("importance_full"),
            "importance_forget_s": res.timings.get("importance_forget"),
            "dampened_fraction": res.details["dampened_fraction"],
            "forget_nll_after": mean_answer_nll(m, tok, forget, args.max_length),
            "retain_nll_after": mean_answer_nll(m, tok, retain, args.max_length),
        }

    report = {
        "setting": {
            **vars(args),
            "n_full": len(full),
            "n_forget": len(forget),
            "device": "cpu",
            "torch": torch.__version__,
            "finetune_s": finetune_s,
        },
        "targets": rows,
        "variants": variants,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ssd.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "ssd.md").write_text(markdown(report))
    print(markdown(report))
    return report


LLAMA_SHAPES = {
    "7B (Llama-2-7B shapes)": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "70B (Llama-2-70B shapes)": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                     num_attention_heads=64, num_key_value_heads=8, vocab_size=32000),
}  # fmt: skip


def estimate_memory(rank: int = 16, modules: tuple[str, ...] = ("q_proj", "v_proj")) -> dict:
    """Weights and SSD map sizes for 7B/70B Llama shapes, counted on a meta-device model (nothing is allocated)."""
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    table = {}
    for name, shape in LLAMA_SHAPES.items():
        with init_empty_weights():
            model = LlamaForCausalLM(LlamaConfig(**shape))
        n = sum(p.numel() for p in model.parameters())
        lora = sum(
            rank * (m.in_features + m.out_features)
            for mn, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and mn.split(".")[-1] in modules
        )
        table[name] = {"params": n, "weights_bf16_gb": 2 * n / 1e9, "maps_full_gb": 8 * n / 1e9,
                       "lora_params": lora, "maps_adapter_mb": 8 * lora / 1e6}  # fmt: skip
        t = table[name]
        print(
            f"| {name} | {n / 1e9:.2f}B | {t['weights_bf16_gb']:.1f} GB | {t['maps_full_gb']:.1f} GB | "
            f"{lora / 1e6:.1f}M params -> {t['maps_adapter_mb']:.0f} MB |"
        )
    return table


POLICIES = ("anchored", "strict", "reuse", "refresh")


def sequence(args, dd, tok, target, finetune_s: float) -> dict:
    """N sequential requests on one model per cache policy: cost and quality after each."""
    full, pool = dd["full"], dd[args.sequence_split]
    retain = dd[paired_splits(args.sequence_split)[0]]
    n = args.sequence
    if not 1 <= n <= len(pool):
        raise ValueError(f"--sequence {n}: the split {args.sequence_split!r} has {len(pool)} examples")
    bounds = [round(i * len(pool) / n) for i in range(n + 1)]
    requests = [pool.select(range(bounds[i], bounds[i + 1])) for i in range(n)]
    common = dict(
        method="ssd", tokenizer=tok, full_dataset=full, alpha=args.alpha, lambda_=args.lambda_,
        batch_size=args.ssd_batch_size, max_length=args.max_length, target="full",
    )  # fmt: skip
    fb = [
        forward_backward_seconds(target, tok, r, args.max_length, args.ssd_batch_size, reps=3, train=False)
        for r in requests
    ]
    nll = {"forget_all": mean_answer_nll(target, tok, pool, args.max_length)}
    nll["retain"] = mean_answer_nll(target, tok, retain, args.max_length)
    runs: dict[str, list[dict]] = {}
    for policy in POLICIES:
        model = copy.deepcopy(target)
        cache_dir = tempfile.mkdtemp(prefix=f"ssd_seq_{policy}_")
        rows = []
        for k, req in enumerate(requests):
            with measure() as cost:
                res = hf_unlearn.unlearn(
                    model, req, cache_dir=cache_dir, cache_policy=policy, refresh_every=args.refresh_every, **common
                )
            done = pool.select(range(bounds[k + 1]))
            rows.append(
                {
                    "request": k + 1,
                    "cache": res.details["cache"],
                    "seconds": cost.seconds,
                    "over_fb": cost.seconds / fb[k],
                    "importance_full_s": res.timings.get("importance_full", 0.0),
                    "dampened_total": res.details["dampened_total"],
                    "forget_request_nll": mean_answer_nll(model, tok, req, args.max_length),
                    "forget_so_far_nll": mean_answer_nll(model, tok, done, args.max_length),
                    "retain_nll": mean_answer_nll(model, tok, retain, args.max_length),
                }
            )
            print(policy, json.dumps(rows[-1]), flush=True)
        runs[policy] = rows
    report = {
        "setting": {
            **vars(args),
            "n_full": len(full),
            "n_pool": len(pool),
            "request_sizes": [len(r) for r in requests],
            "params": sum(p.numel() for p in target.parameters()),
            "device": "cpu",
            "torch": torch.__version__,
            "finetune_s": finetune_s,
        },
        "fb_forget_s": fb,
        "before": nll,
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ssd_sequence.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "ssd_sequence.md").write_text(markdown_sequence(report))
    print(markdown_sequence(report))
    return report


def markdown_sequence(r: dict) -> str:
    s = r["setting"]
    lines = [
        f"# SSD: {s['sequence']} sequential deletion requests, per I_D cache policy",
        "",
        f"Data: embedded fictitious-authors benchmark, D = `full` ({s['n_full']} QA); the {s['n_pool']} QA of "
        f"`{s['sequence_split']}` are cut, in order, into {s['sequence']} requests of {s['request_sizes']} QA, each "
        f"applied to the model the previous request dampened. Tiny Llama {s['layers']} blocks x {s['hidden']} "
        f"({s['params']:,} parameters), fine-tuned {s['epochs']:g} epochs, target=full. SSD alpha {s['alpha']:g}, "
        f"lambda {s['lambda_']:g}, batch size {s['ssd_batch_size']}; CPU, {s['threads']} thread(s); one run, "
        f"seed {s['seed']}. `refresh` recomputes I_D after {s['refresh_every']} requests. Cost = the whole "
        "`hf_unlearn.unlearn(...)` call; `x fb` = over one fwd+bwd pass over that request's forget set. NLL = mean "
        "answer NLL after the request: of that request's examples, of every example forgotten so far, of the "
        f"retain set. Before any request: forgotten-pool NLL {r['before']['forget_all']:.3f}, retain NLL "
        f"{r['before']['retain']:.3f}.",
        "",
        "| request | policy | I_D | cost | x fb | dampened | NLL request | NLL forgotten so far | NLL retain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    n = s["sequence"]
    for k in range(n):
        for policy, rows in r["runs"].items():
            x = rows[k]
            lines.append(
                f"| {x['request']} | {policy} | {x['cache']} | {x['seconds'] * 1e3:.0f} ms | {x['over_fb']:.1f} | "
                f"{x['dampened_total']:,} | {x['forget_request_nll']:.3f} | {x['forget_so_far_nll']:.3f} | "
                f"{x['retain_nll']:.3f} |"
            )
    lines += ["", "| policy | total cost | mean x fb (requests 2..N) | final NLL forgotten | final NLL retain |"]
    lines.append("|---|---|---|---|---|")
    for policy, rows in r["runs"].items():
        later = [x["over_fb"] for x in rows[1:]] or [rows[0]["over_fb"]]
        lines.append(
            f"| {policy} | {sum(x['seconds'] for x in rows):.2f} s | {statistics.mean(later):.1f} | "
            f"{rows[-1]['forget_so_far_nll']:.3f} | {rows[-1]['retain_nll']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def markdown(r: dict) -> str:
    s = r["setting"]
    lines = [
        "# SSD benchmark",
        "",
        f"Data: embedded fictitious-authors benchmark, `full` = {s['n_full']} QA, forget = `{s['forget_split']}` "
        f"({s['n_forget']} QA). Tiny Llama {s['layers']} blocks x {s['hidden']}, fine-tuned {s['epochs']:g} epochs "
        f"(full weights for target=full, LoRA r 8 for target=adapter). SSD alpha {s['alpha']:g}, lambda "
        f"{s['lambda_']:g}, importance batch size {s['ssd_batch_size']}; CPU, {s['threads']} thread(s); medians of "
        f"{s['reps']} cached requests (2 uncached), each on a fresh copy of the model. `fb_forget` = one "
        "forward+backward pass over the forget set (pre-tokenized), alternated with the cached requests in the same "
        "run. A request is a whole `hf_unlearn.unlearn(...)` "
        "call (tokenization, weights hash, cache read, I_F pass, dampening).",
        "",
        "| measure | target=full | target=adapter |",
        "|---|---|---|",
    ]
    t = r["targets"]

    def row(label, fn):
        lines.append(f"| {label} | {fn(t['full'])} | {fn(t['adapter'])} |")

    row("parameters / targeted", lambda x: f"{x['params']:,} / {x['targeted_params']:,}")
    row("fb_forget (one fwd+bwd over F)", lambda x: f"{x['fb_forget_s'] * 1e3:.0f} ms")
    row("request, cached I_D", lambda x: f"{x['request_cached_s'] * 1e3:.0f} ms (**{x['cached_over_fb']:.2f}x** fb)")
    row("request, no cache", lambda x: f"{x['request_uncached_s'] * 1e3:.0f} ms ({x['uncached_over_fb']:.2f}x fb)")
    lines.append(
        "| request, cached I_D, `cache_hash='targeted'` | - | "
        f"{t['adapter']['request_cached_targeted_hash_s'] * 1e3:.0f} ms "
        f"(**{t['adapter']['cached_targeted_hash_over_fb']:.2f}x** fb) |"
    )
    row("first request (computes + writes cache)", lambda x: f"{x['request_first_s'] * 1e3:.0f} ms")
    row(
        "cached request breakdown",
        lambda x: ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in x["cached_timings"].items() if k != "unlearn"),
    )
    row("cached result == uncached result (bitwise)", lambda x: str(x["cached_equals_uncached"]))
    row("model weights / two fp32 maps", lambda x: f"{x['model_mib']:.1f} / {x['maps_mib']:.1f} MiB")
    row(
        "peak RSS over start, cached / uncached",
        lambda x: (
            f"{x['peak_rss_over_start_mib_cached']:.0f} / {x['peak_rss_over_start_mib_uncached']:.0f} MiB "
            f"({x['peak_over_model_cached']:.1f}x / {x['peak_over_model_uncached']:.1f}x the model)"
        ),
    )
    row(
        "dampened entries",
        lambda x: f"{x['dampened_total']:,} ({100 * x['dampened_fraction']:.2f}%; alpha bound {x['alpha_bound']:.3g})",
    )
    row(
        "forget answer NLL before -> after",
        lambda x: f"{x['nll_before']['forget']:.3f} -> {x['nll_after']['forget']:.3f}",
    )
    row(
        "retain answer NLL before -> after",
        lambda x: f"{x['nll_before']['retain']:.3f} -> {x['nll_after']['retain']:.3f}",
    )
    lines += [
        "",
        "Importance variants (target=full, no cache: I_D + I_F computed in the request):",
        "",
        "| importance | request | I_D pass | I_F pass | dampened | forget NLL after | retain NLL after |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        lines.append(
            f"| {name} | {v['request_uncached_s']:.2f} s | {v['importance_full_s']:.2f} s | "
            f"{v['importance_forget_s']:.2f} s | {100 * v['dampened_fraction']:.2f}% | {v['forget_nll_after']:.3f} | "
            f"{v['retain_nll_after']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
