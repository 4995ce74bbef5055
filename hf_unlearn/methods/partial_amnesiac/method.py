"""Partial amnesiac unlearning: subtract the recorded (top-kappa pruned) updates of every step that saw forget data.

Reconstruction (arXiv 2403.07611, from the abstract; classic amnesiac: Graves et al., arXiv 2010.10981). The model must
have been fine-tuned with an :class:`~hf_unlearn.methods.partial.AmnesiacRecorder`. Unlearning is
``theta <- theta - sum_{t in S} delta_t`` over the steps ``S`` whose batch held a forget uid. This is not exact
retraining: later steps were computed from weights that included the removed updates, and the removed steps also
carried the retain examples that shared their batches (reported in ``details``; isolate sensitive examples in
their own batches with :func:`~hf_unlearn.methods.partial.isolate_sensitive` to avoid it). The paper claims no
post fine-tuning is needed with partial (kappa < 1) updates; ``retain_finetune_steps`` runs the short retain
fine-tune of the comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from hf_unlearn.config import UnlearnConfig, check_choice
from hf_unlearn.data import UID
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.partial import PAPER, REFERENCE, AmnesiacRecorder, AmnesiacRecording, MissingRecordingError
from hf_unlearn.methods.partial.recorder import MODEL_ATTR
from hf_unlearn.models import unwrap

COMPUTE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class PartialAmnesiacConfig(UnlearnConfig):
    """Options of ``partial_amnesiac``; learning_rate/batch_size/max_length/template/seed apply to the optional
    retain fine-tune only."""

    recording_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the AmnesiacRecorder recording; None: the folder the recorder attached to the model "
            "(or pass recording=<recorder or path> to unlearn)."
        },
    )
    on_unknown: str = field(
        default="error",
        metadata={"help": "Forget uids never seen in the recording: 'error' (default) or 'ignore'."},
    )
    compute_dtype: str = field(
        default="float32", metadata={"help": "Dtype the subtracted updates are summed in: 'float32' or 'float64'."}
    )
    retain_finetune_steps: int = field(
        default=0, metadata={"help": "Optimizer steps of a short fine-tune on the retain set afterwards (0: none)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("on_unknown", self.on_unknown, ("error", "ignore"))
        check_choice("compute_dtype", self.compute_dtype, tuple(COMPUTE_DTYPES))
        if isinstance(self.retain_finetune_steps, bool) or not isinstance(self.retain_finetune_steps, int):
            raise ValueError(f"retain_finetune_steps must be an int >= 0, got {self.retain_finetune_steps!r}")
        if self.retain_finetune_steps < 0:
            raise ValueError(f"retain_finetune_steps must be >= 0, got {self.retain_finetune_steps}")


def resolve_recording(model: Any, recording: Any, recording_dir: str | None) -> AmnesiacRecording:
    """The recording from ``recording`` (recorder / path / AmnesiacRecording), the config, or the model attribute."""
    if isinstance(recording, AmnesiacRecording):
        return recording
    if isinstance(recording, AmnesiacRecorder):
        return AmnesiacRecording(recording.output_dir)
    path = recording or recording_dir or getattr(unwrap(model), MODEL_ATTR, None) or getattr(model, MODEL_ATTR, None)
    if path is None:
        raise MissingRecordingError(
            "partial_amnesiac needs an amnesiac recording: fine-tune with callbacks=[AmnesiacRecorder(dir)] and "
            "unlearn that model, or pass recording_dir=<dir> (or recording=<recorder>)"
        )
    return AmnesiacRecording(path)


class PartialAmnesiac(UnlearningMethod):
    name = "partial_amnesiac"
    config_cls = PartialAmnesiacConfig
    reference = REFERENCE
    description = (
        "Partial amnesiac unlearning: the parameter updates of every training batch are pruned layer-wise and "
        "stored; unlearning subtracts the stored updates of the batches that contained forget examples. "
        "Approximate; reconstructed from the paper's abstract."
    )
    unlearn_arguments = ("recording",)
    paper = PAPER

    needs_recording = True
    benchmark_defaults = {"learning_rate": 1e-3, "batch_size": 8}
    benchmark_bf16 = False  # retrain-free: runs fp32

    @classmethod
    def training_recorders(cls, ctx: Any) -> list[Any]:
        """An AmnesiacRecorder while the target trains; ``kappa`` and ``value_dtype`` in the method overrides
        (recipe ``method_config``) configure it."""
        import tempfile

        ov = ctx.overrides("partial_amnesiac")
        root = ctx.workdir or tempfile.mkdtemp(prefix="hf_unlearn_amnesiac_")
        kw = {k: ov[k] for k in RECORDING_KEYS if k in ov}
        return [AmnesiacRecorder(f"{root}/amnesiac_recording", **kw)]

    @classmethod
    def benchmark_inputs(cls, ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
        """The recording; the recorder's options are not config fields (they configured the recording)."""
        for k in RECORDING_KEYS:
            config.pop(k, None)
        return {"recording": (ctx.recorders.get("partial_amnesiac") or [None])[0]}

    def unlearn(
        self, model: Any, tokenizer: Any, forget, retain=None, recording: Any = None, **kwargs: Any
    ) -> MethodOutput:
        c = self.config
        rec = resolve_recording(model, recording, c.recording_dir)
        forget_uids = [str(u) for u in forget[UID]]
        t0 = time.perf_counter()
        steps = rec.steps_for(forget_uids, on_unknown=c.on_unknown)
        entries = rec.apply(model, steps, sign=-1.0, compute_dtype=COMPUTE_DTYPES[c.compute_dtype])
        subtract_s = time.perf_counter() - t0
        fset = set(forget_uids)
        shared_slots, shared = 0, set()
        by_step = {s["step"]: s for s in rec.steps}
        for st in steps:
            others = [u for u in by_step[st]["uids"] if u not in fset]
            shared_slots += len(others)
            shared.update(others)
        recorded_other = [u for u in rec.uid_to_steps if u not in fset]
        details: dict[str, Any] = {
            "recording": str(rec.path),
            "kappa": rec.kappa,
            "steps_undone": len(steps),
            "steps_recorded": len(rec.steps),
            "entries_undone": entries,
            "forget_uids_unknown": sum(u not in rec.uid_to_steps for u in fset),
            "retain_uids_sharing_batches": len(shared),
            "retain_slots_in_undone_steps": shared_slots,
            "retain_fraction_affected": len(shared) / len(recorded_other) if recorded_other else 0.0,
            "storage_bytes": rec.storage_bytes,
        }
        timings = {"subtract": subtract_s}
        tokens = 0
        if c.retain_finetune_steps > 0:
            if retain is None or len(retain) == 0:
                raise ValueError("retain_finetune_steps > 0 needs a retain set (retain= or train_dataset=)")
            from hf_unlearn.training import finetune

            ft = finetune(
                model,
                tokenizer,
                retain,
                **{
                    **c.extra_training_arguments(),  # any further TrainingArguments field of the config
                    "max_steps": c.retain_finetune_steps,
                    "learning_rate": c.learning_rate,
                    "batch_size": c.batch_size,
                    "max_length": c.max_length,
                    "template": c.template,
                    "seed": c.seed,
                    "weight_decay": c.weight_decay,
                    "gradient_accumulation_steps": c.gradient_accumulation_steps,
                    "disable_tqdm": c.disable_tqdm,
                    "bf16": c.bf16,
                },
            )
            model = ft.model
            tokens = ft.tokens
            timings["retain_finetune"] = ft.wall_time
            details["retain_finetune_steps"] = ft.steps
        model.eval()
        return MethodOutput(model=model, details=details, timings=timings, tokens_processed=tokens)


RECORDING_KEYS = ("kappa", "value_dtype")
