"""Fixed cost of a small unlearning request: hf_unlearn's GA and NPO against two PyPI peers, in alternation.

Every tool unlearns the same forget set (16 QA rows; NPO also pairs it with a retain set of 212 rows) from a fresh
copy of the same tiny Llama, batch size 4, two epochs (8 optimizer steps). The fixed cost of a call (everything but
its training steps: tokenization, Trainer and optimizer construction, memory housekeeping, reference NLLs, copies)
is measured the same way for every tool, from the ends of its optimizer steps (a global ``torch.optim`` post-step
hook, so no tool is modified):

    step = median interval between consecutive optimizer-step ends     fixed = call wall time - steps * step

(one interval is a whole training step: batch, forward, backward, clipping, optimizer). Medians over the repeats.
Calls run in rounds (ours GA, forgetium GA, safetune GA, ours NPO, ...) so that load from other processes hits all
tools alike. Peak memory is the peak process RSS over the call minus the RSS before it (CPU; the CUDA allocator's
peak on a GPU). Prints one JSON line (and writes it with ``--out``).

Peers (forgetium 0.2.1, safetune 0.1.10) are NEVER project dependencies: install them in a scratch environment and
run this script with its interpreter, e.g. (reusing the project's packages, no second torch download)::

    python3 -m venv /tmp/peers
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/peers/lib/python3.11/site-packages/project.pth
    /tmp/peers/bin/pip install --no-deps forgetium==0.2.1
    /tmp/peers/bin/pip install --no-deps --ignore-requires-python safetune==0.1.10
    PYTHONPATH=. /tmp/peers/bin/python benchmarks/fixed_cost.py --out benchmarks/results/fixed_cost.json

A peer that is not importable is skipped with a message; our fixed cost is then measured alone.

Usage:
    python benchmarks/fixed_cost.py [--repeats 9] [--no-peers] [--out result.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from hf_unlearn.data import collator_for, encode_qa  # noqa: E402
from hf_unlearn.methods.grad_ascent.method import GradAscent, GradAscentConfig  # noqa: E402
from hf_unlearn.methods.npo.method import NPO, NPOConfig  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.utils.profiling import measure  # noqa: E402

N_FORGET, N_RETAIN, BATCH, EPOCHS, LR, BETA = 16, 212, 4, 2, 1e-5, 0.1


def _rows(n: int, start: int) -> list[dict[str, str]]:
    return [
        {
            "uid": f"u{i}",
            "question": f"What is the code of item {i}?",
            "answer": f"Item {i} has code K{i % 13}R{i % 7}.",
        }
        for i in range(start, start + n)
    ]


def _ours(model, tok, forget: list[dict], retain: list[dict]) -> dict[str, Callable[[object, int], None]]:
    fds, rds = Dataset.from_list(forget), Dataset.from_list(retain)
    common = dict(batch_size=BATCH, learning_rate=LR, max_grad_norm=1.0, disable_tqdm=True)

    def ga(m, epochs: int) -> None:
        GradAscent(GradAscentConfig(num_epochs=epochs, **common)).unlearn(m, tok, fds)

    def npo(m, epochs: int) -> None:
        cfg = NPOConfig(num_epochs=epochs, beta=BETA, retain_loss="nll", **common)
        NPO(cfg).unlearn(m, tok, fds, rds)

    return {"ga": ga, "npo": npo}


def _forgetium(model, tok, forget: list[dict], retain: list[dict]) -> dict[str, Callable[[object, int], None]]:
    import logging

    from forgetium import ForgetRetainDataset, GradientAscentUnlearner, NPOUnlearner, QADataset, UnlearningConfig

    logging.getLogger("forgetium").setLevel(logging.WARNING)  # its per-step INFO lines

    def data(with_retain: bool):
        f = QADataset(
            [{"prompt": f"Question: {r['question']}\nAnswer:", "response": " " + r["answer"]} for r in forget]
        )
        rr = [{"prompt": f"Question: {r['question']}\nAnswer:", "response": " " + r["answer"]} for r in retain]
        return ForgetRetainDataset(f, QADataset(rr) if with_retain else None)

    def cfg(epochs: int):
        return UnlearningConfig(num_epochs=epochs, learning_rate=LR, batch_size=BATCH, device="cpu", max_grad_norm=1.0)

    def ga(m, epochs: int) -> None:
        GradientAscentUnlearner(m, tok, cfg(epochs)).fit(data(False))

    def npo(m, epochs: int) -> None:
        NPOUnlearner(m, tok, cfg(epochs), beta=BETA).fit(data(True))

    return {"ga": ga, "npo": npo}


def _safetune(model, tok, forget: list[dict], retain: list[dict]) -> dict[str, Callable[[object, int], None]]:
    import safetune.unlearn as U

    collate = collator_for(tok)

    def batches(rows: list[dict]) -> list[dict]:  # what a safetune user has to build: padded tensor batches
        enc = [encode_qa(tok, r["question"], r["answer"]) for r in rows]
        return [collate(enc[s : s + BATCH]) for s in range(0, len(enc), BATCH)]

    def ga(m, epochs: int) -> None:
        cfg = U.GradientAscentConfig(epochs=epochs, lr=LR, weight_decay=0.0)
        U.gradient_ascent_unlearn(m, forget_batches=batches(forget), config=cfg)

    def npo(m, epochs: int) -> None:
        cfg = U.NPOConfig(variant="npo_grad_diff", beta=BETA, num_epochs=epochs, lr=LR, weight_decay=0.0)
        # npo_grad_diff zips forget and retain batches step for step: one retain batch per forget batch
        U.npo_unlearn(m, batches(forget), batches(retain[: len(forget)]), config=cfg)

    return {"ga": ga, "npo": npo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--no-peers", action="store_true", help="time hf_unlearn alone")
    args = parser.parse_args()

    torch.manual_seed(0)
    forget, retain = _rows(N_FORGET, 0), _rows(N_RETAIN, 1000)
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in forget + retain]
    model, tok = tiny_causal_lm("llama", texts=texts, vocab_size=512, hidden_size=64, num_layers=2)
    model.train()

    tools: dict[str, dict[str, Callable[[object, int], None]]] = {"hf_unlearn": _ours(model, tok, forget, retain)}
    skipped = {}
    for name, build in (("forgetium", _forgetium), ("safetune", _safetune)):
        if args.no_peers:
            skipped[name] = "--no-peers"
            continue
        try:
            tools[name] = build(model, tok, forget, retain)
        except ImportError as exc:
            skipped[name] = f"not importable ({exc}); install it in a scratch venv (see this script's docstring)"
            print(f"skipping {name}: {skipped[name]}", flush=True)

    step_ends: list[float] = []
    hook = register_optimizer_step_post_hook(lambda *_: step_ends.append(time.perf_counter()))
    rec: dict[tuple, dict[str, list[float]]] = {}
    for tool in tools.values():  # warm-up: imports, first-call allocations
        for fn in tool.values():
            fn(copy.deepcopy(model), 1)
    for _ in range(args.repeats):
        for method in ("ga", "npo"):
            for name, tool in tools.items():
                fresh = copy.deepcopy(model)  # every call starts from the same weights; the copy is not timed
                step_ends.clear()
                with measure() as m:
                    t0 = time.perf_counter()
                    tool[method](fresh, EPOCHS)
                    wall = time.perf_counter() - t0
                d = m.as_dict()
                step = statistics.median(b - a for a, b in zip(step_ends, step_ends[1:]))
                r = rec.setdefault((name, method), {"wall": [], "step": [], "fixed": [], "steps": [], "peak": []})
                r["wall"].append(wall)
                r["step"].append(step)
                r["fixed"].append(wall - len(step_ends) * step)
                r["steps"].append(len(step_ends))
                r["peak"].append(d.get("peak_cuda_mib", d["delta_rss_mib"]))
    hook.remove()

    result: dict = {
        "benchmark": "fixed_cost",
        "setup": f"tiny llama ({sum(p.numel() for p in model.parameters())} params), forget {N_FORGET} rows, "
        f"retain {N_RETAIN} rows (NPO), batch {BATCH}, {EPOCHS} epochs, CPU threads {torch.get_num_threads()}",
        "repeats": args.repeats,
        "estimator": "step = median interval between optimizer-step ends; fixed = wall - steps * step (medians)",
        "target_fixed_s": 0.05,
        "skipped": skipped,
        "tools": {},
    }
    for (name, method), r in rec.items():
        result["tools"].setdefault(name, {})[method] = {
            "call_s": round(statistics.median(r["wall"]), 4),
            "optimizer_steps": int(statistics.median(r["steps"])),
            "step_s": round(statistics.median(r["step"]), 4),
            "fixed_s": round(statistics.median(r["fixed"]), 4),
            "fixed_s_min": round(min(r["fixed"]), 4),
            "peak_mib_over_call": round(max(r["peak"]), 1),
        }
    ours = result["tools"]["hf_unlearn"]
    for name in tools:
        if name == "hf_unlearn":
            continue
        for method in ("ga", "npo"):
            theirs = result["tools"][name][method]
            theirs["our_call_time_ratio"] = round(ours[method]["call_s"] / theirs["call_s"], 3)
            theirs["our_fixed_minus_theirs_s"] = round(ours[method]["fixed_s"] - theirs["fixed_s"], 4)
    result["ok"] = all(v["fixed_s"] <= 0.05 for v in ours.values())
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
