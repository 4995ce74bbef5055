"""Trainer subclasses: uid-aware batches with recorder hook points, and the unlearning trainer base.

Recorders (training-time artefacts keyed by uid: amnesiac deltas, first-epoch embedding gradients, learning
events) are ordinary ``transformers.TrainerCallback`` objects that may also define

* ``on_batch_begin(trainer, model, inputs, uids)``: before the forward pass of a micro-batch;
* ``on_batch_end(trainer, model, inputs, uids, loss)``: after its backward pass (gradients are in ``.grad``).

Standard callback events (``on_step_end``, ``on_pre_optimizer_step``, ...) work as usual.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hf_unlearn.data.loading import UID
from hf_unlearn.training.guard import DivergenceGuard
from hf_unlearn.training.losses import batch_nll, kl_to_reference


class UidTrainer(Trainer):
    """A Trainer whose batches carry a ``uid`` list, handed to recorder callbacks and never to the model.

    With ``disable_tqdm`` the per-step log printer is removed too (quiet runs); logs stay in ``state.log_history``.
    A :class:`~hf_unlearn.training.guard.DivergenceGuard` is attached unless one is among the callbacks already:
    pass ``divergence_guard=DivergenceGuard(...)`` to configure it, or ``divergence_guard=False`` to drop it.
    """

    progress_desc = "fine-tuning"

    def __init__(self, *args: Any, divergence_guard: Any = None, progress_desc: str | None = None, **kwargs: Any):
        if progress_desc is not None:
            self.progress_desc = progress_desc
        super().__init__(*args, **kwargs)
        if self.args.disable_tqdm:
            self.remove_callback(PrinterCallback)
        elif self.pop_callback(ProgressCallback) is not None:  # one labelled bar, no raw {'loss': ...} dicts
            self.add_callback(PhaseProgressCallback(self.progress_desc))
        has_guard = any(isinstance(cb, DivergenceGuard) for cb in self.callback_handler.callbacks)
        if divergence_guard is not False and not has_guard:
            self.add_callback(divergence_guard if divergence_guard is not None else DivergenceGuard())

    def _inner_training_loop(self, *args: Any, **kwargs: Any):
        with _no_idle_gc(self.accelerator):
            return super()._inner_training_loop(*args, **kwargs)

    def _recorders(self) -> list[Any]:
        return [
            cb
            for cb in self.callback_handler.callbacks
            if hasattr(cb, "on_batch_begin") or hasattr(cb, "on_batch_end")
        ]

    def training_step(self, model, inputs, num_items_in_batch=None):
        uids = _pop_uids(inputs)
        self.current_uids = uids
        recorders = self._recorders()
        for cb in recorders:
            if hasattr(cb, "on_batch_begin"):
                cb.on_batch_begin(self, model, inputs, uids)
        loss = super().training_step(model, inputs, num_items_in_batch)
        for cb in recorders:
            if hasattr(cb, "on_batch_end"):
                cb.on_batch_end(self, model, inputs, uids, loss)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        _pop_uids(inputs)
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        _pop_uids(inputs)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)


class PhaseProgressCallback(ProgressCallback):
    """The Trainer's progress bar with a label, printing the raw log dicts only at INFO level (``hf-unlearn -v``)."""

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(self.desc)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logging.getLogger("hf_unlearn").isEnabledFor(logging.INFO):
            super().on_log(args, state, control, logs=logs, **kwargs)


@contextmanager
def _no_idle_gc(accelerator: Any):
    """Skip the ``gc.collect()`` of the Trainer's opening ``accelerator.free_memory()`` when it has nothing to free.

    ``Trainer._inner_training_loop`` starts with ``accelerator.free_memory()``, which drops the accelerator's
    references to previously prepared models/optimizers/schedulers/dataloaders and then runs ``gc.collect()`` and the
    device's ``empty_cache()``. On a fresh Trainer nothing was prepared yet, so the full collection frees nothing of
    the Trainer's, yet costs 0.2-1 s in a process holding many Python objects: most of the fixed cost of a small
    unlearning request. When the accelerator holds nothing (and no DeepSpeed engine), the call keeps every effect
    but the collection (lists reset, step 0, ``empty_cache()``); otherwise the original runs unchanged.
    """
    from accelerate.utils.memory import clear_device_cache

    original = accelerator.free_memory
    patched_before = "free_memory" in vars(accelerator)

    def free_memory(*objects: Any) -> list:
        busy = accelerator._models or accelerator._optimizers or accelerator._schedulers or accelerator._dataloaders
        if objects or busy or getattr(accelerator, "deepspeed_engine_wrapped", None) is not None:
            return original(*objects)
        accelerator.step = 0
        clear_device_cache(garbage_collection=False)
        return []

    accelerator.free_memory = free_memory
    try:
        yield
    finally:
        if patched_before:
            accelerator.free_memory = original
        else:
            del accelerator.free_memory  # back to the class method


def _pop_uids(inputs: dict[str, Any]) -> list[str] | None:
    uids = inputs.pop(UID, None)
    for sub in ("forget", "retain"):
        if isinstance(inputs.get(sub), dict):
            got = inputs[sub].pop(UID, None)
            if sub == "forget" and uids is None:
                uids = got
    return uids


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch the model's forward takes."""
    return {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}


class UnlearnTrainer(UidTrainer):
    """Base of the loss-based unlearning methods: batches are ``{"forget": ..., "retain": ...}``.

    Subclasses implement :meth:`unlearning_loss`. The loss is a per-micro-batch mean, so the Trainer scales it
    for gradient accumulation (``loss_is_scaled_for_ga = False``).
    """

    progress_desc = "unlearning"

    def __init__(self, *args: Any, reference_mode: str = "copy", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False
        self.reference_mode = reference_mode  # how a subclass builds its ReferenceModel, when it needs one
        self.tokens = 0
        self.epoch_index = -1  # the epoch being trained (0, 1, ...): the same on every rank, unlike draw counts
        self.add_callback(_EpochIndex(self))

    def count_tokens(self, *batches: dict[str, Any] | None) -> None:
        for b in batches:
            if b is not None and "attention_mask" in b:
                self.tokens += int(b["attention_mask"].sum())

    def nll(self, model, batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        out = model(**model_inputs(batch))
        return batch_nll(out.logits, batch["labels"]), out

    def reference(self) -> Any:
        """The frozen reference of KL terms (a :class:`~hf_unlearn.training.engine.ReferenceModel` in
        ``self.reference_mode``), built on first use from the unwrapped model (DDP-safe); a subclass may set
        ``self._reference`` itself."""
        if getattr(self, "_reference", None) is None:
            from hf_unlearn.training.engine import ReferenceModel  # engine builds on this module

            self._reference = ReferenceModel(self.model, self.reference_mode)
        return self._reference

    def retain_term(self, model, retain: dict[str, Any], kind: str = "nll") -> torch.Tensor:
        """The retain term every retain-set method shares: the token-mean NLL of the retain batch (``"nll"``) or
        the KL divergence from the reference's next-token distribution on it (``"kl"``).

        Raises:
            ValueError: an unknown ``kind``.
        """
        if kind == "nll":
            return self.nll(model, retain)[0]
        if kind != "kl":
            raise ValueError(f"retain term must be 'nll' or 'kl', got {kind!r}")
        ref_logits = self.reference().logits(model, retain)
        logits = model(**model_inputs(retain)).logits
        return kl_to_reference(logits, ref_logits, retain["labels"])

    def unlearning_loss(self, model, forget: dict[str, Any], retain: dict[str, Any] | None) -> torch.Tensor:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        _pop_uids(inputs)
        if "forget" not in inputs:
            raise ValueError("unlearning batches must hold a 'forget' sub-batch (use PairedDataset/PairedCollator)")
        if model.training:
            self.count_tokens(inputs["forget"], inputs.get("retain"))
        loss = self.unlearning_loss(model, inputs["forget"], inputs.get("retain"))
        return (loss, None) if return_outputs else loss


class _EpochIndex(TrainerCallback):
    """Counts epochs on an :class:`UnlearnTrainer` and hands the index to a dataset with ``set_epoch`` (a
    ``PairedDataset``): per-example draws keyed by the epoch are the same on 1 and N processes, whereas a
    per-process draw count is not (an example drawn on rank 0 in one epoch may go to rank 1 in the next)."""

    def __init__(self, trainer: UnlearnTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.epoch_index += 1
        dataset = self.trainer.train_dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.trainer.epoch_index)
