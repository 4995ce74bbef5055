"""embedding_ga benchmark: the comparisons of Zagardo (arXiv 2406.09391) on the embedded benchmark, tiny GPT-2, CPU.

One fine-tune of a tiny GPT-2-style model (learned positions, tied embeddings, as in the paper) on the ``full``
split with :class:`EmbeddingGradientRecorder` recording EVERY epoch; then, from the same fine-tuned weights:

1. first-epoch vs multi-epoch (all epochs summed) vs last-epoch recorded gradients (calibrated ascent);
2. embedding-only vs last-blocks vs whole-model live ascent (mode ``iterative``, same learning rate, same rule);
3. calibrated (stop at the holdout NLL) vs fixed-step ascent (the same step size, 1/2x and 3x the steps);
4. fuzzy deletion (request texts = the forget questions, rapidfuzz >= 90, recorded gradients of the matches)
   vs iterative deletion.

Reported per variant: forget / holdout / retain / world-facts mean NLL, MIA AUC (forget vs holdout by NLL, 0.5 is
ideal, 1.0 = still memorised, < 0.5 = over-exposed), steps, stop reason, seconds, LiSSA / activation influence of
the forget set before and after. Plus: stored bytes per recorded example and the recording overhead.

Writes ``benchmarks/results/embedding_ga.json``, ``embedding_ga.md`` and ``embedding_ga.png``.

``--tied-gradient`` runs instead a SHORT experiment (a few minutes): with the tied GPT-2 embedding matrix, ascend the
recorded first-epoch gradient of the input path only (``tied_gradient="input"``, the default) or of the input and
output paths together (``"input_and_output"``: the full gradient of the tied parameter), same step size and rule,
over ``--seeds`` seeds (one fine-tune per seed records both paths). Writes ``embedding_ga_tied.{json,md}``.

Usage:
    python benchmarks/embedding_ga.py                 # the fine-tune alone took ~14 minutes on 2 shared CPU cores
    python benchmarks/embedding_ga.py --n-authors 20 --epochs 40
    python benchmarks/embedding_ga.py --tied-gradient --epochs 12 --seeds 0 1 2
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
from hf_unlearn.data import load_examples, model_batches  # noqa: E402
from hf_unlearn.evaluation.metrics import mia_auc  # noqa: E402
from hf_unlearn.methods.embedding_ga import EmbeddingGradientRecorder, mean_nll  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.training import finetune  # noqa: E402
from hf_unlearn.training.losses import sequence_nll  # noqa: E402
from hf_unlearn.training.trainer import model_inputs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@torch.no_grad()
def per_example_nll(model, tok, ds) -> list[float]:
    model.eval()
    out = []
    for _, b in model_batches(model, tok, ds, batch_size=32, max_length=128):
        out += sequence_nll(model(**model_inputs(b)).logits, b["labels"]).tolist()
    return out


def evaluate(model, tok, dd, forget_split, holdout_split, retain_eval) -> dict:
    f = per_example_nll(model, tok, dd[forget_split])
    h = per_example_nll(model, tok, dd[holdout_split])
    return {
        "forget_nll": sum(f) / len(f),
        "holdout_nll": sum(h) / len(h),
        "retain_nll": mean_nll(model, tok, retain_eval),
        "world_nll": mean_nll(model, tok, dd["world_facts"]),
        # MIA score: NLL (higher = looks like a non-member); AUC 0.5 ideal
        "mia_auc": mia_auc(f, h),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-authors", type=int, default=10)
    ap.add_argument("--qa-per-author", type=int, default=8)
    ap.add_argument("--forget-split", default="forget10")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--eta", type=float, default=0.25, help="recorded-mode step (normalised direction)")
    ap.add_argument("--iter-lr", type=float, default=0.05, help="iterative-mode SGD learning rate")
    ap.add_argument("--step-cap", type=int, default=60)
    ap.add_argument("--tolerance", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tied-gradient", action="store_true", help="run the short tied_gradient comparison only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the --tied-gradient run")
    args = ap.parse_args()
    if args.tied_gradient:
        tied_gradient_main(args)
        return
    torch.manual_seed(args.seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    dd = build(n_authors=args.n_authors, seed=args.seed, qa_per_author=args.qa_per_author)
    forget_split = args.forget_split
    retain_split, holdout_split = paired_splits(forget_split)
    full = load_examples(dd["full"])
    retain_eval = load_examples(dd[retain_split]).shuffle(seed=args.seed).select(range(min(64, len(dd[retain_split]))))
    print(f"full={len(full)} forget={len(dd[forget_split])} holdout={len(dd[holdout_split])}", flush=True)

    model, tok = tiny_causal_lm(
        "gpt2", num_layers=args.layers, hidden_size=args.hidden, vocab_size=512, seed=args.seed
    )
    rec_dir = tempfile.mkdtemp(prefix="egrads_")
    rec = EmbeddingGradientRecorder(rec_dir, epochs="all")
    ft = finetune(
        model, tok, full, num_epochs=args.epochs, learning_rate=args.lr, batch_size=16, seed=args.seed, callbacks=[rec]
    )
    stats = rec.stats()
    recording = {
        "finetune_seconds": ft.wall_time,
        "record_seconds": stats["record_seconds"],
        "overhead_fraction": stats["record_seconds"] / max(ft.wall_time - stats["record_seconds"], 1e-9),
        "bytes_per_example_epoch": stats["bytes_per_example"],
        "bytes_first_epoch": stats["bytes"] / args.epochs,
        "epochs_recorded": args.epochs,
        "train_loss": ft.train_loss,
    }
    print("recording", recording, flush=True)
    base_state = copy.deepcopy(model.state_dict())
    base_eval = evaluate(model, tok, dd, forget_split, holdout_split, retain_eval)
    print("finetuned", base_eval, flush=True)

    common = dict(
        tokenizer=tok,
        retain=retain_eval,
        holdout=dd[holdout_split],
        recording=rec_dir,
        step_cap=args.step_cap,
        retain_tolerance=args.tolerance,
        eta=args.eta,
        influence=False,
        seed=args.seed,
    )
    infl = dict(influence=True, influence_examples=8, lissa_iterations=10, lissa_batch_size=8)
    all_epochs = tuple(range(1, args.epochs + 1))
    variants = [
        ("first-epoch, calibrated", "1 first vs multi", dict(epochs=(1,), **infl)),
        ("all epochs summed, calibrated", "1 first vs multi", dict(epochs=all_epochs)),
        ("last epoch, calibrated", "1 first vs multi", dict(epochs=(args.epochs,))),
        ("iterative: embedding only", "2 scope", dict(mode="iterative", learning_rate=args.iter_lr, **infl)),
        (
            "iterative: last 2 blocks",
            "2 scope",
            dict(mode="iterative", param_scope="last_blocks", num_last_blocks=2, learning_rate=args.iter_lr),
        ),
        ("iterative: whole model", "2 scope", dict(mode="iterative", param_scope="all", learning_rate=args.iter_lr)),
    ]
    rows = []

    def run(name, group, kw, forget=None):
        model.load_state_dict(base_state)
        t0 = time.perf_counter()
        args_ = {**common, **kw}
        if forget is not None:  # fuzzy: the pool is the training set; the unmatched candidates are the retain set
            args_["retain"] = None
        res = hf_unlearn.unlearn(
            model, forget if forget is not None else dd[forget_split], method="embedding_ga", **args_
        )
        secs = time.perf_counter() - t0
        d = res.details
        row = {
            "variant": name,
            "group": group,
            "steps": d["steps"],
            "stop": d["stop_reason"],
            "seconds": secs,
            "target_nll": d["target_nll"],
            **evaluate(model, tok, dd, forget_split, holdout_split, retain_eval),
            "history": d["history"],
            "n_forget": len(d["forget_uids"]),
        }
        for when in ("before", "after"):
            if f"influence_{when}" in d:
                row[f"influence_{when}"] = d[f"influence_{when}"]
        if "fuzzy_matches" in d:
            truth = set(dd[forget_split]["uid"])
            got = set(d["fuzzy_matches"])
            row["fuzzy_precision"] = len(got & truth) / max(len(got), 1)
            row["fuzzy_recall"] = len(got & truth) / len(truth)
        rows.append(row)
        print(
            f"{name}: steps={row['steps']} stop={row['stop']} forget={row['forget_nll']:.3f} "
            f"holdout={row['holdout_nll']:.3f} retain={row['retain_nll']:.3f} auc={row['mia_auc']:.2f} "
            f"({secs:.1f}s)",
            flush=True,
        )
        return row

    for name, group, kw in variants:
        run(name, group, kw)
    calibrated_steps = max(rows[0]["steps"], 1)
    for mult, label in ((0.5, "0.5x"), (3, "3x")):
        n = max(1, int(round(calibrated_steps * mult)))
        run(
            f"first-epoch, fixed {n} steps ({label})",
            "3 calibration",
            dict(epochs=(1,), calibrate=False, step_cap=n, retain_tolerance=None),
        )
    # fuzzy deletion: the request is the forget questions' text, matched against the whole training set
    requests = list(dd[forget_split]["question"])
    run("fuzzy request -> recorded first-epoch", "4 fuzzy vs iterative", dict(request_text=requests), forget=full)
    run(
        "fuzzy request -> iterative embedding",
        "4 fuzzy vs iterative",
        dict(request_text=requests, mode="iterative", learning_rate=args.iter_lr),
        forget=full,
    )

    report = {"config": vars(args), "recording": recording, "finetuned": base_eval, "variants": rows}
    (out_dir / "embedding_ga.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out_dir / "embedding_ga.md")
    plot(report, out_dir / "embedding_ga.png")
    print(f"wrote {out_dir}/embedding_ga.{{json,md,png}}")


def tied_gradient_main(args) -> None:
    """Input path only vs input + output path of the tied embedding matrix, same recording, same rule."""
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        dd = build(n_authors=args.n_authors, seed=seed, qa_per_author=args.qa_per_author)
        forget_split = args.forget_split
        retain_split, holdout_split = paired_splits(forget_split)
        full = load_examples(dd["full"])
        retain_eval = load_examples(dd[retain_split]).shuffle(seed=seed).select(range(min(64, len(dd[retain_split]))))
        model, tok = tiny_causal_lm("gpt2", num_layers=args.layers, hidden_size=args.hidden, vocab_size=512, seed=seed)
        rec_dir = tempfile.mkdtemp(prefix="egrads_tied_")
        rec = EmbeddingGradientRecorder(rec_dir, tied_gradient="input_and_output")  # holds both paths
        ft = finetune(
            model, tok, full, num_epochs=args.epochs, learning_rate=args.lr, batch_size=16, seed=seed, callbacks=[rec]
        )
        stats = rec.stats()
        base_state = copy.deepcopy(model.state_dict())
        base = evaluate(model, tok, dd, forget_split, holdout_split, retain_eval)
        print(
            f"seed {seed}: fine-tune {ft.wall_time:.1f}s, {stats['bytes_per_example']:.0f} B/example; {base}",
            flush=True,
        )
        for path in ("input", "input_and_output"):
            model.load_state_dict(base_state)
            t0 = time.perf_counter()
            res = hf_unlearn.unlearn(
                model,
                dd[forget_split],
                method="embedding_ga",
                tokenizer=tok,
                retain=retain_eval,
                holdout=dd[holdout_split],
                recording=rec_dir,
                tied_gradient=path,
                eta=args.eta,
                step_cap=args.step_cap,
                retain_tolerance=args.tolerance,
                influence=False,
                seed=seed,
            )
            d = res.details
            row = {
                "seed": seed,
                "tied_gradient": path,
                "steps": d["steps"],
                "stop": d["stop_reason"],
                "rows_updated": d["rows_updated"],
                "target_nll": d["target_nll"],
                "seconds": time.perf_counter() - t0,
                **evaluate(model, tok, dd, forget_split, holdout_split, retain_eval),
            }
            runs.append({**row, "finetuned": base, "bytes_per_example": stats["bytes_per_example"]})
            print(
                f"  {path}: steps={row['steps']} stop={row['stop']} forget={row['forget_nll']:.3f} "
                f"retain={row['retain_nll']:.3f} world={row['world_nll']:.3f} auc={row['mia_auc']:.2f}",
                flush=True,
            )
    cfg = {k: v for k, v in vars(args).items() if k not in ("out",)}
    (out_dir / "embedding_ga_tied.json").write_text(json.dumps({"config": cfg, "runs": runs}, indent=2))
    lines = [
        "# embedding_ga: tied_gradient='input' vs 'input_and_output' (tiny GPT-2, tied embeddings, CPU)",
        "",
        f"`python benchmarks/embedding_ga.py --tied-gradient --epochs {args.epochs} --seeds "
        f"{' '.join(map(str, args.seeds))}`: GPT-2-style {args.layers} layers x {args.hidden} hidden, vocabulary 512, "
        f"fine-tuned {args.epochs} epochs (lr {args.lr}, batch 16) on `full` of build(n_authors={args.n_authors}, "
        f"qa_per_author={args.qa_per_author}, seed); forget `{args.forget_split}`; recorded first-epoch ascent, eta "
        f"{args.eta} on the unit-norm direction, step cap {args.step_cap}, retain tolerance {args.tolerance} nats, "
        "target = holdout mean NLL before unlearning. One fine-tune per seed records both paths.",
        "",
        "| seed | tied_gradient | rows updated | steps | stop | forget NLL (before -> after) | target | "
        "retain NLL | world NLL | MIA AUC | B/example |",
        "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {r['tied_gradient']} | {r['rows_updated']} | {r['steps']} | {r['stop']} | "
            f"{r['finetuned']['forget_nll']:.3f} -> {r['forget_nll']:.3f} | {r['target_nll']:.3f} | "
            f"{r['finetuned']['retain_nll']:.3f} -> {r['retain_nll']:.3f} | {r['world_nll']:.3f} | "
            f"{r['mia_auc']:.2f} | {r['bytes_per_example']:.0f} |"
        )
    (out_dir / "embedding_ga_tied.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir}/embedding_ga_tied.{{json,md}}")


def write_markdown(report: dict, path: Path) -> None:
    b, r, c = report["finetuned"], report["recording"], report["config"]
    lines = [
        "# embedding_ga benchmark (tiny GPT-2, embedded fictitious-authors benchmark, CPU)",
        "",
        f"Model: GPT-2-style, {c['layers']} layers x {c['hidden']} hidden, tied embeddings; fine-tuned "
        f"{c['epochs']} epochs (lr {c['lr']}) on `full` ({c['n_authors']} authors); forget split "
        f"`{c['forget_split']}`. Recorded step eta={c['eta']} (normalised direction), iterative SGD "
        f"lr={c['iter_lr']}, step cap {c['step_cap']}, retain tolerance {c['tolerance']} nats.",
        "",
        f"Recording: {r['bytes_per_example_epoch']:.0f} bytes per example per epoch (fp16), "
        f"{r['bytes_first_epoch'] / 1024:.1f} KiB for the first epoch; recorder time "
        f"{r['record_seconds']:.2f} s of a {r['finetune_seconds']:.1f} s fine-tune "
        f"({100 * r['overhead_fraction']:.1f}% overhead, all {r['epochs_recorded']} epochs recorded).",
        "",
        f"Fine-tuned model: forget NLL {b['forget_nll']:.3f}, holdout NLL {b['holdout_nll']:.3f}, retain NLL "
        f"{b['retain_nll']:.3f}, world NLL {b['world_nll']:.3f}, MIA AUC {b['mia_auc']:.2f}.",
        "",
        "Seconds are wall time on a shared, heavily loaded 2-core machine and include the influence computation "
        "for the variants listed in the influence table below; compare them with care.",
        "",
        "| group | variant | steps | stop | forget NLL | holdout NLL | retain NLL | world NLL | MIA AUC | s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in report["variants"]:
        lines.append(
            f"| {v['group']} | {v['variant']} | {v['steps']} | {v['stop']} | {v['forget_nll']:.3f} | "
            f"{v['holdout_nll']:.3f} | {v['retain_nll']:.3f} | {v['world_nll']:.3f} | {v['mia_auc']:.2f} | "
            f"{v['seconds']:.1f} |"
        )
    lines += ["", "Influence of the forget set on the request (mean over forget examples), before -> after:", ""]
    lines += [
        "| variant | LiSSA (forget) | LiSSA (retain) | activation (forget) | activation (retain) |",
        "|---|---|---|---|---|",
    ]
    for v in report["variants"]:
        if "influence_before" in v:
            bi, ai = v["influence_before"], v["influence_after"]
            lines.append(
                f"| {v['variant']} | {bi['lissa_forget']:.3g} -> {ai['lissa_forget']:.3g} | "
                f"{bi.get('lissa_retain', float('nan')):.3g} -> {ai.get('lissa_retain', float('nan')):.3g} | "
                f"{bi['activation_forget']:.3g} -> {ai['activation_forget']:.3g} | "
                f"{bi.get('activation_retain', float('nan')):.3g} -> {ai.get('activation_retain', float('nan')):.3g} |"
            )
    fz = [v for v in report["variants"] if "fuzzy_precision" in v]
    if fz:
        lines += [
            "",
            f"Fuzzy matching (threshold 90, WRatio): precision {fz[0]['fuzzy_precision']:.2f}, recall "
            f"{fz[0]['fuzzy_recall']:.2f} against the true forget split.",
        ]
    path.write_text("\n".join(lines) + "\n")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vs = report["variants"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5))
    x = range(len(vs))
    ax1.bar([i - 0.2 for i in x], [v["forget_nll"] for v in vs], width=0.4, label="forget NLL")
    ax1.bar([i + 0.2 for i in x], [v["retain_nll"] for v in vs], width=0.4, label="retain NLL")
    ax1.axhline(report["finetuned"]["holdout_nll"], color="k", ls="--", lw=1, label="holdout NLL (target)")
    ax1.axhline(report["finetuned"]["forget_nll"], color="gray", ls=":", lw=1, label="forget NLL before")
    ax1.set_xticks(list(x))
    ax1.set_xticklabels([v["variant"] for v in vs], rotation=60, ha="right", fontsize=7)
    ax1.set_ylabel("mean NLL (nats/token)")
    ax1.legend(fontsize=7)
    ax1.set_title("after unlearning")
    for v in vs[:6]:
        h = v["history"]
        ax2.plot([p["step"] for p in h], [p["forget_nll"] for p in h], label=v["variant"])
    ax2.axhline(report["finetuned"]["holdout_nll"], color="k", ls="--", lw=1)
    ax2.set_xlabel("ascent step")
    ax2.set_ylabel("forget mean NLL")
    ax2.legend(fontsize=7)
    ax2.set_title("calibration trajectories")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
