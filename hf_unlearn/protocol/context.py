"""The protocol's context (data, base/target/gold models, recorders), and steps 1-2: building it."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_unlearn.protocol.settings import Setting, paired_splits

logger = logging.getLogger("hf_unlearn")


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


def autocast_for(ctx: Context, model: Any = None) -> Any:
    """bf16 autocast on the model's device when the setting asks for it (evaluation), else a no-op context."""
    import contextlib

    if not ctx.setting.bf16:
        return contextlib.nullcontext()
    model = model if model is not None else ctx.target
    device = next(model.parameters()).device.type if hasattr(model, "parameters") else "cpu"
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def pretrained_base(setting: Setting, progress: bool = False) -> tuple[Any, Any]:
    """The setting's tiny base, pretrained on QA about people who are NOT in its benchmark (cached on disk).

    Example:
        >>> from hf_unlearn.protocol import SETTINGS
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
    from hf_unlearn.benchmarks.corpus import tokenizer_corpus
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.models import load_model, tiny_causal_lm
    from hf_unlearn.protocol.runner import builtin_runners
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
