"""Layer-wise partial unlearning benchmark: each partial method vs its naive counterpart (arXiv 2403.07611 comparison).

On the embedded fictitious-authors benchmark with a tiny Llama (CPU), one run measures:

* amnesiac unlearning, classic (kappa = 1, dense updates) vs partial (kappa = 0.1), each without and with a short
  retain fine-tune afterwards, on a target trained with randomly mixed batches, and on a target trained with the
  forget examples isolated in their own batches (``isolate_sensitive``, mode ``group``);
* label flipping with top-rho partial updates (rho = 0.1) vs naive (rho = 1);
* gradient ascent with top-rho partial updates (rho = 0.1) vs naive (rho = 1);
* references: the target before unlearning and the gold model retrained on the retain split.

Metrics: MIA AUC on the forget set (sklearn ``roc_auc_score`` of per-example answer loss, forget vs holdout: 0.5 =
indistinguishable from unseen data, the gold model's value is the target), token-mean answer NLL on forget /
retain / holdout, storage of the recording, recording overhead during fine-tuning, and unlearning time.

Writes ``benchmarks/results/partial.json``, ``partial.md`` and ``partial.png``.

``--summarize DIR [DIR ...]`` reads the ``partial.json`` of several runs (e.g. one per ``--seed``) and writes
``partial_seeds.md`` (mean, min and max over the runs of each row's MIA AUC and NLLs) into ``--out``; nothing is
trained.

Usage:
    python benchmarks/partial.py                   # ~5 min on 2 shared CPU cores
    python benchmarks/partial.py --n-authors 20 --epochs 20 --retain-ft-steps 10
    python benchmarks/partial.py --seed 1 --out benchmarks/results/partial_seed1
    python benchmarks/partial.py --summarize benchmarks/results benchmarks/results/partial_seed1 \\
        benchmarks/results/partial_seed2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
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
from hf_unlearn.data import model_batches  # noqa: E402
from hf_unlearn.methods.partial import AmnesiacRecorder, isolate_sensitive  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.pipeline import tokenizer_corpus  # noqa: E402
from hf_unlearn.training import finetune  # noqa: E402
from hf_unlearn.training.losses import token_logprobs  # noqa: E402
from hf_unlearn.training.trainer import model_inputs  # noqa: E402


@torch.no_grad()
def example_nll(model, tok, ds, max_length: int, batch_size: int = 32) -> tuple[list[float], float]:
    """Per-example token-mean answer NLL, and the token-mean NLL over the whole split."""
    model.eval()
    per, tot, cnt = [], 0.0, 0
    for _, batch in model_batches(model, tok, ds, batch_size=batch_size, max_length=max_length):
        logp, mask = token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
        nll = -(logp * mask).sum(1)
        n = mask.sum(1)
        per += (nll / n.clamp(min=1)).tolist()
        tot += float(nll.sum())
        cnt += int(n.sum())
    return per, tot / max(cnt, 1)


def evaluate(model, tok, bench, splits, max_length: int) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    f_per, f_nll = example_nll(model, tok, bench[splits["forget"]], max_length)
    h_per, h_nll = example_nll(model, tok, bench[splits["holdout"]], max_length)
    retain = bench[splits["retain"]]
    retain = retain.select(range(min(len(retain), 200)))
    _, r_nll = example_nll(model, tok, retain, max_length)
    # label 1 = holdout, score = loss (higher loss looks unseen): AUC 0.5 = forget set looks like unseen data
    auc = roc_auc_score([0] * len(f_per) + [1] * len(h_per), f_per + h_per)
    return {"mia_auc": float(auc), "forget_nll": f_nll, "retain_nll": r_nll, "holdout_nll": h_nll}


def summarize(dirs: list[Path], out: Path) -> None:
    """Mean [min, max] over runs (seeds) of every row's MIA AUC and NLLs; writes ``partial_seeds.md``."""
    runs = [json.loads((d / "partial.json").read_text()) for d in dirs]
    seeds = [r["args"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs must have distinct seeds, got {seeds}")
    keys = ["mia_auc", "forget_nll", "retain_nll", "holdout_nll"]
    a = runs[0]["args"]
    lines = [
        f"# partial benchmark over {len(runs)} seeds ({', '.join(map(str, seeds))})",
        "",
        f"`python benchmarks/partial.py --summarize {' '.join(map(str, dirs))}`. Each seed is a full run of "
        f"`benchmarks/partial.py` (tiny Llama 4 x 64, fictitious authors n={a['n_authors']}, {a['forget_split']}, "
        f"{a['epochs']} fine-tuning epochs, kappa={a['kappa']}, rho={a['rho']}): the benchmark data, the model "
        "initialisation and the batch order change with the seed. Cells: mean [min, max] over the seeds.",
        "",
        "| method | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name in runs[0]["results"]:
        cells = []
        for k in keys:
            vals = [r["results"][name][k] for r in runs if name in r["results"]]
            cells.append(f"{sum(vals) / len(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "partial_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-authors", type=int, default=10)
    ap.add_argument("--qa-per-author", type=int, default=20)
    ap.add_argument("--forget-split", default="forget10")
    ap.add_argument("--epochs", type=float, default=15)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--kappa", type=float, default=0.1)
    ap.add_argument("--rho", type=float, default=0.1)
    ap.add_argument("--retain-ft-steps", type=int, default=5)
    ap.add_argument("--ul-epochs", type=float, default=4)
    ap.add_argument("--ul-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--summarize", nargs="+", metavar="DIR", help="summarise the partial.json of these run folders")
    args = ap.parse_args()
    if args.summarize:
        summarize([Path(d) for d in args.summarize], Path(args.out))
        return
    torch.set_num_threads(args.threads)
    retain_split, holdout_split = paired_splits(args.forget_split)
    splits = {"forget": args.forget_split, "retain": retain_split, "holdout": holdout_split}
    bench = build(n_authors=args.n_authors, seed=args.seed, qa_per_author=args.qa_per_author)
    forget, retain = bench[splits["forget"]], bench[splits["retain"]]
    base, tok = tiny_causal_lm(
        "llama",
        texts=tokenizer_corpus(bench),
        vocab_size=600,
        hidden_size=64,
        num_layers=4,
        num_heads=4,
        seed=args.seed,
    )
    ft_kw = dict(
        num_epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
    )
    work = Path(tempfile.mkdtemp(prefix="partial_bench_"))
    rows: dict[str, dict] = {}
    info: dict[str, dict] = {}

    def record(name: str, model, seconds: float, **extra) -> None:
        rows[name] = {**evaluate(model, tok, bench, splits, args.max_length), "unlearn_s": seconds, **extra}
        print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[name].items()}))

    # --- fine-tuning: plain (baseline time), with recorders (mixed batches), with isolated forget batches
    plain = finetune(copy.deepcopy(base), tok, bench["full"], **ft_kw)
    info["finetune_plain_s"] = plain.wall_time
    recs = {
        "dense": AmnesiacRecorder(work / "dense", kappa=1.0),
        "partial": AmnesiacRecorder(work / "partial", kappa=args.kappa),
    }
    target_ft = finetune(copy.deepcopy(base), tok, bench["full"], callbacks=list(recs.values()), **ft_kw)
    target = target_ft.model
    info["finetune_recorded_s"] = target_ft.wall_time
    info["recording"] = {k: r.stats() for k, r in recs.items()}
    ordered = isolate_sensitive(bench["full"], forget["uid"], args.batch_size, mode="group", seed=args.seed)
    irecs = {
        "dense": AmnesiacRecorder(work / "iso_dense", kappa=1.0),
        "partial": AmnesiacRecorder(work / "iso_partial", kappa=args.kappa),
    }
    iso_ft = finetune(
        copy.deepcopy(base),
        tok,
        ordered,
        callbacks=list(irecs.values()),
        train_sampling_strategy="sequential",
        **ft_kw,
    )
    info["recording_isolated"] = {k: r.stats() for k, r in irecs.items()}
    t = time.perf_counter()
    gold = finetune(copy.deepcopy(base), tok, retain, **ft_kw)
    record("gold (retrain on retain)", gold.model, time.perf_counter() - t)
    record("target (no unlearning)", target, 0.0)
    record("target, isolated batches (no unlearning)", iso_ft.model, 0.0)

    # --- amnesiac: classic vs partial, with and without a short retain fine-tune
    ft_cfg = dict(learning_rate=args.ul_lr, batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
    for tgt_name, tgt, rr in (("", target, recs), ("isolated, ", iso_ft.model, irecs)):
        for kind, label in (("dense", "amnesiac (kappa=1)"), ("partial", f"partial amnesiac (kappa={args.kappa})")):
            for steps in (0, args.retain_ft_steps) if not tgt_name else (0,):
                res = hf_unlearn.unlearn(
                    copy.deepcopy(tgt),
                    forget,
                    retain,
                    method="partial_amnesiac",
                    tokenizer=tok,
                    recording=rr[kind],
                    retain_finetune_steps=steps,
                    **ft_cfg,
                )
                d = res.details
                name = f"{tgt_name}{label}" + (f" + {steps} retain FT steps" if steps else "")
                record(
                    name,
                    res.model,
                    res.timings["unlearn"],
                    storage_mib=d["storage_bytes"] / 2**20,
                    record_overhead_s=rr[kind].stats()["record_seconds"],
                    steps_undone=d["steps_undone"],
                    steps_recorded=d["steps_recorded"],
                    entries_undone=d["entries_undone"],
                    retain_fraction_affected=d["retain_fraction_affected"],
                )

    # --- label flipping and gradient ascent: naive (rho = 1) vs partial (rho)
    ul = dict(num_epochs=args.ul_epochs, learning_rate=args.ul_lr, batch_size=8, max_length=args.max_length)
    for method, label in (("partial_label_flip", "label flip"), ("partial_grad_ascent", "grad ascent")):
        for rho in (1.0, args.rho):
            res = hf_unlearn.unlearn(
                copy.deepcopy(target), forget, retain, method=method, tokenizer=tok, rho=rho, **ul
            )
            name = f"{label} ({'naive, rho=1' if rho == 1 else f'partial, rho={rho}'})"
            record(name, res.model, res.timings["unlearn"], updated_fraction=res.details["updated_fraction"])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"args": vars(args), "splits": splits, "info": info, "results": rows}
    (out / "partial.json").write_text(json.dumps(payload, indent=2))
    cols = [
        ("mia_auc", "MIA AUC (F vs holdout)"),
        ("forget_nll", "forget NLL"),
        ("retain_nll", "retain NLL"),
        ("holdout_nll", "holdout NLL"),
        ("storage_mib", "storage MiB"),
        ("record_overhead_s", "record s"),
        ("unlearn_s", "unlearn s"),
        ("steps_undone", "steps undone"),
        ("retain_fraction_affected", "retain shared"),
    ]
    lines = [
        f"Tiny Llama (hidden 64, 4 layers), fictitious authors n={args.n_authors}, {splits['forget']} "
        f"({len(forget)} examples), {args.epochs} fine-tuning epochs, batch {args.batch_size}, kappa={args.kappa}, "
        f"rho={args.rho}, {args.threads} CPU thread(s). Plain fine-tune {info['finetune_plain_s']:.1f} s, with "
        f"both recorders {info['finetune_recorded_s']:.1f} s.",
        "",
        "| method | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, r in rows.items():
        cells = []
        for key, _ in cols:
            v = r.get(key)
            cells.append("" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "partial.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(names) + 1.5), sharey=True)
    for ax, key, title in ((axes[0], "mia_auc", "MIA AUC (0.5 = unseen-like)"), (axes[1], "retain_nll", "retain NLL")):
        ax.barh(range(len(names)), [rows[n][key] for n in names], color="tab:blue")
        ax.set_title(title)
        if key == "mia_auc":
            ax.axvline(rows["gold (retrain on retain)"]["mia_auc"], color="k", ls="--", lw=1, label="gold")
            ax.axvline(0.5, color="gray", ls=":", lw=1)
            ax.legend(loc="lower right")
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "partial.png", dpi=120)


if __name__ == "__main__":
    main()
