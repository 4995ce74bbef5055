"""Memorization proxies vs true memorization, and RUM driven by each, on the embedded benchmark (issue 7).

1. Fine-tune a tiny Llama on ``full`` with a :class:`LearningEventRecorder` (learning events, free) and a gold model on
   the retain split.
2. Score every training sequence: true memorization (K subset models, ratio 0.7), learning events, holdout KL
   (fine-tune a copy on the holdout split), LOSS / ZLib / Min-K% of the target; record the cost of each relative to
   one fine-tune.
3. Spearman correlation of each proxy with true memorization (all of ``full`` and the forget split alone).
4. Unlearn the forget split from the target with RUM (NegGrad+ per group, low first) driven by each score, by random
   scores, and plain NegGrad+ on the whole set (one group, same recipe); report forget / retain / holdout NLL and the
   LOSS-attack MIA AUC (forget vs holdout; 0.5 = indistinguishable).

Writes ``memorization.json``, ``memorization.md`` and ``memorization.png`` under ``--out``.

    python benchmarks/memorization.py --out benchmarks/results              # ~10 min on 2 busy CPU cores

``--compare-loops SCORES_JSON`` skips the scoring (it reads the scores of an earlier run's ``memorization.json``,
which must have the same data and model arguments) and compares the two NegGrad+ loops of ``rum`` (``epoch_over``
``retain``: the official loop, one epoch = a pass over the retain set; ``forget``: a pass over the forget set) with
the official alphas and ``--alphas``, over ``--ul-seeds``; writes ``memorization_loops{--tag}.{json,md}``.
``--loops retain --loop-epochs 0.148 0.4 1 --tag _short`` runs the official loop with fewer epochs: at 0.148 base
epochs it takes the step budget of the ``forget`` loop at 4 (forget groups of 6-7 examples are one batch of 8;
212 retain examples are 27 batches).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_k, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import hf_unlearn  # noqa: E402
from hf_unlearn.benchmarks.fictitious_authors import build, paired_splits  # noqa: E402
from hf_unlearn.evaluation import metrics as M  # noqa: E402
from hf_unlearn.methods.rum import (  # noqa: E402
    LearningEventRecorder,
    holdout_kl_scores,
    inference_scores,
    sequence_stats,
    true_memorization,
)
from hf_unlearn.methods.rum.scores import LEARNING_EVENTS  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.pipeline import tokenizer_corpus  # noqa: E402
from hf_unlearn.training import finetune  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-authors", type=int, default=10)
    p.add_argument("--qa-per-author", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--epochs", type=float, default=20, help="fine-tune epochs (target, gold, subset models)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--k", type=int, default=8, help="subset models for true memorization")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "nll"])
    p.add_argument("--holdout-epochs", type=float, default=3)
    p.add_argument("--forget-split", default="forget10")
    p.add_argument("--ul-lr", type=float, default=2e-3)
    p.add_argument("--ul-epochs", type=float, default=4)
    p.add_argument("--alphas", type=float, nargs=3, default=[0.9, 0.85, 0.85])
    p.add_argument("--epoch-over", default="retain", choices=["retain", "forget"], help="rum's NegGrad+ loop")
    p.add_argument("--compare-loops", default=None, metavar="SCORES_JSON", help="see the module docstring")
    p.add_argument("--ul-seeds", type=int, nargs="+", default=[0, 1], help="unlearning seeds (--compare-loops)")
    p.add_argument("--loops", nargs="+", default=["retain", "forget"], help="loops to compare (--compare-loops)")
    p.add_argument("--tag", default="", help="suffix of the --compare-loops output files")
    p.add_argument(
        "--loop-epochs", type=float, nargs="+", default=None, help="--compare-loops: base epochs to try (--ul-epochs)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    p.add_argument("--out", default="benchmarks/results")
    return p.parse_args()


def nll_by_uid(model, tok, ds, max_length) -> dict[str, float]:
    st = sequence_stats(model, tok, ds, max_length=max_length)
    return dict(zip(st["uids"], st["loss"].tolist()))


def quality(model, tok, bench, a) -> dict[str, float]:
    f = nll_by_uid(model, tok, bench[a.forget_split], a.max_length)
    retain_split, holdout_split = paired_splits(a.forget_split)
    h = nll_by_uid(model, tok, bench[holdout_split], a.max_length)
    r = nll_by_uid(model, tok, bench[retain_split], a.max_length)
    return {
        "forget_nll": float(np.mean(list(f.values()))),
        "retain_nll": float(np.mean(list(r.values()))),
        "holdout_nll": float(np.mean(list(h.values()))),
        "mia_auc": float(M.mia_auc(list(f.values()), list(h.values()))),
    }


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    bench = build(n_authors=a.n_authors, seed=a.seed, qa_per_author=a.qa_per_author)
    retain_split, hold_split = paired_splits(a.forget_split)
    full, forget = bench["full"], bench[a.forget_split]
    base, tok = tiny_causal_lm(
        "llama",
        texts=tokenizer_corpus(bench),
        vocab_size=512,
        hidden_size=a.hidden,
        num_layers=a.layers,
        num_heads=4,
        seed=a.seed,
    )
    n_params = sum(p.numel() for p in base.parameters())
    recipe = dict(
        num_epochs=a.epochs, learning_rate=a.lr, batch_size=a.batch_size, max_length=a.max_length, seed=a.seed
    )
    print(f"{len(full)} training sequences, {len(forget)} to forget, model {n_params / 1e6:.2f}M params")

    rec = LearningEventRecorder()
    ft = finetune(copy.deepcopy(base), tok, full, callbacks=[rec], **recipe)
    target = ft.model
    ft_seconds = ft.wall_time - rec.seconds  # one fine-tune without the recording
    gold = finetune(copy.deepcopy(base), tok, bench[retain_split], **recipe).model
    print(f"fine-tune {ft.wall_time:.1f}s (recording {rec.seconds:.2f}s), train loss {ft.train_loss:.3f}")
    if a.compare_loops:
        compare_loops(a, bench, tok, target, gold, n_params, json.loads(Path(a.compare_loops).read_text()))
        return

    results = {}
    true = true_memorization(
        base,
        tok,
        full,
        n_models=a.k,
        ratio=0.7,
        metric=a.metric,
        seed=a.seed,
        max_length=a.max_length,
        train_kwargs={k: v for k, v in recipe.items() if k not in ("seed", "max_length")},
    )
    results["true"] = true
    print(f"true memorization: {true.seconds:.1f}s for {a.k} subset models")
    for name in LEARNING_EVENTS:
        results[name] = rec.score_result(name)
    results["holdout_kl"] = holdout_kl_scores(
        target,
        tok,
        full,
        bench[hold_split],
        finetune_kwargs={"num_epochs": a.holdout_epochs, "learning_rate": a.lr, "batch_size": a.batch_size},
        max_length=a.max_length,
    )
    results.update(inference_scores(target, tok, full, max_length=a.max_length))
    rng = random.Random(a.seed)
    results_random = {u: rng.random() for u in full["uid"]}

    uids_all, uids_forget = list(full["uid"]), list(forget["uid"])
    proxies = {}
    for name, res in results.items():
        row = {"seconds": res.seconds, "cost_vs_finetune": res.seconds / ft_seconds}
        if name != "true":
            for key, uids in (("spearman_full", uids_all), ("spearman_forget", uids_forget)):
                rho = spearmanr([true.scores[u] for u in uids], [res.scores[u] for u in uids]).statistic
                row[key] = float(rho)
        proxies[name] = row
        print(f"{name:16s} cost {row['cost_vs_finetune']:8.3f} x FT  rho_full {row.get('spearman_full', 1.0):+.3f}")

    # ---------------------------------------------------------------------------------------------- unlearning
    ul = dict(learning_rate=a.ul_lr, num_epochs=a.ul_epochs, batch_size=8, max_length=a.max_length, seed=a.seed)
    rows = {"target": quality(target, tok, bench, a), "gold (retrain)": quality(gold, tok, bench, a)}
    sources = {**{n: r.scores for n, r in results.items()}, "random": results_random}
    for name, scores in sources.items():
        res = hf_unlearn.unlearn(
            copy.deepcopy(target),
            forget,
            bench[retain_split],
            method="rum",
            tokenizer=tok,
            scores={u: scores[u] for u in uids_forget},
            alphas=a.alphas,
            epoch_over=a.epoch_over,
            **ul,
        )
        rows[f"rum[{name}]"] = {**quality(res.model, tok, bench, a), "unlearn_seconds": res.timings["unlearn"]}
    plain = hf_unlearn.unlearn(
        copy.deepcopy(target),
        forget,
        bench[retain_split],
        method="rum",
        tokenizer=tok,
        scores={u: 0.0 for u in uids_forget},
        grouping="quantiles",
        n_groups=1,
        alphas=a.alphas[1],
        epoch_over=a.epoch_over,
        epoch_scales=1.0,
        lr_scales=1.0,
        **ul,
    )
    rows["neggrad+ (whole F)"] = {**quality(plain.model, tok, bench, a), "unlearn_seconds": plain.timings["unlearn"]}
    for n, r in rows.items():
        print(f"{n:22s} " + " ".join(f"{k} {v:.3f}" for k, v in r.items()))

    report = {
        "args": vars(a),
        "model_params": n_params,
        "n_train": len(full),
        "n_forget": len(forget),
        "finetune_seconds": ft_seconds,
        "recording_seconds": rec.seconds,
        "true_memorization": {"n_models": a.k, "metric": a.metric, "run_seconds": true.details["run_seconds"]},
        "proxies": proxies,
        "unlearning": rows,
        "total_seconds": time.perf_counter() - t_all,
        "scores": {n: r.scores for n, r in results.items()},
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memorization.json").write_text(json.dumps(report, indent=2))
    (out / "memorization.md").write_text(markdown(report))
    plot(report, out / "memorization.png")
    print(f"wrote {out}/memorization.{{json,md,png}} in {report['total_seconds']:.0f}s")


OFFICIAL_ALPHAS = [0.99, 0.97, 0.97]


def compare_loops(a, bench, tok, target, gold, n_params: int, earlier: dict) -> None:
    """RUM's two NegGrad+ loops x {official, --alphas} x score source (true, random, whole F) x seeds."""
    if earlier["args"]["n_authors"] != a.n_authors or earlier["args"]["seed"] != a.seed:
        raise ValueError(f"{a.compare_loops} was computed with other data arguments: {earlier['args']}")
    t_all = time.perf_counter()
    retain_split = paired_splits(a.forget_split)[0]
    forget = bench[a.forget_split]
    uids_forget = list(forget["uid"])
    rng = random.Random(a.seed)
    sources = {
        "true": earlier["scores"]["true"],
        "random": {u: rng.random() for u in uids_forget},
        "whole F": {u: 0.0 for u in uids_forget},
    }
    rows = {"target": quality(target, tok, bench, a), "gold (retrain)": quality(gold, tok, bench, a)}
    runs = []
    combos = [(loop, ep) for loop in a.loops for ep in (a.loop_epochs or [a.ul_epochs])]
    for loop, epochs in combos:
        for alpha_name, alphas in (("official", OFFICIAL_ALPHAS), ("tuned", list(a.alphas))):
            for source, scores in sources.items():
                for seed in a.ul_seeds:
                    kw = dict(learning_rate=a.ul_lr, num_epochs=epochs, batch_size=8, max_length=a.max_length)
                    if source == "whole F":  # plain NegGrad+: one group, the medium alpha, the base recipe
                        kw.update(grouping="quantiles", n_groups=1, alphas=alphas[1], epoch_scales=1.0, lr_scales=1.0)
                    else:
                        kw.update(alphas=alphas)
                    res = hf_unlearn.unlearn(
                        copy.deepcopy(target),
                        forget,
                        bench[retain_split],
                        method="rum",
                        tokenizer=tok,
                        scores={u: scores[u] for u in uids_forget},
                        epoch_over=loop,
                        seed=seed,
                        **kw,
                    )
                    q = quality(res.model, tok, bench, a)
                    steps = sum(g["steps"] for g in res.details["groups"])
                    runs.append(
                        {
                            "loop": loop,
                            "epochs": epochs,
                            "alphas": alpha_name,
                            "source": source,
                            "seed": seed,
                            "steps": steps,
                            "unlearn_seconds": res.timings["unlearn"],
                            **q,
                        }
                    )
                    print(
                        f"{loop:6s} ep {epochs:g} {alpha_name:8s} {source:8s} seed {seed} steps {steps:4d} "
                        + " ".join(f"{k} {v:.3f}" for k, v in q.items())
                    )
    report = {
        "args": vars(a),
        "model_params": n_params,
        "n_forget": len(forget),
        "n_retain": len(bench[retain_split]),
        "reference": rows,
        "runs": runs,
        "total_seconds": time.perf_counter() - t_all,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"memorization_loops{a.tag}.json").write_text(json.dumps(report, indent=2))
    (out / f"memorization_loops{a.tag}.md").write_text(markdown_loops(report))
    print(f"wrote {out}/memorization_loops{a.tag}.{{json,md}} in {report['total_seconds']:.0f}s")


def markdown_loops(r: dict) -> str:
    a = r["args"]
    lines = [
        f"# RUM's NegGrad+ loops (embedded benchmark, {r['n_forget']} forgotten, {r['n_retain']} retained, tiny "
        f"Llama {r['model_params'] / 1e6:.2f}M params)",
        "",
        f"Base recipe lr {a['ul_lr']}, AdamW, batch 8, base epochs as listed (the high group 2x at lr/10); alphas "
        f"official {OFFICIAL_ALPHAS} or tuned {a['alphas']} (whole F: the medium alpha, one group). "
        f"Mean ± std over unlearning seeds {a['ul_seeds']} (one target model).",
        "",
        "| model | forget NLL | retain NLL | holdout NLL | MIA AUC |",
        "|---|---|---|---|---|",
    ]
    for n, q in r["reference"].items():
        lines.append(
            f"| {n} | {q['forget_nll']:.3f} | {q['retain_nll']:.3f} | {q['holdout_nll']:.3f} | {q['mia_auc']:.3f} |"
        )
    lines += [
        "",
        "| loop (epoch over) | base epochs | alphas | scores | steps | forget NLL | retain NLL | holdout NLL "
        "| MIA AUC | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = []
    for run in r["runs"]:
        k = (run["loop"], run.get("epochs", a["ul_epochs"]), run["alphas"], run["source"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        sel = [x for x in r["runs"] if (x["loop"], x.get("epochs", a["ul_epochs"]), x["alphas"], x["source"]) == k]

        def ms(f: str, sel=sel) -> str:
            v = np.array([x[f] for x in sel], dtype=float)
            return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"

        lines.append(
            f"| {k[0]} | {k[1]:g} | {k[2]} | {k[3]} | {sel[0]['steps']} | {ms('forget_nll')} | {ms('retain_nll')} | "
            f"{ms('holdout_nll')} | {ms('mia_auc')} | {np.mean([x['unlearn_seconds'] for x in sel]):.1f} |"
        )
    return "\n".join(lines) + "\n"


def markdown(r: dict) -> str:
    a = r["args"]
    lines = [
        f"# Memorization proxies and RUM (embedded benchmark, {r['n_train']} sequences, {r['n_forget']} forgotten, "
        f"tiny Llama {r['model_params'] / 1e6:.2f}M params, {a['epochs']} epochs)",
        "",
        f"True memorization: {a['k']} subset models (ratio 0.7, metric {a['metric']}). One fine-tune: "
        f"{r['finetune_seconds']:.1f}s.",
        "",
        "| score | Spearman vs true (full) | Spearman vs true (forget) | cost (s) | cost / one fine-tune |",
        "|---|---|---|---|---|",
    ]
    for n, p in r["proxies"].items():
        sf, sg = p.get("spearman_full"), p.get("spearman_forget")
        lines.append(
            f"| {n} | {'1' if sf is None else f'{sf:+.3f}'} | {'1' if sg is None else f'{sg:+.3f}'} | "
            f"{p['seconds']:.2f} | {p['cost_vs_finetune']:.3f} |"
        )
    lines += [
        "",
        "| model | forget NLL | retain NLL | holdout NLL | MIA AUC (loss, forget vs holdout) | unlearn (s) |",
        "|---|---|---|---|---|---|",
    ]
    for n, q in r["unlearning"].items():
        t = q.get("unlearn_seconds")
        lines.append(
            f"| {n} | {q['forget_nll']:.3f} | {q['retain_nll']:.3f} | {q['holdout_nll']:.3f} | {q['mia_auc']:.3f} | "
            f"{'-' if t is None else f'{t:.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [n for n in r["proxies"] if n != "true"]
    rho = [r["proxies"][n]["spearman_full"] for n in names]
    cost = [r["proxies"][n]["cost_vs_finetune"] for n in names]
    ax1.bar(names, rho, color="tab:blue")
    ax1.set_ylabel("Spearman rho with true memorization")
    ax1.set_title("proxy quality (cost / fine-tune on top)")
    for i, c in enumerate(cost):
        ax1.text(i, rho[i], f"{c:.2g}x", ha="center", va="bottom" if rho[i] >= 0 else "top", fontsize=8)
    ax1.tick_params(axis="x", rotation=45)
    ax1.axhline(0, color="k", lw=0.5)
    cmap = plt.get_cmap("tab20")
    for i, (n, q) in enumerate(r["unlearning"].items()):
        ax2.scatter(q["mia_auc"], q["retain_nll"], label=n, color=cmap(i % 20), marker="os^Dv*"[i % 6], s=40)
    ax2.set_xlabel("MIA AUC forget vs holdout (0.5 ideal)")
    ax2.set_ylabel("retain NLL (lower better)")
    ax2.set_title("unlearning quality")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
