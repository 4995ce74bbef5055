"""The shared engine of the loss-based unlearning methods (baselines, partial updates, RUM's NegGrad+).

``run_unlearning`` tokenizes the forget/retain sets, pairs them, optionally attaches a fresh LoRA adapter,
hands the method's :class:`~hf_unlearn.config.UnlearnConfig` (a ``TrainingArguments``) to an
:class:`~hf_unlearn.training.trainer.UnlearnTrainer` subclass.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from datasets import Dataset

from hf_unlearn.config import UnlearnConfig
from hf_unlearn.data import (
    PairedCollator,
    PairedDataset,
    collator_for,
    encode_lazily,
    iter_batches,
    load_examples,
    tokenize_any,
)
from hf_unlearn.training.calibration import build_calibration, current_holdout
from hf_unlearn.training.guard import DivergenceGuard
from hf_unlearn.training.lora import is_peft_model, make_lora_config
from hf_unlearn.training.losses import sequence_nll
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs


class ReferenceModel:
    """Frozen reference predictions (NPO, KL retain terms).

    * ``"adapter_disabled"``: the same PeftModel with its adapters disabled; used when unlearning trains a fresh
      adapter on top of the target, so "adapters off" IS the target before unlearning. No second copy.
    * ``"copy"``: a frozen deep copy (only when the unlearning trains the target's own weights or adapter).
    """

    def __init__(self, model: Any, mode: str):
        if mode not in ("adapter_disabled", "copy"):
            raise ValueError(f"reference mode must be 'adapter_disabled' or 'copy', got {mode!r}")
        self.mode = mode
        self._model = model if mode == "adapter_disabled" else copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def logits(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        if self.mode == "adapter_disabled":
            target = extract_model_from_parallel(model)  # the PeftModel inside DDP / DeepSpeed wrappers
            was_training = target.training
            target.eval()
            with target.disable_adapter():
                out = target(**model_inputs(batch)).logits
            target.train(was_training)
            return out
        self._model.to(batch["input_ids"].device)
        return self._model(**model_inputs(batch)).logits


def prepare_model(model: Any, config: UnlearnConfig) -> tuple[Any, str]:
    """Attach a fresh unlearning adapter when ``config.lora`` is set.

    Returns:
        ``(model, reference_mode)``: the reference to use for KL/NPO terms.
    """
    if config.lora is None or config.lora is False:
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                "the model has no trainable parameter: unfreeze it, or pass config.lora to add an adapter"
            )
        return model, "copy"
    if is_peft_model(model):
        raise ValueError(
            "config.lora adds a fresh unlearning adapter, but the model already has peft adapters: merge them first "
            "(model = model.merge_and_unload()) or pass lora=None to unlearn inside the existing adapter"
        )
    from peft import get_peft_model

    return get_peft_model(model, make_lora_config(model, config.lora)), "adapter_disabled"


@torch.no_grad()
def precompute_sequence_nll(model: Any, tokenized: Dataset, collator: Any, batch_size: int = 16) -> dict[str, float]:
    """Per-uid summed NLL of the label tokens under ``model`` (eval mode), e.g. NPO's fixed reference."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    for uids, batch in iter_batches(tokenized, collator, batch_size=batch_size, device=device):
        if uids is None:
            raise KeyError("precompute_sequence_nll keys its values by uid: the tokenized rows need a 'uid' column")
        nll = sequence_nll(model(**model_inputs(batch)).logits, batch["labels"], reduction="sum")
        out.update(zip(uids, nll.tolist()))
    model.train(was_training)
    return out


def run_unlearning(
    trainer_cls: type[UnlearnTrainer],
    model: Any,
    tokenizer: Any,
    forget: Dataset,
    retain: Dataset | None,
    config: UnlearnConfig,
    *,
    callbacks: list[Any] | None = None,
    use_retain: bool = True,
    model_ready: bool = False,
    holdout: Any = None,
    eval_forget: Any = None,
    **trainer_kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """Train ``trainer_cls`` on paired forget/retain batches.

    Args:
        trainer_cls: an UnlearnTrainer subclass implementing ``unlearning_loss``.
        model, tokenizer: the model to unlearn from.
        forget, retain: raw or tokenized datasets, or lists of encoded rows (retain may be None when ``use_retain``
            is False; when given without ``use_retain`` it only serves calibration's retain check). Raw rows are
            tokenized lazily, when first drawn (:func:`hf_unlearn.data.encode_lazily`).
        config: the method's config (recipe fields of UnlearnConfig).
        callbacks: extra TrainerCallbacks (e.g. a partial-update gradient mask).
        use_retain: pair each forget batch with a retain batch.
        model_ready: skip :func:`prepare_model` (the caller already attached adapters).
        holdout: held-out examples of the same kind (default: the ``holdout=`` of the enclosing
            :func:`hf_unlearn.unlearn` call); with ``config.calibrate`` they turn on calibrated early stopping
            (:mod:`hf_unlearn.training.calibration`).
        eval_forget: the forget examples calibration measures when ``forget`` holds altered training targets
            (e.g. flipped labels); default ``forget``.
        **trainer_kwargs: passed to ``trainer_cls`` (e.g. ``reference=``).

    Returns:
        ``(model, info)`` with ``steps``, ``train_loss``, ``tokens`` (and ``calibration`` when it was on).
    """
    if use_retain and (retain is None or len(retain) == 0):
        raise ValueError(f"{trainer_cls.__name__} needs a non-empty retain set (pass retain= or train_dataset=)")
    if not model_ready:
        model, ref_mode = prepare_model(model, config)
        trainer_kwargs.setdefault("reference_mode", ref_mode)
    # rows are tokenized when first drawn, not with an up-front Dataset.map: a request pairs its few forget batches
    # with a handful of retain rows, and mapping a whole retain set was most of a small request's fixed cost
    kw = dict(max_length=config.max_length, template=config.template)
    forget_tok = encode_lazily(forget, tokenizer, **kw)
    holdout = holdout if holdout is not None else current_holdout()
    calibrating = getattr(config, "calibrate", False) and (
        holdout is not None or getattr(config, "target_nll", None) is not None
    )
    retain_tok = None
    if retain is not None and len(retain) > 0 and (use_retain or calibrating):
        retain_tok = encode_lazily(retain, tokenizer, **kw)
    paired = PairedDataset(forget_tok, retain_tok if use_retain else None, seed=config.seed)
    calibration = None
    if calibrating:
        holdout_tok = None
        if holdout is not None:
            holdout_tok = tokenize_any(load_examples(holdout), tokenizer, **kw)
        eval_tok = forget_tok
        if eval_forget is not None:
            eval_tok = tokenize_any(eval_forget, tokenizer, **kw)
        calibration = build_calibration(config, collator_for(tokenizer), eval_tok, retain_tok, holdout_tok)
    scratch = config.output_dir or tempfile.mkdtemp(prefix="hf_unlearn_ul_")
    try:
        args = config.training_arguments(scratch)  # every TrainingArguments field of the config reaches the Trainer
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=paired,
            data_collator=PairedCollator(collator_for(tokenizer)),
            callbacks=list(callbacks or []) + ([calibration] if calibration is not None else []),
            divergence_guard=DivergenceGuard(max_weight_growth=getattr(config, "max_weight_growth", 100.0)),
            **trainer_kwargs,
        )
        out = trainer.train()
    finally:
        if config.output_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    model.eval()
    info = {"steps": int(out.global_step), "train_loss": float(out.training_loss), "tokens": trainer.tokens}
    if calibration is not None:
        info["calibration"] = calibration.report()
    return model, info
