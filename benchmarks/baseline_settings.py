"""Try post-hoc method settings on one benchmark setting: prints forget / retain / holdout answer NLL per run.

Used to choose the tiny-CPU benchmark defaults of the OpenUnlearning baselines (``simnpo``, ``idk_dpo``, ``rmu``,
``undial``, ``wga``; each class's ``benchmark_defaults``): settings that move the forget set toward the gold
(retrained) model without collapsing the retain set. One seed (the setting's).

    python benchmarks/baseline_settings.py --setting test --runs '[
        ["rmu", {"num_epochs": 10, "learning_rate": 1e-2, "batch_size": 8, "alpha": 1200}],
        ["rmu", {"num_epochs": 10, "learning_rate": 1e-2, "batch_size": 8, "alpha": 10}]]'
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_k, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    import hf_unlearn
    from hf_unlearn.pipeline import SETTINGS, nll_row, prepare

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="test", choices=sorted(SETTINGS))
    p.add_argument("--runs", required=True, help="JSON list of [method, {config overrides}] pairs.")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    ctx = prepare(SETTINGS[args.setting], [], progress=False)
    rows = [{"model": "target", **nll_row(ctx.target, ctx)}, {"model": "gold", **nll_row(ctx.gold, ctx)}]
    for r in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    for method, cfg in json.loads(args.runs):
        t0 = time.perf_counter()
        res = hf_unlearn.unlearn(
            copy.deepcopy(ctx.target), ctx.forget, ctx.retain, method=method, tokenizer=ctx.tokenizer,
            max_length=ctx.setting.max_length, **cfg,
        )  # fmt: skip
        row = {"model": method, "config": cfg, **nll_row(res.model, ctx), "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


if __name__ == "__main__":
    main()
