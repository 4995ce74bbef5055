"""The benchmark protocol (shared/BENCHMARK.md) end to end, used by ``hf-unlearn demo`` and ``benchmarks/run.py``.

1. Build the embedded fictitious-authors benchmark.
2. Fine-tune the target on ``full`` (with every training-time recorder the chosen methods need) and the gold
   model on the matching retain split, with the same recipe.
3. Unlearn the forget split from a copy of the target with each method.
4. Evaluate every model and report quality and cost.

Each method plugs in through a :class:`MethodRunner`: which recorders it needs while the target is fine-tuned,
and how to run it on the benchmark. Methods register runners with :func:`register_runner`.
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

import torch

logger = logging.getLogger("hf_unlearn")


def paired_splits(forget_split: str) -> tuple[str, str]:
    """The retain and holdout splits that go with a forget split: ``"forget05"`` -> ``("retain95", "holdout05")``."""
    pct = forget_split[len("forget") :]
    if not forget_split.startswith("forget") or not pct.isdigit() or not 0 < int(pct) < 100:
        raise ValueError(f"not a forget split name (forgetNN, 0 < NN < 100): {forget_split!r}")
    return f"retain{100 - int(pct)}", f"holdout{pct}"


@dataclass
class Setting:
    """One benchmark configuration (model size, data size, recipe, per-method overrides)."""

    name: str
    n_authors: int = 20
    qa_per_author: int = 20
    seed: int = 0
    arch: str = "llama"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    vocab_size: int = 1024
    ft_epochs: float = 25
    ft_lr: float = 3e-3
    ft_batch_size: int = 16
    max_length: int = 96
    forget_split: str = "forget10"
    model_name: str | None = None  # e.g. "smollm2-135m-offline": a pretrained model + LoRA fine-tune
    # A tiny model first pretrained on QA about OTHER people (hf_unlearn.training.pretrain), as TOFU starts from a
    # pretrained model; 0 epochs = the tiny model starts from random weights (tokenizer: tokenizer_corpus(bench)).
    pretrain_epochs: float = 0
    pretrain_authors: int = 40
    pretrain_seed: int = 123
    pretrain_lr: float = 5e-3
    lora: Any = None
    eval_max_new_tokens: int = 48
    eval_gradnorm: bool = True
    eval_retain_max_items: int | None = 200
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Also run every calibrated method with calibrate=False, as row "<method>-nocal" (docs/calibration.md).
    calibration_variants: bool = False
    # bf16 autocast for fine-tuning, the methods that train through a Trainer, and evaluation (CPU with AVX512-BF16
    # or a GPU); weights stay fp32, and the retrain-free methods (SSD, embedding_ga, partial_amnesiac) run fp32.
    bf16: bool = False
    eval_batch_size: int = 32
    # Also serve S3T after retrain(): row "s3t-retrained" (the deletion's cut stages rebuilt on the survivors, exact).
    s3t_retrained_row: bool = False

    @property
    def retain_split(self) -> str:
        return paired_splits(self.forget_split)[0]

    @property
    def holdout_split(self) -> str:
        return paired_splits(self.forget_split)[1]


SETTINGS: dict[str, Setting] = {
    "test": Setting(
        "test",
        n_authors=5,
        qa_per_author=6,
        hidden_size=48,
        num_layers=4,
        vocab_size=400,
        ft_epochs=12,
        ft_lr=5e-3,
        ft_batch_size=8,
        max_length=64,
        forget_split="forget10",
        eval_max_new_tokens=12,
        eval_gradnorm=False,
        # from scratch still: with the pretrained base (pretrain_epochs=10, pretrain_authors=20) embedding_ga leaves
        # forget05 untouched and tests/test_methods_matrix.py fails (issue 14; see the embedding_ga runner)
    ),
    "demo": Setting(
        "demo",
        n_authors=20,
        qa_per_author=20,
        hidden_size=64,
        vocab_size=768,
        ft_epochs=20,
        ft_lr=5e-3,
        pretrain_epochs=15,
        s3t_retrained_row=True,
    ),
    "cpu-tiny": Setting("cpu-tiny", n_authors=40, qa_per_author=20, pretrain_epochs=15, pretrain_authors=80),
    "gpu-smollm2": Setting(
        "gpu-smollm2",
        n_authors=100,
        qa_per_author=20,
        model_name="smollm2-135m-offline",
        lora={"r": 32, "lora_alpha": 64, "lora_dropout": 0.05},
        ft_epochs=5,
        ft_lr=1e-4,
        ft_batch_size=32,
        max_length=128,
        hidden_size=576,
        num_layers=30,
    ),
    # The full protocol on the real pretrained SmolLM2-135M-Instruct on 2 CPU cores (`make install-smollm2`), sized
    # to finish within an hour with every method and the full metric suite: 20 fictitious authors x 4 QA (forget10 =
    # 2 authors, forget05 = forget01 = 1 author), LoRA r32 on every linear layer, 3 epochs, bf16 autocast.
    "cpu-smollm2": Setting(
        "cpu-smollm2",
        n_authors=20,
        qa_per_author=4,
        model_name="smollm2-135m-offline",
        lora={"r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "target_modules": "all-linear"},
        ft_epochs=3,
        ft_lr=1e-3,
        ft_batch_size=16,
        max_length=96,
        hidden_size=576,
        num_layers=30,
        eval_max_new_tokens=32,
        eval_gradnorm=False,
        eval_retain_max_items=24,
        eval_batch_size=16,
        bf16=True,
        method_overrides={
            # LiSSA influence over SmolLM2's 49k x 576 embedding table is a diagnostic, not part of the request
            "embedding_ga": {"influence": False},
            # S3T against the plain LoRA fine-tune (the target): the same LoRA config and epochs per stage.
            "s3t": {
                "n_slices": 2,
                "num_epochs": 3,
                "lora": {"r": 32, "lora_alpha": 64, "lora_dropout": 0.05},
            },
        },
    ),
}


@dataclass
class Context:
    """Everything a method runner may use: data, base/target/gold models, recorders, the setting."""

    setting: Setting
    bench: Any
    tokenizer: Any
    base_model: Any
    target: Any = None
    gold: Any = None
    recorders: dict[str, list[Any]] = field(default_factory=dict)
    finetune_kwargs: dict[str, Any] = field(default_factory=dict)
    workdir: Path | None = None
    split: str | None = None  # the forget split being served (default: the setting's)
    golds: dict[str, Any] = field(default_factory=dict)  # forget split -> gold FinetuneResult
    cache: dict[str, Any] = field(default_factory=dict)  # what runners reuse across splits (e.g. a trained S3T)

    @property
    def forget_split(self) -> str:
        return self.split or self.setting.forget_split

    @property
    def forget(self):
        return self.bench[self.forget_split]

    @property
    def retain(self):
        return self.bench[paired_splits(self.forget_split)[0]]

    @property
    def holdout(self):
        return self.bench[paired_splits(self.forget_split)[1]]

    def use_split(self, split: str) -> None:
        """Serve ``split`` from now on: ``forget``/``retain``/``holdout`` follow it, and ``gold`` is the model
        fine-tuned on its retain split (fine-tuned here on first use, with the target's recipe)."""
        from hf_unlearn.training import finetune

        paired_splits(split)
        if split not in self.bench:
            raise ValueError(f"unknown forget split {split!r}; the benchmark has {sorted(self.bench)}")
        self.split = split
        if split not in self.golds:
            logger.info("fine-tuning the gold model for %s on %d examples", split, len(self.retain))
            self.golds[split] = finetune(
                copy.deepcopy(self.base_model), self.tokenizer, self.retain, **self.finetune_kwargs
            )
        self.gold_ft = self.golds[split]
        self.gold = self.gold_ft.model

    def path(self, name: str) -> str:
        """A folder for a method's artefacts (recordings, caches) under the run's work dir."""
        if self.workdir is None:
            import tempfile

            self.workdir = Path(tempfile.mkdtemp(prefix="hf_unlearn_run_"))
        return str(self.workdir / name)

    def overrides(self, method: str) -> dict[str, Any]:
        return dict(self.setting.method_overrides.get(method, {}))


@dataclass
class MethodRunner:
    """How a method runs on the benchmark.

    Attributes:
        recorders: ``ctx -> list of TrainerCallbacks`` attached while the TARGET is fine-tuned (their cost is
            the method's training-time overhead).
        run: ``ctx -> UnlearnResult`` (works on its own copy of the target).
        defaults: config overrides for the tiny CPU settings.
    """

    run: Callable[[Context], Any]
    recorders: Callable[[Context], list[Any]] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


_RUNNERS: dict[str, MethodRunner] = {}


def register_runner(name: str, runner: MethodRunner) -> None:
    _RUNNERS[name] = runner


def _posthoc(method: str, **defaults: Any) -> MethodRunner:
    import hf_unlearn

    def run(ctx: Context):
        cfg = {**defaults, "max_length": ctx.setting.max_length, **bf16_option(method, ctx), **ctx.overrides(method)}
        return hf_unlearn.unlearn(
            copy.deepcopy(ctx.target),
            ctx.forget,
            ctx.retain,
            method=method,
            tokenizer=ctx.tokenizer,
            holdout=ctx.holdout,  # calibrated early stopping (docs/calibration.md); calibrate=False turns it off
            **cfg,
        )

    return MethodRunner(run=run, defaults=defaults)


NOCAL = "-nocal"
CAL = "-cal"
# Methods whose default is uncalibrated but that calibration_variants also runs calibrated (row "<method>-cal"):
# the loss-based methods the calibration issue compares (GA, GradDiff, NPO on forget10).
CALIBRATION_VARIANTS_ON = ("npo",)
RETRAINED = "-retrained"


def s3t_retrained(result: Any, ctx: Context) -> Any:
    """The S3T system of ``result`` after ``retrain()`` on the benchmark's ``full`` minus the deleted uids.

    Deletion serves shorter prefixes at once (milliseconds); ``retrain()`` rebuilds the cut stages on the surviving
    data of their slices (exactly the model trained without the deleted uids), restoring capacity. Its wall time is
    the row's cost.
    """
    import dataclasses

    model = copy.deepcopy(result.model)
    t0 = time.perf_counter()
    new = model.retrain(ctx.bench["full"])
    seconds = time.perf_counter() - t0
    details = {**result.details, "retrain_seconds": seconds, "adapters_retrained": len(new or [])}
    details["served_prefix_lengths"] = {str(k): v for k, v in model.served_prefix_lengths().items()}
    return dataclasses.replace(result, model=model, timings={**result.timings, "unlearn": seconds}, details=details)


def bf16_option(method: str, ctx: Context) -> dict[str, Any]:
    """``{"bf16": True}`` when the setting asks for bf16 and ``method``'s config has that option, else ``{}``."""
    from hf_unlearn.registry import get_method

    if ctx.setting.bf16 and "bf16" in get_method(method).config_cls.field_names():
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

    from hf_unlearn.registry import get_method

    cfg = get_method(method).config_cls
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


def _retrain_runner() -> MethodRunner:
    """``retrain`` on the benchmark IS the gold fine-tune (the same ``finetune`` call on the retain split with the
    same recipe, which ``tests/test_baselines.py`` checks equals the ``retrain`` method): reuse it, with its cost."""

    def run(ctx: Context):
        from hf_unlearn.registry import get_method
        from hf_unlearn.result import UnlearnResult

        s, ft = ctx.setting, ctx.gold_ft
        cfg = get_method("retrain").config_cls(
            num_epochs=s.ft_epochs,
            learning_rate=s.ft_lr,
            batch_size=s.ft_batch_size,
            max_length=s.max_length,
            lora=s.lora,
            seed=s.seed,
        )
        return UnlearnResult(
            model=ctx.gold,
            method="retrain",
            config=cfg,
            forget_uids=list(ctx.forget["uid"]),
            timings={"unlearn": ft.wall_time},
            memory={"peak_rss_mib": round(ft.peak_memory_mib, 1)},
            details={
                "steps": ft.steps,
                "train_loss": ft.train_loss,
                "retain_size": len(ctx.retain),
                "note": "the gold model's fine-tune on the retain split",
            },
            tokenizer=ctx.tokenizer,
            tokens_processed=ft.tokens,
        )

    return MethodRunner(run=run)


def _embedding_ga_runner() -> MethodRunner:
    """Record first-epoch embedding gradients while the target trains, then calibrated recorded ascent."""
    defaults: dict[str, Any] = {}

    def recorders(ctx: Context) -> list[Any]:
        from hf_unlearn.methods.embedding_ga import EmbeddingGradientRecorder

        return [EmbeddingGradientRecorder(ctx.path("embedding_ga_recording"))]

    def run(ctx: Context):
        import hf_unlearn

        rec = ctx.recorders["embedding_ga"][0]
        cfg = {**defaults, "max_length": ctx.setting.max_length, **ctx.overrides("embedding_ga")}
        return hf_unlearn.unlearn(
            copy.deepcopy(ctx.target),
            ctx.forget,
            ctx.retain,
            method="embedding_ga",
            tokenizer=ctx.tokenizer,
            holdout=ctx.holdout,
            recording=str(rec.output_dir),
            **cfg,
        )

    return MethodRunner(run=run, recorders=recorders, defaults=defaults)


def _s3t_runner() -> MethodRunner:
    """Train S3T on ``full`` ahead of time (reported as ``s3t_training``), then serve the deletion request.

    Slices are assigned per author (``group_column="author_id"``): a deletion request names a person, so all of
    that person's data sits in one slice and the request cuts one slice instead of every one.
    """
    defaults: dict[str, Any] = {
        "n_shards": 1,
        "n_slices": 4,
        "group_column": "author_id",
        # Tried on the pretrained demo base: r 32, lr 1e-2, 10 epochs per stage lowered retain NLL (1.36 -> 0.76) but
        # not model utility (0.43 -> 0.36) and made S3T training ~3x slower; kept the former recipe (issue 14). Why:
        # docs/methods/s3t.md, "Recipe on the tiny base" (benchmarks/s3t_demo_recipe.py).
        "lora": {"r": 16, "lora_alpha": 32},
    }

    def run(ctx: Context):
        import hf_unlearn

        if "s3t" not in ctx.cache:  # one trained system serves every forget split (each deletion on its own copy)
            ctx.cache["s3t"] = train(ctx)
        trained, train_seconds = ctx.cache["s3t"]
        res = hf_unlearn.unlearn(copy.deepcopy(trained), list(ctx.forget["uid"]), method="s3t")
        res.timings["s3t_training"] = train_seconds
        res.details.update(s3t_training_seconds=train_seconds, delete_seconds=res.timings["delete"])
        return res

    def train(ctx: Context) -> tuple[Any, float]:
        from hf_unlearn.methods.s3t import S3TConfig, S3TModel

        s = ctx.setting
        cfg = S3TConfig(
            **{
                "num_epochs": 3,  # per stage (official): stage t re-reads t of the L slices, B sequences a shard
                "learning_rate": s.ft_lr,
                "batch_size": s.ft_batch_size,
                "max_length": s.max_length,
                "seed": s.seed,
                **defaults,
                **bf16_option("s3t", ctx),
                **ctx.overrides("s3t"),
            }
        )
        t0 = time.perf_counter()
        model = S3TModel.from_training(copy.deepcopy(ctx.base_model), ctx.tokenizer, ctx.bench["full"], cfg)
        return model, time.perf_counter() - t0

    return MethodRunner(run=run, defaults=defaults)


def builtin_runners() -> dict[str, MethodRunner]:
    """Runners of every registered method that has one (methods add theirs in ``benchmark_runner()``)."""
    import importlib

    from hf_unlearn.registry import get_method, list_methods

    runners = {
        "grad_ascent": _posthoc("grad_ascent", num_epochs=4, learning_rate=1e-3, batch_size=8),
        "grad_diff": _posthoc("grad_diff", num_epochs=4, learning_rate=1e-3, batch_size=8),
        "npo": _posthoc("npo", num_epochs=4, learning_rate=1e-3, batch_size=8),
        "retrain": _retrain_runner(),
        "embedding_ga": _embedding_ga_runner(),
        "s3t": _s3t_runner(),
        "partial_grad_ascent": _posthoc("partial_grad_ascent", num_epochs=4, learning_rate=1e-3, batch_size=8),
        "partial_label_flip": _posthoc(
            "partial_label_flip", num_epochs=4, learning_rate=2e-3, batch_size=8, flip="random"
        ),
        # OpenUnlearning baselines; tiny-CPU learning rates (RMU: its retain weight alpha 1200 is tuned for 7B models)
        "simnpo": _posthoc("simnpo", num_epochs=4, learning_rate=3e-3, batch_size=8),
        "idk_dpo": _posthoc("idk_dpo", num_epochs=4, learning_rate=5e-4, batch_size=8),
        "rmu": _posthoc("rmu", num_epochs=4, learning_rate=1e-2, batch_size=8, alpha=10.0),
        "undial": _posthoc("undial", num_epochs=4, learning_rate=1e-3, batch_size=8),
        "wga": _posthoc("wga", num_epochs=4, learning_rate=1e-3, batch_size=8),
    }
    for name in list_methods():
        if name in runners:
            continue
        cls_module = get_method(name).method_cls.__module__
        for mod_name in (cls_module.rsplit(".", 1)[0], cls_module):  # the method's package, then its module
            factory = getattr(importlib.import_module(mod_name), "benchmark_runner", None)
            if factory is not None:
                runners[name] = factory()
                break
    runners.update(_RUNNERS)
    return runners


def qa_corpus(ds) -> list[str]:
    """Text to train a tokenizer on: the prompts and every answer form of a QA dataset."""
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(ds["question"], ds["answer"])]
    for col in ("paraphrased_answer",):
        if col in ds.column_names:
            texts += list(ds[col])
    if "perturbed_answers" in ds.column_names:
        texts += [p for ps in ds["perturbed_answers"] for p in ps]
    return texts


def tokenizer_corpus(bench) -> list[str]:
    """Text to train a benchmark's tiny tokenizer on: ``full`` plus every holdout split.

    The tokenizer stands for a pretrained one, which has seen the holdout authors' text too. Trained on ``full``
    alone, holdout names split into rarer tokens and membership inference separates forget from holdout by
    tokenization instead of memorisation.
    """
    holdouts = sorted(k for k in bench if k.startswith("holdout"))
    seen: set[str] = set()
    texts = []
    for split in ["full", *holdouts]:
        for t in qa_corpus(bench[split]):
            if t not in seen:
                seen.add(t)
                texts.append(t)
    return texts


@torch.no_grad()
def mean_answer_nll(model: Any, tokenizer: Any, ds: Any, max_length: int = 128, batch_size: int = 32) -> float:
    """Token-mean NLL of the answers of a QA split (lower = better known)."""
    from hf_unlearn.data import collator_for, tokenize_qa
    from hf_unlearn.training.losses import token_logprobs
    from hf_unlearn.training.trainer import model_inputs

    tok = tokenize_qa(ds, tokenizer, max_length=max_length)
    coll = collator_for(tokenizer)
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(tok), batch_size):
        batch = coll([tok[i] for i in range(start, min(len(tok), start + batch_size))])
        batch.pop("uid")
        batch = {k: v.to(device) for k, v in batch.items()}
        logp, mask = token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
        total += float(-logp.sum())
        count += int(mask.sum())
    return total / max(count, 1)


def forward_backward_seconds(
    model: Any,
    tokenizer: Any,
    ds: Any,
    max_length: int = 128,
    batch_size: int = 8,
    reps: int = 1,
    train: bool = True,
) -> float:
    """Median wall time of one forward+backward pass over ``ds`` (any source ``load_examples`` takes): the unit
    unlearning costs are expressed in.

    Runs on a deep copy of ``model`` (``train`` or eval mode), over batches tokenized and collated beforehand, with
    the token-mean answer loss; gradients go to the copy's trainable parameters.
    """
    import statistics

    from hf_unlearn.data import collator_for, encode_examples, load_examples
    from hf_unlearn.training.losses import batch_nll
    from hf_unlearn.training.trainer import model_inputs

    m = copy.deepcopy(model).train(train)
    rows = encode_examples(load_examples(ds), tokenizer, max_length=max_length)
    coll = collator_for(tokenizer)
    device = next(m.parameters()).device
    batches = [
        {k: v.to(device) for k, v in coll(rows[i : i + batch_size]).items() if k != "uid"}
        for i in range(0, len(rows), batch_size)
    ]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for batch in batches:
            batch_nll(m(**model_inputs(batch)).logits, batch["labels"]).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        m.zero_grad(set_to_none=True)
    return statistics.median(times)


def pretrained_base(setting: Setting, progress: bool = False) -> tuple[Any, Any]:
    """The setting's tiny base, pretrained on QA about people who are NOT in its benchmark (cached on disk).

    Example:
        >>> model, tok = pretrained_base(SETTINGS["test"])  # doctest: +SKIP
    """
    from hf_unlearn.training.pretrain import pretrained_tiny_lm

    s = setting
    return pretrained_tiny_lm(
        s.arch,
        exclude_benchmark=(s.n_authors, s.seed),
        corpus_authors=s.pretrain_authors,
        corpus_seed=s.pretrain_seed,
        corpus_qa_per_author=s.qa_per_author,
        vocab_size=s.vocab_size,
        hidden_size=s.hidden_size,
        num_layers=s.num_layers,
        num_heads=s.num_heads,
        epochs=s.pretrain_epochs,
        learning_rate=s.pretrain_lr,
        batch_size=s.ft_batch_size,
        max_length=s.max_length,
        seed=s.seed,
        progress=progress,
    )


def prepare(
    setting: Setting,
    methods: list[str],
    workdir: Path | None = None,
    progress: bool = True,
    price_recording: bool = False,
    base: tuple[Any, Any] | None = None,
    bench: Any = None,
) -> Context:
    """Steps 1-2 of the protocol: benchmark, base model, target (with recorders) and gold fine-tunes.

    With ``price_recording`` the target recipe is also run without recorders, to measure their overhead.
    ``base`` (``(model, tokenizer)``) and ``bench`` (a DatasetDict with ``full`` and the setting's forget / retain /
    holdout splits) replace the ones the setting would build (e.g. another architecture, a smaller benchmark).
    """
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.models import load_model, tiny_causal_lm
    from hf_unlearn.training import finetune

    s = setting
    if bench is None:
        bench = build(n_authors=s.n_authors, seed=s.seed, qa_per_author=s.qa_per_author)
    if base is not None:
        base, tok = base
    elif s.model_name:
        base, tok = load_model(s.model_name)
    elif s.pretrain_epochs:
        base, tok = pretrained_base(s, progress=progress)
    else:
        base, tok = tiny_causal_lm(
            s.arch,
            texts=tokenizer_corpus(bench),
            vocab_size=s.vocab_size,
            hidden_size=s.hidden_size,
            num_layers=s.num_layers,
            num_heads=s.num_heads,
            seed=s.seed,
        )
    ft_kwargs = dict(
        num_epochs=s.ft_epochs,
        learning_rate=s.ft_lr,
        batch_size=s.ft_batch_size,
        max_length=s.max_length,
        seed=s.seed,
        lora=s.lora,
        disable_tqdm=not progress,
        bf16=s.bf16,
    )
    ctx = Context(setting=s, bench=bench, tokenizer=tok, base_model=base, finetune_kwargs=ft_kwargs, workdir=workdir)
    runners = builtin_runners()
    callbacks = []
    for m in methods:
        if m not in runners:
            raise ValueError(f"no benchmark runner for method {m!r}; available: {sorted(runners)}")
        if runners[m].recorders is not None:
            ctx.recorders[m] = runners[m].recorders(ctx)
            callbacks += ctx.recorders[m]
    logger.info("fine-tuning the target on full (%d examples)", len(bench["full"]))
    ctx.target_ft = finetune(copy.deepcopy(base), tok, bench["full"], callbacks=callbacks, **ft_kwargs)
    ctx.target = ctx.target_ft.model
    if callbacks and price_recording:  # the same recipe without recorders, to price the recording overhead
        ctx.plain_ft = finetune(copy.deepcopy(base), tok, bench["full"], **ft_kwargs)
    else:
        ctx.plain_ft = ctx.target_ft
    ctx.use_split(s.forget_split)  # fine-tunes the gold model on the matching retain split
    return ctx


def nll_row(model: Any, ctx: Context) -> dict[str, float]:
    with autocast_for(ctx, model):
        s = ctx.setting
        return {
            "forget_nll": mean_answer_nll(model, ctx.tokenizer, ctx.forget, s.max_length),
            "retain_nll": mean_answer_nll(model, ctx.tokenizer, ctx.retain, s.max_length),
            "holdout_nll": mean_answer_nll(model, ctx.tokenizer, ctx.holdout, s.max_length),
        }


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
                    res = s3t_retrained(results[base], ctx)
                else:
                    res = run_uncalibrated(runners[base], ctx, base, calibrate=m == base + CAL)
                if m == "s3t" and s.s3t_retrained_row:
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
                elif base in CALIBRATION_VARIANTS_ON and can_calibrate(base):  # off by default: also with
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


def autocast_for(ctx: Context, model: Any = None) -> Any:
    """bf16 autocast on the model's device when the setting asks for it (evaluation), else a no-op context."""
    import contextlib

    if not ctx.setting.bf16:
        return contextlib.nullcontext()
    model = model if model is not None else ctx.target
    device = next(model.parameters()).device.type if hasattr(model, "parameters") else "cpu"
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def _evaluate_all(ctx: Context, results: dict[str, Any]) -> dict[str, Any]:
    from hf_unlearn.evaluation import evaluate_unlearning

    kw = evaluation_kwargs(ctx)
    with autocast_for(ctx):
        gold = evaluate_unlearning(ctx.gold, ctx.tokenizer, ctx.bench, skip_forget_quality=True, **kw)
        target = evaluate_unlearning(ctx.target, ctx.tokenizer, ctx.bench, reference=gold, **kw)
    out = {"gold": gold, "target": target}
    for m, res in results.items():
        # An S3T ensemble toggles which adapters are live inside every forward, so per-sample parameter
        # gradients (the GradNorm attack) are not defined for it: that attack is reported as not applicable.
        gradnorm_ok = type(res.model).__name__ != "S3TModel"
        with autocast_for(ctx):
            out[m] = evaluate_unlearning(
                res.model,
                ctx.tokenizer,
                ctx.bench,
                reference=gold,
                **{**kw, "gradnorm": kw["gradnorm"] and gradnorm_ok},
            )
        if kw["gradnorm"] and not gradnorm_ok:
            out[m].setdefault("notes", []).append("GradNorm MIA not applicable to an S3T ensemble")
    return out


def markdown_table(report: dict[str, Any]) -> str:
    """A markdown table of the NLL/time rows of a :func:`run_protocol` report."""
    lines = ["| model | forget NLL | retain NLL | holdout NLL | unlearn time (s) |", "|---|---|---|---|---|"]
    gold = report["rows"].get("gold (retrain)")
    for name, r in report["rows"].items():
        if name == "retrain" and gold and all(r.get(k) == v for k, v in gold.items()):
            continue  # the benchmark's retrain IS the gold fine-tune (same model): show it once, as the gold row
        t = r.get("unlearn_seconds")
        lines.append(
            f"| {name} | {r['forget_nll']:.3f} | {r['retain_nll']:.3f} | {r['holdout_nll']:.3f} | "
            f"{'-' if t is None else f'{t:.2f}'} |"
        )
    notes = [f"* {name}: {r['error']}" for name, r in report["rows"].items() if r.get("error")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
