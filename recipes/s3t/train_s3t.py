"""Train an S3T model from a recipe YAML, optionally split over processes, then delete the forget split.

Parallelism: under ``accelerate launch`` / ``torchrun`` every process trains the shards j with
``j % world_size == rank`` as an independent single-process job (the rank variables are read and then removed
from the environment, so transformers.Trainer does not start data-parallel training across ranks that train
different shards), saves its part to ``output_dir/parts/rank{r}``, and rank 0 waits for every part and joins them
with ``S3TModel.merge_saved`` into ``output_dir/model``. Stages are pure functions of (base, shard, prefix,
data), so the merged model equals single-process training.

    python recipes/s3t/train_s3t.py --config recipes/s3t/s3t_tiny.yaml
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 \
        recipes/s3t/train_s3t.py --config recipes/s3t/s3t_tiny.yaml
"""

from __future__ import annotations

import argparse
import json
import os
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
    dd = build(n_authors=spec.get("n_authors", 20), seed=spec.get("seed", 0))
    return dd["full"], dd[spec.get("forget_split", "forget10")]


def main() -> None:
    import torch

    from hf_unlearn.methods.s3t import S3TConfig, S3TModel
    from hf_unlearn.models import load_model, tiny_causal_lm

    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--no-delete", action="store_true", help="only train")
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

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORLD))
    cfg = S3TConfig.from_dict(recipe.get("method_config", {}))
    mine = [j for j in range(cfg.n_shards) if j % WORLD == RANK]
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
    S3TModel.merge_saved(parts, out / "model")
    base, tok = make_base()
    model = S3TModel.from_pretrained(out / "model", base, tokenizer=tok)
    if not args.no_delete:
        report = model.delete(list(forget["uid"]))  # persisted in out/model
        print(json.dumps({k: report[k] for k in ("live_shards", "dead_shards", "served_prefix_lengths", "seconds")}))
    print(f"S3T model in {out / 'model'}")


if __name__ == "__main__":
    main()
