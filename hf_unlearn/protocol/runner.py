"""Step 3-4 of the protocol: one generic runner drives every registered method from what its class declares.

A method plugs in by describing itself (``hf_unlearn.methods.base.UnlearningMethod``): ``benchmark_defaults``,
``benchmark_bf16``, the recorders it needs while the target trains (``training_recorders``), the extra ``unlearn``
arguments it takes on the benchmark (``benchmark_inputs``: the holdout, a recording, D), and, for a run of another
shape, ``benchmark_run`` (S3T serves a system trained ahead of time; retrain reuses the gold fine-tune). Nothing
here names a method.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hf_unlearn.protocol.context import Context, autocast_for, prepare
from hf_unlearn.protocol.markdown import markdown_table
from hf_unlearn.protocol.nll import nll_row
from hf_unlearn.protocol.settings import SETTINGS, Setting, paired_splits

logger = logging.getLogger("hf_unlearn")


@dataclass
class MethodRunner:
    """How a method runs on the benchmark.

    Attributes:
        recorders: ``ctx -> list of TrainerCallbacks`` attached while the TARGET is fine-tuned (their cost is
            the method's training-time overhead); None when the method records nothing.
        run: ``ctx -> UnlearnResult`` (works on its own copy of the target).
        defaults: config overrides for the tiny CPU settings.
    """

    run: Callable[[Context], Any]
    recorders: Callable[[Context], list[Any]] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


_RUNNERS: dict[str, MethodRunner] = {}


def register_runner(name: str, runner: MethodRunner) -> None:
    """Replace the generic runner of ``name`` (e.g. an experiment's own)."""
    _RUNNERS[name] = runner


NOCAL = "-nocal"
CAL = "-cal"
RETRAINED = "-retrained"


def _dispatch(method: str) -> Callable[..., Any]:
    """``hf_unlearn.api.unlearn`` bound to ``method`` (looked up at call time, so tests can patch it)."""
    import hf_unlearn.api as api

    def call(model: Any, forget: Any, retain: Any = None, **kwargs: Any) -> Any:
        return api.unlearn(model, forget, retain, method=method, **kwargs)

    return call


def method_config(method: str, ctx: Context) -> dict[str, Any]:
    """The benchmark config of ``method``: its declared defaults, the setting's ``max_length`` (and ``bf16`` when the
    method declares ``benchmark_bf16``), then the setting's ``method_overrides``."""
    spec = _spec(method)
    return {
        **spec.benchmark_defaults,
        "max_length": ctx.setting.max_length,
        **(bf16_option(method, ctx) if spec.method_cls.benchmark_bf16 else {}),
        **ctx.overrides(method),
    }


def _spec(method: str) -> Any:
    from hf_unlearn.registry import get_method

    return get_method(method)


def method_runner(method: str) -> MethodRunner:
    """The generic runner of a registered method, built from what its class declares.

    The generic run unlearns ``ctx.forget`` (with ``ctx.retain``) from a deep copy of the target, with
    :func:`method_config` and the method's ``benchmark_inputs``; a method with ``benchmark_run`` runs that instead.
    """
    spec = _spec(method)
    cls = spec.method_cls

    def run(ctx: Context) -> Any:
        call = _dispatch(method)
        own = cls.benchmark_run(ctx, call)
        if own is not None:
            return own
        cfg = method_config(method, ctx)
        extra = cls.benchmark_inputs(ctx, cfg)
        return call(copy.deepcopy(ctx.target), ctx.forget, ctx.retain, tokenizer=ctx.tokenizer, **extra, **cfg)

    from hf_unlearn.methods.base import UnlearningMethod

    records = cls.training_recorders.__func__ is not UnlearningMethod.training_recorders.__func__
    return MethodRunner(
        run=run, recorders=cls.training_recorders if records else None, defaults=spec.benchmark_defaults
    )


def builtin_runners() -> dict[str, MethodRunner]:
    """The runner of every registered method (the generic one, unless :func:`register_runner` replaced it)."""
    from hf_unlearn.registry import list_methods

    runners = {name: method_runner(name) for name in list_methods()}
    runners.update(_RUNNERS)
    return runners


def retrained_row(method: str, result: Any, ctx: Context) -> Any:
    """The ``<method>-retrained`` row: the method's result after its own retraining (``benchmark_retrained``)."""
    return _spec(method).method_cls.benchmark_retrained(result, ctx)


def s3t_retrained(result: Any, ctx: Context) -> Any:
    """The S3T system of ``result`` after ``retrain()`` (kept for callers of the old name; see
    :func:`retrained_row`)."""
    return retrained_row("s3t", result, ctx)


def bf16_option(method: str, ctx: Context) -> dict[str, Any]:
    """``{"bf16": True}`` when the setting asks for bf16 and ``method``'s config has that option, else ``{}``."""
    if ctx.setting.bf16 and "bf16" in _spec(method).config_cls.field_names():
        return {"bf16": True}
    return {}


def was_calibrated(result: Any) -> bool:
    """Whether an unlearning result stopped by calibration (its own report, or one of RUM's groups')."""
    d = getattr(result, "details", None) or {}
    groups = [g for g in d.get("groups", []) if isinstance(g, dict)]
    return "calibration" in d or any(g.get("calibration") is not None for g in groups)


def can_calibrate(method: str) -> bool:
    """Whether ``method``'s config has the calibration fields (``calibrate``; see docs/calibration.md)."""
    import dataclasses

    cfg = _spec(method).config_cls
    return dataclasses.is_dataclass(cfg) and "calibrate" in {f.name for f in fields(cfg)}


def run_uncalibrated(runner: MethodRunner, ctx: Context, method: str, calibrate: bool = False) -> Any:
    """``runner`` with ``calibrate=False`` for ``method`` (the ``"<method>-nocal"`` row of calibration_variants), or
    with ``calibrate=True`` (the ``"<method>-cal"`` row of a method whose default is uncalibrated, e.g. NPO)."""
    s = ctx.setting
    overrides = {**s.method_overrides, method: {**ctx.overrides(method), "calibrate": calibrate}}
    ctx.setting = replace(s, method_overrides=overrides)
    try:
        return runner.run(ctx)
    finally:
        ctx.setting = s


def run_protocol(
    setting: str | Setting = "demo",
    methods: list[str] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    evaluate: bool = False,
    price_recording: bool = False,
    forget_splits: list[str] | None = None,
    keep_models: bool = True,
) -> dict[str, Any]:
    """Run the whole protocol and return (and optionally write) a JSON-able report.

    The target is fine-tuned once; each forget split then gets its gold model (fine-tuned on the matching retain
    split), every method's unlearning run, and (with ``evaluate``) the full suite.

    Args:
        setting: a name from :data:`SETTINGS` or a :class:`Setting`.
        methods: method names (default: every registered method with a runner).
        out_dir: where to write ``<setting>.json`` and ``<setting>.md``.
        progress: show progress bars.
        evaluate: run the full TOFU-style evaluation suite (needs ``hf_unlearn.evaluation``).
        price_recording: also fine-tune the target recipe without recorders, to price their overhead.
        forget_splits: e.g. ``["forget01", "forget05", "forget10"]`` (default: the setting's ``forget_split``).
        keep_models: keep every unlearned model (``report["_results_per_split"]``) and every gold model. With
            ``False`` each split's unlearned and gold models are freed once its rows and evaluation are computed, so
            memory holds one split's models at a time (a real model: ~0.5 GB a copy); the context keeps the base,
            the target and what runners cache across splits (``ctx.cache``, e.g. the trained S3T system).

    Returns:
        ``{"setting", "finetune", "splits": {split: {"rows", "details"[, "evaluation"]}}, "total_seconds"}``, with
        the first split's ``rows`` / ``details`` / ``evaluation`` also at the top level.
    """
    from tqdm.auto import tqdm

    s = SETTINGS[setting] if isinstance(setting, str) else setting
    runners = builtin_runners()
    methods = methods or sorted(runners)
    splits = list(forget_splits or [s.forget_split])
    for x in splits:
        paired_splits(x)
    t0 = time.perf_counter()
    ctx = prepare(replace(s, forget_split=splits[0]), methods, Path(out_dir) if out_dir else None, progress,
                  price_recording)  # fmt: skip
    ctx.setting = s
    per_split: dict[str, dict[str, Any]] = {}
    all_results: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, ...], str] = {}
    for split in splits:
        key = tuple(ctx.bench[split]["uid"])
        if key in seen:  # e.g. forget01 = forget05 = one author when there are 20: same data, so the same results
            same = seen[key]
            logger.info("%s has the same forget set as %s: its rows are %s's", split, same, same)
            per_split[split] = {**per_split[same], "same_forget_set_as": same}
            all_results[split] = all_results[same]
            ctx.golds[split] = ctx.golds[same]
            continue
        seen[key] = split
        ctx.use_split(split)
        rows: dict[str, dict[str, Any]] = {
            "target": {**nll_row(ctx.target, ctx), "unlearn_seconds": None},
            "gold (retrain)": {**nll_row(ctx.gold, ctx), "unlearn_seconds": ctx.gold_ft.wall_time},
        }
        results: dict[str, Any] = {}
        queue = [(m, m) for m in methods]
        for m, base in tqdm(queue, desc=f"unlearning {split}", disable=not progress):
            try:
                if m == base:
                    res = runners[base].run(ctx)
                elif m == base + RETRAINED:
                    res = retrained_row(base, results[base], ctx)
                else:
                    res = run_uncalibrated(runners[base], ctx, base, calibrate=m == base + CAL)
                if m == base and s.retrained_rows and _spec(base).method_cls.retrained_row:
                    queue.insert(queue.index((m, base)) + 1, (m + RETRAINED, base))
            except Exception as err:  # one failing method is a row of the report, not the end of a long run
                logger.error("%s failed on %s: %s: %s", m, split, type(err).__name__, err)
                rows[m] = {
                    "forget_nll": float("nan"),
                    "retain_nll": float("nan"),
                    "holdout_nll": float("nan"),
                    "unlearn_seconds": None,
                    "error": f"{type(err).__name__}: {err}",
                }
                continue
            if m == base and s.calibration_variants:
                if was_calibrated(res):  # calibrated by default: also the same recipe without
                    queue.insert(queue.index((m, base)) + 1, (m + NOCAL, base))
                elif _spec(base).method_cls.calibrated_variant and can_calibrate(base):  # off by default: also with
                    queue.insert(queue.index((m, base)) + 1, (m + CAL, base))
            try:
                row = nll_row(res.model, ctx)
            except RuntimeError as err:  # e.g. an S3T system whose every shard was cut: a result, not a crash
                logger.warning("%s: the unlearned model cannot serve: %s", m, err)
                rows[m] = {
                    "forget_nll": float("nan"),
                    "retain_nll": float("nan"),
                    "holdout_nll": float("nan"),
                    "unlearn_seconds": res.timings.get("unlearn"),
                    "error": str(err),
                }
                continue
            results[m] = res
            rows[m] = {
                **row,
                "unlearn_seconds": res.timings.get("unlearn"),
                "peak_rss_mib": res.memory.get("peak_rss_mib"),
                "tokens": res.tokens_processed,
            }
        entry: dict[str, Any] = {
            "n_forget": len(ctx.forget),
            "n_retain": len(ctx.retain),
            "rows": rows,
            "details": {m: _short(r.details) for m, r in results.items()},
        }
        if evaluate:
            entry["evaluation"] = _evaluate_all(ctx, results)
        per_split[split] = entry
        all_results[split] = results
        if not keep_models:
            all_results[split] = {}
            results.clear()
            ctx.golds[split].model = None
            ctx.gold = None
            gc.collect()
    first = per_split[splits[0]]
    report = {
        "setting": asdict(s),
        "forget_splits": splits,
        "finetune": {
            "target_seconds": ctx.target_ft.wall_time,
            "plain_seconds": ctx.plain_ft.wall_time,
            "gold_seconds": ctx.golds[splits[0]].wall_time,
            "gold_seconds_per_split": {x: ctx.golds[x].wall_time for x in splits},
            "target_train_loss": ctx.target_ft.train_loss,
            "n_full": len(ctx.bench["full"]),
        },
        "rows": first["rows"],
        "details": first["details"],
        "splits": per_split,
        "total_seconds": time.perf_counter() - t0,
    }
    if evaluate:
        report["evaluation"] = first["evaluation"]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{s.name}.json").write_text(json.dumps(report, indent=2, default=str))
        (out / f"{s.name}.md").write_text(markdown_table(report))
    report["_context"] = ctx
    report["_results"] = all_results[splits[0]]
    report["_results_per_split"] = all_results
    return report


def _short(details: dict[str, Any]) -> dict[str, Any]:
    """The scalar details, plus small flat dicts/lists of scalars (e.g. S3T's served prefix length per shard)."""

    def scalar(v: Any) -> bool:
        return isinstance(v, (int, float, str, bool)) or v is None

    def small(v: Any) -> bool:
        if isinstance(v, dict):
            return len(v) <= 64 and all(scalar(x) for x in v.values())
        return isinstance(v, (list, tuple)) and len(v) <= 64 and all(scalar(x) for x in v)

    return {k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v) for k, v in details.items()
            if scalar(v) or small(v)}  # fmt: skip


def evaluation_kwargs(ctx: Context) -> dict[str, Any]:
    """The :func:`~hf_unlearn.evaluation.evaluate_unlearning` options of the setting, for the split being served."""
    s = ctx.setting
    retain_split, holdout_split = paired_splits(ctx.forget_split)
    return dict(
        forget_split=ctx.forget_split,
        retain_split=retain_split,
        holdout_split=holdout_split,
        max_new_tokens=s.eval_max_new_tokens,
        batch_size=s.eval_batch_size,
        gradnorm=s.eval_gradnorm,
        retain_max_items=s.eval_retain_max_items,
    )


def _evaluate_all(ctx: Context, results: dict[str, Any]) -> dict[str, Any]:
    from hf_unlearn.evaluation import evaluate_unlearning

    kw = evaluation_kwargs(ctx)
    with autocast_for(ctx):
        gold = evaluate_unlearning(ctx.gold, ctx.tokenizer, ctx.bench, skip_forget_quality=True, **kw)
        target = evaluate_unlearning(ctx.target, ctx.tokenizer, ctx.bench, reference=gold, **kw)
    out = {"gold": gold, "target": target}
    for m, res in results.items():
        # A method whose model has no per-sample parameter gradients (an S3T ensemble toggles which adapters are
        # live inside every forward) declares it: the GradNorm attack is then reported as not applicable.
        why_not = _gradnorm_not_applicable(res)
        gradnorm_ok = why_not is None
        with autocast_for(ctx):
            out[m] = evaluate_unlearning(
                res.model,
                ctx.tokenizer,
                ctx.bench,
                reference=gold,
                **{**kw, "gradnorm": kw["gradnorm"] and gradnorm_ok},
            )
        if kw["gradnorm"] and not gradnorm_ok:
            out[m].setdefault("notes", []).append(why_not)
    return out


def _gradnorm_not_applicable(result: Any) -> str | None:
    """Why the GradNorm attack does not apply to ``result``'s model (its method's declaration), or None."""
    from hf_unlearn.registry import get_method

    try:
        return get_method(getattr(result, "method", None)).method_cls.gradnorm_not_applicable
    except ValueError:  # a result of an unregistered method (a custom runner): a plain model
        return None
