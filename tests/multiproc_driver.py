"""Driver of tests/test_multiproc.py: every trainer-based method on one prepared target, under 1 or N processes.

Two steps:

* ``prepare(out)`` (one plain process): the tiny benchmark, a tiny llama fine-tuned on ``full`` with an
  :class:`AmnesiacRecorder` attached (the recording ``partial_amnesiac`` needs), saved to ``out/target``,
  ``out/base`` (the model before fine-tuning, for ``retrain``) and ``out/amnesiac``. Training-time recorders under
  DDP are a separate concern (issue #20 item 2), so they record here once, in one process, and every run reads
  the same files.
* ``python tests/multiproc_driver.py --prep DIR --out DIR2`` (under ``torchrun`` / ``accelerate launch`` or plain):
  loads that target and runs every method :func:`hf_unlearn.list_methods` returns, except those in ``SKIP``, with
  the same GLOBAL batch whatever the process count (per-device batch ``GLOBAL_BATCH // 2``, gradient accumulation
  ``2 // world``). Rank 0 saves each result's weights to ``DIR2/<method>.safetensors`` and ``DIR2/summary.json``.

Example (2 gloo processes on CPU, see ENVIRONMENT.md "accelerate on CPU")::

    python -c "import sys; sys.path.insert(0, 'tests'); import multiproc_driver as d; d.prepare('/tmp/prep')"
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/multiproc_driver.py --prep /tmp/prep --out /tmp/two
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GLOBAL_BATCH = 8  # forget examples per optimizer step, whatever the process count
MAX_PROCESSES = 2  # per-device batch GLOBAL_BATCH // MAX_PROCESSES; accumulation MAX_PROCESSES // world
FORGET_SPLIT, RETAIN_SPLIT = "forget10", "retain90"
BENCH = {"n_authors": 10, "qa_per_author": 8, "seed": 0}
MAX_LENGTH = 64

#: Methods that run no ``transformers.Trainer`` in ``unlearn``, or whose multi-process path is tested elsewhere.
SKIP: dict[str, str] = {
    "embedding_ga": "runs its own loop (not a Trainer): the stopping rule evaluates between single ascent steps",
    "ssd": "runs no Trainer; its importance pass is sharded over processes and tested in tests/test_ssd.py",
    "s3t": "deletion runs no Trainer (slices are switched off); multi-process S3T training and retraining: "
    "tests/test_multiproc_s3t.py",
}

#: Per-method settings: the benchmark runner's tiny-CPU defaults are used, then these (fewer epochs: 2 steps).
EXTRA: dict[str, dict[str, Any]] = {
    # the learning-event recorder is a training-time recorder (issue #20 item 2): the loss score instead. RUM
    # unlearns per memorization group (2, 4 and 2 of the 8 forget examples): a global batch of 8 would leave
    # rank 1 without examples of its own, and accelerate then pads it with repeats of rank 0's (even_batches),
    # which a single process never sees. A global batch of 2 divides every group.
    "rum": {"score": "loss", "global_batch": 2},
    "partial_amnesiac": {"retain_finetune_steps": 2},  # subtract the recorded steps, then 2 repair steps (Trainer)
}


def prepare(out: str | os.PathLike) -> dict[str, Any]:
    """Fine-tune the tiny target (one process) with an amnesiac recorder and save it under ``out``.

    Args:
        out: folder for ``target/`` (model + tokenizer) and ``amnesiac/`` (the recording).

    Returns:
        ``{"target": path, "base": path, "amnesiac": path}``.
    """
    import torch

    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.methods.partial import AmnesiacRecorder
    from hf_unlearn.models import tiny_causal_lm
    from hf_unlearn.pipeline import tokenizer_corpus
    from hf_unlearn.training import finetune

    torch.manual_seed(0)
    out = Path(out)
    bench = build(**BENCH)
    base, tok = tiny_causal_lm(
        "llama", texts=tokenizer_corpus(bench), hidden_size=32, num_layers=2, num_heads=4, vocab_size=400, seed=0
    )
    base.save_pretrained(out / "base")  # retrain starts from it
    rec = AmnesiacRecorder(str(out / "amnesiac"))
    ft = finetune(base, tok, bench["full"], num_epochs=4, learning_rate=5e-3, batch_size=8, max_length=MAX_LENGTH,
                  callbacks=[rec])  # fmt: skip
    ft.model.save_pretrained(out / "target")
    tok.save_pretrained(out / "target")
    return {"target": str(out / "target"), "base": str(out / "base"), "amnesiac": str(out / "amnesiac")}


#: Runs configured through the method's config object with HF TrainingArguments names and fields (issue 16): name ->
#: (method, config fields). ``optim="sgd"`` changes the result (so it must have reached the Trainer on every rank);
#: gradient checkpointing does not change the math.
CONFIG_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "grad_diff+training_args": (
        "grad_diff",
        {
            "optim": "sgd",
            "gradient_checkpointing": True,
            "gradient_checkpointing_kwargs": {"use_reentrant": False},
            "adam_beta1": 0.5,  # unused by SGD: a field that is carried, not applied
        },
    ),
}


def config_run(name: str, world: int) -> tuple[str, Any]:
    """``(method, config object)`` of a :data:`CONFIG_RUNS` entry for a ``world``-process run: the method's config
    class built with HF names (``num_train_epochs``, ``per_device_train_batch_size``) and the extra fields."""
    from hf_unlearn.registry import get_method

    method, fields = CONFIG_RUNS[name]
    base = method_config(method, world)
    hf = {"num_train_epochs": base.pop("num_epochs"), "per_device_train_batch_size": base.pop("batch_size")}
    return method, get_method(method).config_cls(**base, **hf, **fields)


def method_config(method: str, world: int) -> dict[str, Any]:
    """The config of ``method`` for a ``world``-process run: same global batch, 2 optimizer steps.

    Raises:
        ValueError: ``world`` does not divide ``MAX_PROCESSES``.
    """
    from hf_unlearn.pipeline import builtin_runners

    if MAX_PROCESSES % world:
        raise ValueError(f"world size {world} must divide {MAX_PROCESSES}")
    runner = builtin_runners().get(method)
    cfg = dict(runner.defaults) if runner is not None else {}
    cfg.update(EXTRA.get(method, {}))
    global_batch = cfg.pop("global_batch", GLOBAL_BATCH)
    cfg.update(
        num_epochs=2,
        max_length=MAX_LENGTH,
        batch_size=global_batch // MAX_PROCESSES,
        gradient_accumulation_steps=MAX_PROCESSES // world,
        seed=0,
    )
    if method == "partial_amnesiac":
        cfg.pop("num_epochs")
    return cfg


def run(prep: str | os.PathLike, out: str | os.PathLike, methods: list[str] | None = None) -> dict[str, Any]:
    """Run every selected method on the prepared target; rank 0 writes weights and ``summary.json`` to ``out``."""
    import torch
    from accelerate import PartialState
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_unlearn
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.utils.hashing import weights_hash

    state = PartialState(cpu=True)  # on CPU the gloo group exists only once this is created
    world = state.num_processes
    torch.set_num_threads(1)
    prep, out = Path(prep), Path(out)
    bench = build(**BENCH)
    forget, retain = bench[FORGET_SPLIT], bench[RETAIN_SPLIT]
    target = AutoModelForCausalLM.from_pretrained(prep / "target").eval()
    tok = AutoTokenizer.from_pretrained(prep / "target")
    todo = [m for m in (methods or [*hf_unlearn.list_methods(), *CONFIG_RUNS]) if m not in SKIP]
    summary: dict[str, Any] = {"num_processes": world, "methods": {}}
    for name in todo:
        config = None
        if name in CONFIG_RUNS:
            method, config = config_run(name, world)
            cfg: dict[str, Any] = {}
        else:
            method, cfg = name, method_config(name, world)
        kw: dict[str, Any] = {}
        if method == "partial_amnesiac":
            kw["recording"] = str(prep / "amnesiac")
        if method == "retrain":
            kw["base_model"] = AutoModelForCausalLM.from_pretrained(prep / "base")
        if state.is_main_process:
            print(f"[multiproc_driver] {name} on {world} process(es)", flush=True)
        t0 = time.perf_counter()
        res = hf_unlearn.unlearn(
            copy.deepcopy(target), forget, retain, method=method, config=config, tokenizer=tok, **kw, **cfg
        )
        model = res.model
        checkpointing = bool(getattr(model, "is_gradient_checkpointing", False))
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        summary["methods"][name] = {
            "seconds": time.perf_counter() - t0,
            "hash": weights_hash(sd),
            "steps": res.details.get("steps"),
            "config": cfg if config is None else res.config.to_dict(),
            "gradient_checkpointing": checkpointing,
        }
        if state.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            save_file(sd, str(out / f"{name}.safetensors"))
        (out / f"hash_rank{state.process_index}_{name}.txt").parent.mkdir(parents=True, exist_ok=True)
        (out / f"hash_rank{state.process_index}_{name}.txt").write_text(summary["methods"][name]["hash"])
    if state.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    state.wait_for_everyone()
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prep", required=True, help="Folder written by prepare().")
    p.add_argument("--out", required=True, help="Where rank 0 writes <method>.safetensors and summary.json.")
    p.add_argument("--methods", default=None, help="Comma-separated subset (default: every registered method).")
    args = p.parse_args(argv)
    run(args.prep, args.out, args.methods.split(",") if args.methods else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
