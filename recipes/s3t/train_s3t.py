"""Train an S3T model from a recipe YAML over several processes, delete the forget split, retrain over processes.

The three-step workflow (each step may run under ``accelerate launch`` / ``torchrun`` with any number of processes,
or as one plain process; the results are bitwise the same):

1. **train** (default): every process trains the shards j with ``j % world_size == rank`` as an independent
   single-process job (the rank variables are read and then removed from the environment, so transformers.Trainer
   does not start data-parallel training across ranks that train different shards), saves its part to
   ``output_dir/parts/rank{r}``, and rank 0 waits for every part and joins them with ``S3TModel.merge_saved`` into
   ``output_dir/model``. Stages are pure functions of (base, shard, prefix, data), so the merged model equals
   single-process training. Rank 0 then deletes the recipe's forget split from the merged model (skip with
   ``--no-delete``).
2. **delete** (``--delete-only``): rank 0 deletes the forget split from ``output_dir/model`` (instant, no training;
   the inventory is rewritten atomically). Not needed after step 1 without ``--no-delete``.
3. **retrain** (``--retrain``): every process loads the merged, deleted system from ``output_dir/model``, rebuilds
   the cut stages of its shards (``S3TModel.retrain(shards=...)``), saves its copy to
   ``output_dir/parts/retrain_rank{r}`` (with a ``DONE`` marker naming the inventory it started from), and rank 0
   joins the copies with ``S3TModel.merge_saved(..., shards=...)`` into a temporary folder, then swaps it in for
   ``output_dir/model`` (a crash before the swap leaves the old model; during it, ``model.old``, which the next run
   uses). The result equals ``retrain()`` in one process, i.e. training from scratch without the deleted uids.
   A rank whose ``DONE`` marker already names the current inventory reuses its copy (a relaunch after a crash
   retrains only what is missing).

    python recipes/s3t/train_s3t.py --config recipes/s3t/s3t_tiny.yaml
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 \
        recipes/s3t/train_s3t.py --config recipes/s3t/s3t_tiny.yaml
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 \
        recipes/s3t/train_s3t.py --config recipes/s3t/s3t_tiny.yaml --retrain

Optional YAML keys besides the usual ones: ``num_threads`` (torch CPU threads per process; default cores /
processes) and ``benchmark.qa_per_author``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

RANK = int(os.environ.pop("RANK", os.environ.get("LOCAL_RANK", "0")))
WORLD = int(os.environ.pop("WORLD_SIZE", "1"))
for _k in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
    os.environ.pop(_k, None)
for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_k, "1")

import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def load_data(spec: dict):
    try:
        from hf_unlearn.benchmarks.fictitious_authors import build
    except ImportError:  # the benchmark module is not installed: use the S3T benchmark's synthetic fallback
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
        from s3t import benchmark_data

        full, _ = benchmark_data(spec.get("n_authors", 20), spec.get("seed", 0))
        n = max(1, len(full) // 10)
        return full, full.select(range(n))
    dd = build(
        n_authors=spec.get("n_authors", 20), seed=spec.get("seed", 0), qa_per_author=spec.get("qa_per_author", 20)
    )
    return dd["full"], dd[spec.get("forget_split", "forget10")]


def replace_dir(new: Path, dst: Path) -> None:
    """Put folder ``new`` in place of ``dst``: ``dst`` -> ``dst.old``, ``new`` -> ``dst``, drop ``dst.old``.

    Each step is an atomic rename: a crash leaves either the old ``dst`` or (between the two renames) ``dst.old``,
    which :func:`current_model` falls back to.
    """
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(new, dst)
    shutil.rmtree(old, ignore_errors=True)


def current_model(out: Path) -> Path:
    """``out/model``, or ``out/model.old`` when a crash interrupted :func:`replace_dir` between its renames."""
    from hf_unlearn.methods.s3t.persistence import INVENTORY

    for folder in (out / "model", out / "model.old"):
        if (folder / INVENTORY).exists():
            return folder
    raise SystemExit(f"no S3T model in {out / 'model'}: train it first (without --retrain / --delete-only)")


def wait_for(markers: list[Path], accept) -> list[dict]:
    """Filesystem barrier (no process group needed): wait until every marker exists and ``accept``s its content."""
    while True:
        got = []
        for m in markers:
            try:
                info = json.loads(m.read_text())
            except (OSError, ValueError):
                break
            if not accept(info):
                break
            got.append(info)
        if len(got) == len(markers):
            return got
        time.sleep(1)


_KEEP_ALIVE: list = []


def finish_deletions(model) -> None:
    """Free the dropped adapters (weights, folders) now, in this thread, and keep the model referenced until exit.

    ``S3TModel.delete`` frees them in a daemon thread that holds the model only while it works. If the script
    ended with that thread holding the last reference, the model would be destroyed in a daemon thread while the
    interpreter shuts down, which aborts the process ("terminate called without an active exception").
    """
    model.flush_deletions()
    _KEEP_ALIVE.append(model)


def main() -> None:
    import torch

    from hf_unlearn.methods.s3t import S3TConfig, S3TModel
    from hf_unlearn.methods.s3t.persistence import INVENTORY
    from hf_unlearn.models import load_model, tiny_causal_lm

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-delete", action="store_true", help="only train")
    mode.add_argument("--delete-only", action="store_true", help="delete the forget split from output_dir/model")
    mode.add_argument("--retrain", action="store_true", help="rebuild the cut stages of output_dir/model")
    args = p.parse_args()
    recipe = yaml.safe_load(Path(args.config).read_text())
    out = Path(recipe.get("output_dir", "outputs/s3t"))
    full, forget = load_data(recipe.get("benchmark", {}))
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(full["question"], full["answer"])]
    mspec = dict(recipe.get("model", {}))

    def make_base():
        if "name" in mspec:
            return load_model(mspec["name"])
        arch = mspec.pop("arch", "llama") if "arch" in mspec else "llama"
        mspec.setdefault("vocab_size", 600)
        return tiny_causal_lm(arch, texts=texts, **mspec)

    if recipe.get("num_threads"):
        torch.set_num_threads(int(recipe["num_threads"]))
    elif not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORLD))

    if args.delete_only:
        if RANK == 0:
            base, tok = make_base()
            model = S3TModel.from_pretrained(current_model(out), base, tokenizer=tok)
            report = model.delete(list(forget["uid"]))  # persisted in the folder (atomic inventory rewrite)
            finish_deletions(model)
            print(
                json.dumps({k: report[k] for k in ("deleted", "live_shards", "dead_shards", "served_prefix_lengths")})
            )
        return

    if args.retrain:
        src = current_model(out)
        source = hashlib.sha256((src / INVENTORY).read_bytes()).hexdigest()
        n_shards = len(json.loads((src / INVENTORY).read_text())["shards"])
        mine = [j for j in range(n_shards) if j % WORLD == RANK]
        part = out / "parts" / f"retrain_rank{RANK}"
        marker = {"source": source, "shards": mine}
        try:
            previous = json.loads((part / "DONE").read_text())
        except (OSError, ValueError):
            previous = {}
        if {k: previous.get(k) for k in marker} == marker:
            print(f"rank {RANK}/{WORLD}: reusing {part} (already retrained shards {mine} from this model)")
        else:
            (part / "DONE").unlink(missing_ok=True)
            shutil.rmtree(part, ignore_errors=True)
            t0 = time.perf_counter()
            base, tok = make_base()
            model = S3TModel.from_pretrained(src, base, tokenizer=tok)
            model.path = None  # never rewrite the shared model folder from a rank: save this rank's copy instead
            new = model.retrain(full, shards=mine)
            model.save_pretrained(part)
            seconds = time.perf_counter() - t0
            (part / "DONE").write_text(json.dumps({**marker, "new_adapters": new, "seconds": seconds}))
            print(f"rank {RANK}/{WORLD}: retrained shards {mine} ({len(new)} stages) in {seconds:.1f}s")
        if RANK != 0:
            return
        parts = [out / "parts" / f"retrain_rank{r}" for r in range(WORLD)]
        infos = wait_for([q / "DONE" for q in parts], lambda info: info.get("source") == source)
        tmp = out / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        S3TModel.merge_saved(parts, tmp, shards=[info["shards"] for info in infos])
        base, tok = make_base()
        merged = S3TModel.from_pretrained(tmp, base, tokenizer=tok)  # loads: the folder is complete
        replace_dir(tmp, out / "model")
        print(json.dumps({"served_prefix_lengths": merged.served_prefix_lengths()}))
        print(f"S3T model in {out / 'model'}")
        return

    cfg = S3TConfig.from_dict(recipe.get("method_config", {}))
    mine = [j for j in range(cfg.n_shards) if j % WORLD == RANK]
    if not mine:
        raise SystemExit(f"rank {RANK}: {WORLD} processes for {cfg.n_shards} shards: launch at most {cfg.n_shards}")
    base, tok = make_base()
    t0 = time.perf_counter()
    model = S3TModel.from_training(base, tok, full, cfg, shards=mine)
    part = out / "parts" / f"rank{RANK}"
    model.save_pretrained(part)
    (part / "DONE").write_text(json.dumps({"seconds": time.perf_counter() - t0, "shards": mine}))
    print(
        f"rank {RANK}/{WORLD}: trained shards {mine} ({len(model.trainings)} stages) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    if RANK != 0:
        return
    parts = [out / "parts" / f"rank{r}" for r in range(WORLD)]
    while not all((q / "DONE").exists() for q in parts):  # filesystem barrier (no process group needed)
        time.sleep(1)
    tmp = out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    S3TModel.merge_saved(parts, tmp)
    replace_dir(tmp, out / "model")
    base, tok = make_base()
    model = S3TModel.from_pretrained(out / "model", base, tokenizer=tok)
    if not args.no_delete:
        report = model.delete(list(forget["uid"]))  # persisted in out/model
        finish_deletions(model)
        print(json.dumps({k: report[k] for k in ("live_shards", "dead_shards", "served_prefix_lengths", "seconds")}))
    print(f"S3T model in {out / 'model'}")


if __name__ == "__main__":
    main()
