"""Fine-tuning on transformers.Trainer (full or LoRA), with uid-keyed recorder callbacks.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> from hf_unlearn.training import finetune
    >>> data = [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1? Answer: A1."] * 4, num_layers=1, vocab_size=300)
    >>> out = finetune(model, tok, data, num_epochs=1, batch_size=2)
    >>> out.steps
    2
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from hf_unlearn.data import collator_for, load_examples, tokenize_any
from hf_unlearn.models import check_causal_lm
from hf_unlearn.training.guard import DEFAULT_MAX_WEIGHT_GROWTH, DivergenceGuard
from hf_unlearn.training.lora import is_peft_model, make_lora_config
from hf_unlearn.training.trainer import UidTrainer
from hf_unlearn.utils.profiling import measure


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the trained model and the cost of training."""

    model: Any
    tokenizer: Any
    train_loss: float
    wall_time: float
    steps: int
    tokens: int
    peak_memory_mib: float
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_time if self.wall_time > 0 else float("nan")


def training_arguments(
    output_dir: str,
    *,
    num_epochs: float,
    learning_rate: float,
    batch_size: int,
    seed: int,
    max_steps: int = -1,
    gradient_accumulation_steps: int = 1,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.0,
    lr_scheduler_type: str = "linear",
    max_grad_norm: float = 1.0,
    logging_steps: int = 10,
    disable_tqdm: bool = True,
    bf16: bool = False,
    **extra: Any,
) -> TrainingArguments:
    """TrainingArguments for hf_unlearn runs (no checkpoints, no reporting, uid columns kept, CPU when no GPU):
    :meth:`hf_unlearn.config.TrainConfig.training_arguments` of a config built from these keywords.

    Args:
        output_dir: the Trainer's scratch folder.
        num_epochs, learning_rate, batch_size, seed, ...: the recipe (``warmup_steps`` in ``extra`` wins over
            ``warmup_ratio``).
        **extra: any other ``TrainingArguments`` field.

    Example:
        >>> training_arguments("/tmp/ft", num_epochs=1, learning_rate=1e-3, batch_size=2, seed=0).data_seed
        0
    """
    from hf_unlearn.config import TrainConfig

    warmup = extra.pop("warmup_steps", None)
    cfg = TrainConfig(
        num_train_epochs=num_epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        weight_decay=weight_decay,
        warmup_steps=warmup if warmup is not None else warmup_ratio,
        lr_scheduler_type=lr_scheduler_type,
        max_grad_norm=max_grad_norm,
        seed=seed,
        logging_steps=logging_steps,
        disable_tqdm=disable_tqdm,
        bf16=bf16,
        include_num_input_tokens_seen="non_padding",
        **extra,
    )
    return cfg.training_arguments(output_dir)


def _check_recipe(*, num_epochs: Any, max_steps: Any, learning_rate: Any, batch_size: Any) -> None:
    """Clear errors for a fine-tuning recipe that cannot train (instead of a Trainer that silently does nothing)."""
    from hf_unlearn.config import check_range

    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or (max_steps <= 0 and max_steps != -1):
        raise ValueError(f"max_steps must be a positive int or -1 (use num_epochs), got {max_steps!r}")
    if max_steps == -1:
        check_range("num_epochs", num_epochs, 0, lo_open=True)
    check_range("learning_rate", learning_rate, 0, lo_open=True)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def finetune(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    split: str | None = None,
    lora: Any = None,
    num_epochs: float = 3,
    learning_rate: float = 5e-4,
    batch_size: int = 8,
    max_length: int = 128,
    template: str = "plain",
    callbacks: list[Any] | None = None,
    seed: int = 0,
    output_dir: str | None = None,
    max_steps: int = -1,
    gradient_accumulation_steps: int = 1,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.0,
    lr_scheduler_type: str = "linear",
    logging_steps: int = 10,
    disable_tqdm: bool = True,
    bf16: bool = False,
    max_weight_growth: float = DEFAULT_MAX_WEIGHT_GROWTH,
    **training_kwargs: Any,
) -> FinetuneResult:
    """Fine-tune a causal LM on QA or text data with ``transformers.Trainer``.

    Args:
        model: a causal LM (or a PeftModel, whose trainable adapter is then trained).
        tokenizer: its tokenizer.
        dataset: anything :func:`hf_unlearn.data.load_examples` accepts (QA columns question/answer, or text).
        split: split to use when ``dataset`` has several.
        lora: None (full fine-tune, or keep a PeftModel's adapter), True / dict / LoraConfig for a new adapter.
        num_epochs, learning_rate, batch_size, max_length, template, seed: the recipe.
        callbacks: TrainerCallbacks; recorders may define ``on_batch_begin`` / ``on_batch_end`` (uid-keyed).
        output_dir: Trainer scratch folder (a temp folder, removed afterwards, when None).
        max_weight_growth: divergence guard: a weight norm growing more than this factor stops training (0: off).
            Non-finite loss, gradients or weights always stop it with :class:`~hf_unlearn.training.DivergenceError`.
        **training_kwargs: any other ``TrainingArguments`` field.

    Raises:
        ValueError: a non-positive ``num_epochs`` (without ``max_steps``), learning rate or batch size.
        DivergenceError: training diverged (see :mod:`hf_unlearn.training.guard`).

    Returns:
        :class:`FinetuneResult` with the trained model (a PeftModel with ``lora``), loss, time and tokens.
    """
    check_causal_lm(model)
    _check_recipe(num_epochs=num_epochs, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size)
    ds = load_examples(dataset, split=split)
    tokenized = tokenize_any(ds, tokenizer, max_length=max_length, template=template)
    if lora is not None and lora is not False:
        from peft import get_peft_model

        if is_peft_model(model):
            raise ValueError("the model already has peft adapters: pass lora=None to train them")
        # The adapters' initial weights come from `seed`, not from whatever used the global RNG before this call
        # (a benchmark fine-tunes a gold model after other methods ran); the caller's RNG state is left as it was.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = get_peft_model(model, make_lora_config(model, lora))
    scratch = output_dir or tempfile.mkdtemp(prefix="hf_unlearn_ft_")
    try:
        args = training_arguments(
            scratch,
            num_epochs=num_epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            seed=seed,
            max_steps=max_steps,
            gradient_accumulation_steps=gradient_accumulation_steps,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            lr_scheduler_type=lr_scheduler_type,
            logging_steps=logging_steps,
            disable_tqdm=disable_tqdm,
            bf16=bf16,
            **training_kwargs,
        )
        trainer = UidTrainer(
            model=model,
            args=args,
            train_dataset=tokenized,
            data_collator=collator_for(tokenizer),
            callbacks=list(callbacks or []),
            divergence_guard=DivergenceGuard(max_weight_growth=max_weight_growth),
            progress_desc=f"fine-tuning on {len(ds)} examples",
        )
        with measure() as cost:
            t0 = time.perf_counter()
            out = trainer.train()
            wall = time.perf_counter() - t0
        tokens = int(trainer.state.num_input_tokens_seen)
    finally:
        if output_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    model.eval()
    return FinetuneResult(
        model=model,
        tokenizer=tokenizer,
        train_loss=float(out.training_loss),
        wall_time=wall,
        steps=int(out.global_step),
        tokens=tokens,
        peak_memory_mib=cost.peak_mib,
        log_history=list(trainer.state.log_history),
    )
