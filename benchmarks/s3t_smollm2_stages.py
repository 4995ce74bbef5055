"""S3T stage cost on SmolLM2-135M (30 blocks, L = 5 stages of k = 6 blocks): measured vs ideal, cached vs not.

A short CPU measurement (not a full training run): one sequence ``[0, 1, 2, 3, 4]`` of one shard, ``--steps``
Trainer steps per stage, with and without ``cache_hidden_states``; per stage the measured wall time per step, the
bare step time (forward + backward + AdamW on the same batch, no Trainer) and the block-pass cost model of
docs/methods/s3t.md; a plain LoRA fine-tune step over all blocks as the reference.

Writes ``benchmarks/results/s3t_smollm2_stages.json`` and ``.md``.

Usage:
    python benchmarks/s3t_smollm2_stages.py            # ~3-5 minutes on one CPU thread
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from s3t import bare_step_seconds, benchmark_data, stage_passes  # noqa: E402

from hf_unlearn import load_model  # noqa: E402
from hf_unlearn.methods.s3t import S3TConfig, S3TModel  # noqa: E402
from hf_unlearn.training import finetune  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-authors", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds, _ = benchmark_data(args.n_authors, 0)
    common = dict(num_epochs=1, max_steps=args.steps, learning_rate=1e-4, batch_size=args.batch_size, max_length=64)
    lora = {"r": 8, "lora_alpha": 16}
    res: dict = {"setting": {**vars(args), "n_examples": len(ds), "torch": torch.__version__}}
    t0 = time.perf_counter()
    base, tok = load_model("smollm2-135m-offline")
    res["load_seconds"] = time.perf_counter() - t0
    n_blocks = base.config.num_hidden_layers
    t0 = time.perf_counter()
    finetune(base, tok, ds, lora=lora, seed=0, **common)
    res["plain_lora_seconds_per_step"] = (time.perf_counter() - t0) / args.steps
    runs = {}
    for cached in (False, True):
        base, tok = load_model("smollm2-135m-offline")
        cfg = S3TConfig(
            n_slices=5, sequences=[[0, 1, 2, 3, 4]], lora=lora, cache_hidden_states=cached, seed=0, **common
        )
        t0 = time.perf_counter()
        model = S3TModel.from_training(base, tok, ds, cfg)
        runs[cached] = (model, time.perf_counter() - t0)
        print(f"cached={cached}: {runs[cached][1]:.1f} s", flush=True)
    k = runs[False][0].state["layers_per_slice"]
    stages = []
    for rec, rec_c in zip(runs[False][0].trainings, runs[True][0].trainings):
        t = len(rec["prefix"])
        stages.append(
            {
                "stage": t,
                "blocks_trained": f"{n_blocks - t * k}-{n_blocks - (t - 1) * k - 1}",
                "block_passes": stage_passes(t, k, n_blocks, False),
                "block_passes_cached": stage_passes(t, k, n_blocks, True),
                "measured_per_step_s": rec["seconds"] / max(1, rec["steps"]),
                "bare_step_s": bare_step_seconds(runs[False][0], rec, ds, tok, args.batch_size, False, 1),
                "measured_cached_per_step_s": rec_c["seconds"] / max(1, rec_c["steps"]),
                "bare_cached_step_s": bare_step_seconds(runs[True][0], rec_c, ds, tok, args.batch_size, True, 1),
            }
        )
        print(stages[-1], flush=True)
    res["stages"] = stages
    res["s3t_seconds"] = {"uncached": runs[False][1], "cached": runs[True][1]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "s3t_smollm2_stages.json").write_text(json.dumps(res, indent=2))
    (out / "s3t_smollm2_stages.md").write_text(markdown(res, n_blocks))
    print(markdown(res, n_blocks))
    return res


def markdown(r: dict, n_blocks: int) -> str:
    st = r["setting"]
    lines = [
        "# S3T stage cost on SmolLM2-135M",
        "",
        f"Printed by `python benchmarks/s3t_smollm2_stages.py` ({st['torch']}, CPU, {st['threads']} thread): "
        f"{n_blocks} blocks, L = 5 stages of 6 blocks, one sequence, {st['steps']} Trainer steps per stage, batch "
        f"{st['batch_size']}, fictitious authors ({st['n_examples']} examples, max 64 tokens), LoRA r 8; one run. "
        f"Plain LoRA fine-tune (all blocks): {r['plain_lora_seconds_per_step']:.2f} s per Trainer step; block "
        f"passes per example {2 * n_blocks}.",
        "",
        "| stage | blocks trained | block passes plain / cached | Trainer s/step | bare s/step | "
        "cached: Trainer s/step | cached: bare s/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["stages"]:
        lines.append(
            f"| {x['stage']} | {x['blocks_trained']} | {x['block_passes']} / {x['block_passes_cached']} | "
            f"{x['measured_per_step_s']:.2f} | {x['bare_step_s']:.2f} | {x['measured_cached_per_step_s']:.2f} | "
            f"{x['bare_cached_step_s']:.2f} |"
        )
    lines.append("")
    lines.append(
        f"Whole runs (5 stages, incl. Trainer setup and, cached, the cache build): uncached "
        f"{r['s3t_seconds']['uncached']:.1f} s, cached {r['s3t_seconds']['cached']:.1f} s."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
