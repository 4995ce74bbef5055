"""One complete unlearning run from a YAML recipe: benchmark -> fine-tune -> unlearn -> evaluate -> save (-> push).

Usage (flags after ``--config`` override YAML keys; dotted keys reach nested ones)::

    python recipes/run.py --config recipes/baselines/grad_diff.yaml
    python recipes/run.py --config recipes/baselines/npo.yaml --method_config.learning_rate 5e-4 --output_dir out/npo
    accelerate launch --config_file recipes/accelerate/single.yaml recipes/run.py --config recipes/baselines/npo.yaml
    # 2 CPU processes (see recipes/README.md for why the flags look like this):
    ACCELERATE_USE_CPU=1 accelerate launch --config_file recipes/accelerate/multi_cpu.yaml \
        recipes/run.py --config recipes/baselines/npo.yaml

YAML keys:
    model:          {arch: llama|gpt2, hidden_size, num_layers, num_heads, vocab_size} for a tiny model built from a
                    config, or {name: <local folder | hub id | smollm2-offline>}.
    benchmark:      {n_authors, qa_per_author, seed, forget_split} of the embedded fictitious-authors benchmark.
    finetune:       {num_epochs, max_steps, learning_rate, batch_size, per_device_batch_size, max_length, lora}.
                    ``batch_size`` is the GLOBAL batch: gradient accumulation = batch_size / (per_device x processes),
                    so 1 and N processes train on the same batches.
    method:         a registered method name; method_config: its config fields (``batch_size`` global as above).
    evaluate:       {enabled, gold, generation, max_new_tokens, retain_max_items, gradnorm}: TOFU-style report vs a
                    gold model fine-tuned on the retain split (needs hf_unlearn.evaluation).
    output_dir:     where ``model/`` (save_unlearned folder: adapter or full model + card + hf_unlearn.json),
                    ``run_summary.json`` and ``hashes_rank<r>.json`` go.
    push:           {repo_id, private, dry_run}: push the saved folder to the Hub (dry_run lists the files).
    seed, num_threads.

Under several processes the fine-tuning and training-loop methods run data-parallel (transformers.Trainer over
accelerate); data-independent steps (benchmark, base model) are identical on every rank; only rank 0 writes the model.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
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

import yaml  # noqa: E402

TOP_KEYS = {
    "model": {"arch": "llama", "hidden_size": 64, "num_layers": 4, "num_heads": 4, "vocab_size": 600},
    "benchmark": {"n_authors": 10, "qa_per_author": 20, "seed": 0, "forget_split": "forget10"},
    "finetune": {
        "num_epochs": 10,
        "max_steps": -1,
        "learning_rate": 3e-3,
        "batch_size": 16,
        "per_device_batch_size": None,
        "max_length": 96,
        "lora": None,
    },
    "method": None,
    "method_config": {},
    "evaluate": {
        "enabled": False,
        "gold": True,
        "generation": False,
        "max_new_tokens": 32,
        "retain_max_items": 100,
        "gradnorm": False,
    },
    "output_dir": "outputs/recipe",
    "push": {"repo_id": None, "private": True, "dry_run": True},
    "seed": 0,
    "num_threads": None,
}


def parse_value(text: str) -> Any:
    """YAML scalar parsing for command-line overrides (``3e-4`` -> float, ``null`` -> None, ``[1, 2]`` -> list)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(recipe: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    """Apply ``--key value`` / ``--key=value`` pairs (dotted keys for nested values) to a recipe dict.

    Raises:
        ValueError: a flag without a value, or a token that is not a flag.
    """
    out = copy.deepcopy(recipe)
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise ValueError(f"expected --key value overrides, got {tok!r}")
        if "=" in tok:
            key, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise ValueError(f"override {tok} has no value")
            key, value = tok[2:], extra[i + 1]
            i += 2
        node = out
        parts = key.replace("-", "_").split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"cannot set {key!r}: {p!r} is not a mapping")
        # a method option stays text here: load_recipe types it with the method's config (HfArgumentParser)
        node[parts[-1]] = _OptionText(value) if parts[0] == "method_config" and len(parts) == 2 else parse_value(value)
    return out


class _OptionText(str):
    """The text of a ``--method_config.<option>`` override, typed later by the method's config dataclass."""


def type_method_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the ``--method_config.*`` texts typed: config fields (and aliases) by
    ``transformers.HfArgumentParser`` from the method's config dataclass, the same class the YAML values fill (and
    ``hf-unlearn unlearn --set`` parses with); other keys (a recorder's options, ``per_device_batch_size``) as YAML.
    """
    from hf_unlearn.registry import get_method

    if not isinstance(options, dict):
        return options  # check_recipe names the bad value
    texts = {k: str(v) for k, v in options.items() if isinstance(v, _OptionText)}
    if not texts:
        return options
    cls = get_method(method).config_cls  # ValueError listing the methods when unknown
    names = set(cls.option_names())
    try:
        typed = cls.parse_overrides({k: v for k, v in texts.items() if k in names})
    except ValueError as err:
        raise ValueError(f"recipe method_config of {method!r}: {err}") from err
    out = dict(options)
    for k, text in texts.items():
        out[k] = typed[cls.aliases.get(k, k)] if k in names else parse_value(text)  # keep the name as written
    return out


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe at ``path`` with overrides applied and defaults filled in.

    Raises:
        KeyError: unknown top-level or section keys (lists the valid ones). ValueError: no method.
    """
    raw = yaml.safe_load(Path(path).read_text()) or {}
    raw = apply_overrides(raw, overrides or [])
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise KeyError(f"unknown recipe key(s) {unknown}; valid keys: {sorted(TOP_KEYS)}")
    recipe: dict[str, Any] = {}
    for key, default in TOP_KEYS.items():
        value = raw.get(key, copy.deepcopy(default))
        if isinstance(default, dict) and key not in ("method_config", "model"):
            if not isinstance(value, dict):
                raise ValueError(f"recipe value {key} must be a mapping of {sorted(default)}, got {value!r}")
            bad = sorted(set(value) - set(default))
            if bad:
                raise KeyError(f"unknown {key} option(s) {bad}; valid options: {sorted(default)}")
            value = {**default, **value}
        recipe[key] = value
    if not recipe["method"]:
        raise ValueError("the recipe names no method (set `method:`); see `hf-unlearn methods`")
    recipe["method_config"] = type_method_options(recipe["method"], recipe["method_config"])
    check_recipe(recipe)
    return recipe


_FLOAT_KEYS = {"num_epochs", "learning_rate"}  # numbers that may be written as ints or floats


def _check_value(where: str, value: Any, default: Any) -> None:
    if default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        want = "true or false"
    elif isinstance(default, (int, float)) and (isinstance(default, float) or where.rsplit(".", 1)[-1] in _FLOAT_KEYS):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        want = "a string"
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
        want = "a mapping"
    else:
        return
    if not ok:
        raise ValueError(f"recipe value {where} must be {want}, got {value!r} ({type(value).__name__})")


def check_recipe(recipe: dict[str, Any]) -> None:
    """Check every value's type, the method's name and its ``method_config`` BEFORE anything trains.

    Raises:
        ValueError: a value of the wrong type or out of range (naming the key and the value), an unknown method.
        KeyError: an unknown ``method_config`` option (suggesting the closest valid name).
    """
    for key, default in TOP_KEYS.items():
        value = recipe[key]
        if isinstance(default, dict) and key not in ("method_config", "model"):
            _check_value(key, value, default)
            for sub, sub_default in default.items():
                _check_value(f"{key}.{sub}", value[sub], sub_default)
        elif key in ("model", "method_config"):
            if not isinstance(value, dict):
                raise ValueError(f"recipe value {key} must be a mapping, got {value!r}")
        elif key == "method":
            if not isinstance(value, str):
                raise ValueError(f"recipe value method must be a method name, got {value!r}")
        else:
            _check_value(key, value, default)
    if recipe["num_threads"] is not None and (
        not isinstance(recipe["num_threads"], int) or isinstance(recipe["num_threads"], bool)
    ):
        raise ValueError(f"recipe value num_threads must be an integer or null, got {recipe['num_threads']!r}")
    from hf_unlearn.api import build_config, check_options
    from hf_unlearn.pipeline import paired_splits
    from hf_unlearn.registry import get_method

    paired_splits(recipe["benchmark"]["forget_split"])
    ft = recipe["finetune"]
    for name, lo in (("num_epochs", 0), ("learning_rate", 0), ("batch_size", 0)):
        if ft[name] <= lo:
            raise ValueError(f"recipe value finetune.{name} must be > {lo}, got {ft[name]}")
    spec = get_method(recipe["method"])  # ValueError listing the valid names
    # options of the method's training-time recorder (e.g. partial_amnesiac's kappa): its runner hands them over
    recorder_keys = set(getattr(sys.modules[spec.method_cls.__module__], "RECORDING_KEYS", ()))
    mcfg = {
        k: v for k, v in recipe["method_config"].items() if k != "per_device_batch_size" and k not in recorder_keys
    }
    check_options(recipe["method"], mcfg)
    try:
        build_config(recipe["method"], None, **mcfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"recipe method_config of {recipe['method']!r}: {err}") from err


def per_device(global_batch: int, per_device_batch: int | None, world: int) -> tuple[int, int]:
    """Split a global batch into (per-device batch, gradient accumulation steps) for ``world`` processes.

    Raises:
        ValueError: when the global batch is not a multiple of per_device x world.
    """
    pd = per_device_batch or max(1, global_batch // world)
    if global_batch % (pd * world):
        raise ValueError(
            f"batch_size {global_batch} must be a multiple of per_device_batch_size ({pd}) x processes ({world})"
        )
    return pd, global_batch // (pd * world)


def _data_sha256(ds: Any) -> str:
    rows = [json.dumps(r, sort_keys=True) for r in ds]
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def build_model(spec: dict[str, Any], texts: list[str], seed: int):
    from hf_unlearn.models import load_model, tiny_causal_lm

    spec = dict(spec)
    if "name" in spec:
        return load_model(spec.pop("name"), **spec)
    arch = spec.pop("arch", "llama")
    return tiny_causal_lm(arch, texts=texts, seed=spec.pop("seed", seed), **spec)


def run(recipe: dict[str, Any]) -> dict[str, Any]:
    """Run a loaded recipe; returns the run summary (also written to ``output_dir/run_summary.json``)."""
    import torch
    from accelerate import PartialState

    import hf_unlearn
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.pipeline import Context, Setting, builtin_runners, tokenizer_corpus
    from hf_unlearn.training import finetune
    from hf_unlearn.utils.hashing import weights_hash

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU: gloo when launched with several processes
    world, rank = state.num_processes, state.process_index
    threads = recipe["num_threads"] or max(1, (os.cpu_count() or 1) // world)
    if not torch.cuda.is_available():
        torch.set_num_threads(int(threads))
    out = Path(recipe["output_dir"])
    b, ft, method = recipe["benchmark"], recipe["finetune"], recipe["method"]
    seed = recipe["seed"]
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. benchmark (deterministic, identical on every rank)
    bench = build(n_authors=b["n_authors"], seed=b["seed"], qa_per_author=b["qa_per_author"])
    forget_split = b["forget_split"]
    pct = int(forget_split[-2:])
    retain_split, holdout_split = f"retain{100 - pct}", f"holdout{forget_split[-2:]}"

    # 2. base model (deterministic from the seed)
    base, tok = build_model(recipe["model"], tokenizer_corpus(bench), seed)

    # 3. fine-tune the target on `full`, with the recorders the method needs (if any)
    ft_pd, ft_ga = per_device(ft["batch_size"], ft["per_device_batch_size"], world)
    if method not in hf_unlearn.list_methods():
        raise ValueError(f"unknown method {method!r}; valid methods: {hf_unlearn.list_methods()}")
    runner = builtin_runners().get(method)
    mcfg = dict(recipe["method_config"])
    # method_config.batch_size is global too (default: the runner's tiny-CPU default), split over the processes
    m_global = mcfg.pop("batch_size", (runner.defaults.get("batch_size") if runner is not None else None))
    m_pd_req = mcfg.pop("per_device_batch_size", None)
    if m_global is not None and method == "ssd":  # the importance batch: whole batches go to the processes
        mcfg["batch_size"] = m_global
    elif m_global is not None:
        m_pd, m_ga = per_device(m_global, m_pd_req, world)
        mcfg.update(batch_size=m_pd, gradient_accumulation_steps=m_ga)
    setting = Setting(
        name="recipe",
        n_authors=b["n_authors"],
        qa_per_author=b["qa_per_author"],
        seed=seed,
        ft_epochs=ft["num_epochs"],
        ft_lr=ft["learning_rate"],
        ft_batch_size=ft_pd,
        max_length=ft["max_length"],
        forget_split=forget_split,
        lora=ft["lora"],
        method_overrides={method: mcfg},
    )
    ft_kwargs = dict(
        num_epochs=ft["num_epochs"],
        max_steps=ft["max_steps"],
        learning_rate=ft["learning_rate"],
        batch_size=ft_pd,
        gradient_accumulation_steps=ft_ga,
        max_length=ft["max_length"],
        seed=seed,
        lora=ft["lora"],
        disable_tqdm=not state.is_main_process,
    )
    ctx = Context(
        setting=setting, bench=bench, tokenizer=tok, base_model=base, finetune_kwargs=ft_kwargs, workdir=out / "work"
    )
    callbacks = runner.recorders(ctx) if runner is not None and runner.recorders is not None else []
    if callbacks:
        ctx.recorders[method] = callbacks
    t = time.perf_counter()
    ctx.target_ft = finetune(copy.deepcopy(base), tok, bench["full"], callbacks=callbacks, **ft_kwargs)
    ctx.target = ctx.target_ft.model
    timings["finetune"] = time.perf_counter() - t
    finetuned_hash = weights_hash(ctx.target)

    # 4. unlearn
    t = time.perf_counter()
    if method == "retrain":  # retrain = the fine-tuning recipe on the retain split
        mcfg.setdefault("gradient_accumulation_steps", ft_ga)
        mcfg.setdefault("max_steps", ft["max_steps"])
    if runner is not None:
        result = runner.run(ctx)
    else:  # a method without a benchmark runner: the plain API
        result = hf_unlearn.unlearn(
            copy.deepcopy(ctx.target), ctx.forget, ctx.retain, method=method, tokenizer=tok, **mcfg
        )
    timings["unlearn"] = time.perf_counter() - t
    unlearned_hash = weights_hash(result.model)

    # 5. evaluate (optional; sharded over the processes by the evaluation runner)
    ev = recipe["evaluate"]
    if ev["enabled"]:
        try:
            from hf_unlearn.evaluation import evaluate_unlearning
        except ImportError:
            evaluate_unlearning = None
            print("hf_unlearn.evaluation is not installed: skipping evaluation", file=sys.stderr)
        if evaluate_unlearning is not None:
            t = time.perf_counter()
            kw = dict(
                forget_split=forget_split,
                retain_split=retain_split,
                holdout_split=holdout_split,
                generation=ev["generation"],
                max_new_tokens=ev["max_new_tokens"],
                retain_max_items=ev["retain_max_items"],
                gradnorm=ev["gradnorm"],
                max_length=ft["max_length"],
            )
            gold_report = None
            if ev["gold"]:
                gold = finetune(copy.deepcopy(base), tok, bench[retain_split], **ft_kwargs).model
                gold_report = evaluate_unlearning(gold, tok, bench, skip_forget_quality=True, **kw)
            report = evaluate_unlearning(
                result.model, tok, bench, reference=gold_report, skip_forget_quality=gold_report is None, **kw
            )
            result.metrics = {**report, **({"gold": gold_report} if gold_report else {})}
            timings["evaluate"] = time.perf_counter() - t

    # 6. save (rank 0), hashes from every rank
    hashes = {
        "data_sha256": _data_sha256(bench["full"]),
        "base_weights": weights_hash(base),
        "finetuned_weights": finetuned_hash,
        "unlearned_weights": unlearned_hash,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"hashes_rank{rank}.json").write_text(json.dumps(hashes, indent=2, sort_keys=True))
    summary: dict[str, Any] = {
        "method": method,
        "num_processes": world,
        "per_device_batch_size": ft_pd,
        "gradient_accumulation_steps": ft_ga,
        "hashes": hashes,
        "n_forget": len(result.forget_uids),
        "finetune_train_loss": ctx.target_ft.train_loss,
        "timings": timings,
    }
    if state.is_main_process:
        from hf_unlearn.hub import push_to_hub, save_unlearned
        from hf_unlearn.model_card import summarize_evaluation

        save_unlearned(result, out / "model")
        summary["metrics"] = summarize_evaluation({k: v for k, v in (result.metrics or {}).items() if k != "gold"})
        push = recipe["push"]
        if push.get("repo_id"):
            summary["push"] = push_to_hub(
                out / "model", push["repo_id"], private=push["private"], dry_run=push["dry_run"]
            )
        summary["timings"]["total"] = time.perf_counter() - t0
        (out / "run_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        print(json.dumps({"output_dir": str(out), "num_processes": world, **hashes}, indent=2))
    state.wait_for_everyone()
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="A recipe YAML (e.g. recipes/baselines/grad_diff.yaml).")
    args, extra = p.parse_known_args(argv)
    try:
        recipe = load_recipe(args.config, extra)
    except (KeyError, ValueError) as err:
        p.error(str(err))
    run(recipe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
