"""Evaluation throughput relative to a bare forward pass over the same tokens, in the same run.

Runs the non-generation evaluation passes of hf_unlearn.evaluation.runner (``answer_stats`` with token statistics:
mean NLL, token log-probs, Min-K%++ mu/sigma over the full vocabulary, teacher-forced argmax; and the NLL-only pass
used for paraphrased / perturbed answers) and a bare ``model(input_ids, attention_mask)`` over the very same batches
(same sorted order, same padding), and prints one JSON line:

    {"ratio_token_stats": ..., "ratio_nll_only": ..., "target": 0.9, "ok": true, ...}

``ratio_*`` = (evaluation tokens/s) / (bare forward tokens/s), best of ``--repeats`` interleaved timings each
(shared CPUs are noisy). Generation (ROUGE) and GradNorm (a backward pass per sample) are timed separately, for
information.

Usage:
    python benchmarks/eval_throughput.py [--items 256] [--batch-size 16] [--repeats 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

import torch  # noqa: E402

from hf_unlearn.data import encode_qa  # noqa: E402
from hf_unlearn.evaluation.runner import _RowCollator, answer_stats, generate_answers, grad_norms  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402


def _items(n: int) -> tuple[list[str], list[str]]:
    try:
        from hf_unlearn.benchmarks.fictitious_authors import build

        full = build(n_authors=max(2, n // 20 + 1), seed=0)["full"]
        return list(full["question"])[:n], list(full["answer"])[:n]
    except ImportError:  # the embedded benchmark is not available: synthetic QA of the same shape
        qs = [f"What is the secret code of the book number {i} by the author of item {i % 17}?" for i in range(n)]
        ans = [f"The code of book {i} is K{(i * 7) % 13}R{i % 5}, written in {1900 + i % 97}." for i in range(n)]
        return qs, ans


def _best_interleaved(fns: dict, repeats: int, rounds: list | None = None) -> dict[str, float]:
    """Best-of-``repeats`` wall time of each function, run in rounds (bare, eval, ...) so that load from other
    processes on a shared machine hits all of them alike; the order rotates from round to round (no function is
    always the one after another). Each round's times are appended to ``rounds`` when given."""
    best = {name: float("inf") for name in fns}
    names = list(fns)
    for r in range(repeats):
        if rounds is not None:
            rounds.append({})
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            best[name] = min(best[name], dt)
            if rounds is not None:
                rounds[-1][name] = dt
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    from accelerate import Accelerator

    torch.manual_seed(0)
    questions, answers = _items(args.items)
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(questions, answers)]
    model, tok = tiny_causal_lm(
        "llama", texts=texts, vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_layers=args.layers
    )
    model.eval()
    acc = Accelerator()
    n_params = sum(p.numel() for p in model.parameters())

    # the same batches answer_stats forms: longest first, right padding
    feats = [encode_qa(tok, q, a) for q, a in zip(questions, answers)]
    order = sorted(range(len(feats)), key=lambda i: (-len(feats[i]["input_ids"]), i))
    collate = _RowCollator(tok.pad_token_id, "right")
    batches = [
        collate([dict(feats[i], row=i) for i in order[s : s + args.batch_size]])
        for s in range(0, len(order), args.batch_size)
    ]
    tokens = sum(len(f["input_ids"]) for f in feats)

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                _ = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits

    kw = dict(batch_size=args.batch_size, accelerator=acc)
    bare()  # warm-up
    rounds: list[dict[str, float]] = []
    best = _best_interleaved(
        {
            "bare": bare,
            "stats": lambda: answer_stats(model, tok, questions, answers, token_stats=True, **kw),
            "nll": lambda: answer_stats(model, tok, questions, answers, token_stats=False, **kw),
        },
        args.repeats,
        rounds,
    )
    t_bare, t_stats, t_nll = best["bare"], best["stats"], best["nll"]

    n_gen = min(32, len(questions))
    t0 = time.perf_counter()
    generate_answers(model, tok, questions[:n_gen], max_new_tokens=32, **kw)
    t_gen = time.perf_counter() - t0
    n_grad = min(32, len(questions))
    t0 = time.perf_counter()
    grad_norms(model, tok, questions[:n_grad], answers[:n_grad], accelerator=acc)
    t_grad = time.perf_counter() - t0

    target = 0.9  # issue 17
    result = {
        "benchmark": "eval_throughput",
        "device": str(acc.device),
        "threads": torch.get_num_threads(),
        "params": n_params,
        "items": len(questions),
        "tokens": tokens,
        "batch_size": args.batch_size,
        "bare_forward_tok_s": round(tokens / t_bare, 1),
        "token_stats_tok_s": round(tokens / t_stats, 1),
        "nll_only_tok_s": round(tokens / t_nll, 1),
        "ratio_token_stats": round(t_bare / t_stats, 3),
        "ratio_nll_only": round(t_bare / t_nll, 3),
        # the ratio within each round (bare and evaluation timed back to back), median over rounds: less sensitive
        # to load that drifts over the run than the ratio of the bests
        "ratio_token_stats_median_of_rounds": round(statistics.median(r["bare"] / r["stats"] for r in rounds), 3),
        "ratio_nll_only_median_of_rounds": round(statistics.median(r["bare"] / r["nll"] for r in rounds), 3),
        "generation_s_per_item_32_tokens": round(t_gen / n_gen, 4),
        "gradnorm_s_per_item": round(t_grad / n_grad, 4),
        "target": target,
        "ok": t_bare / t_stats >= target and t_bare / t_nll >= target,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
