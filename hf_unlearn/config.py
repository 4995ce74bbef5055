"""Configuration dataclasses shared by every method.

Method-specific configs subclass :class:`UnlearnConfig` and add their own fields, each with
``field(metadata={"help": ...})``; values are validated in ``__post_init__`` and errors name the bad value.

Example:
    >>> from hf_unlearn.config import UnlearnConfig
    >>> cfg = UnlearnConfig(learning_rate=1e-4, num_epochs=2)
    >>> cfg.to_dict()["num_epochs"]
    2
    >>> UnlearnConfig(learning_rate=-1)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be > 0, got -1
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hf_unlearn.utils.serialization import jsonable as _jsonable  # noqa: F401 (old name, kept importable)


def check_range(
    name: str, value: Any, lo: float | None = None, hi: float | None = None, *, lo_open=False, hi_open=False
) -> None:
    """Raise ValueError naming ``name`` when ``value`` is outside [lo, hi] (or the open variants)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")


def check_choice(name: str, value: Any, choices: tuple | list) -> None:
    """Raise ValueError naming ``name`` and the valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


class UnknownOptionError(KeyError):
    """An option name that nothing accepts; the message suggests the closest valid name.

    A ``KeyError`` (unknown key) whose ``str()`` is the plain message (not its repr).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def unknown_option_error(
    unknown: list[str] | set[str], valid: list[str] | set[str], what: str, hints: tuple[str, ...] = ()
) -> UnknownOptionError:
    """An :class:`UnknownOptionError` for ``unknown`` names of ``what``, suggesting the closest of ``valid``.

    Example:
        >>> print(unknown_option_error(["learnig_rate"], ["learning_rate", "seed"], "UnlearnConfig option"))
        unknown UnlearnConfig option 'learnig_rate' (did you mean 'learning_rate'?); valid options: learning_rate, seed
    """
    parts = []
    pool = [str(v) for v in valid] + [str(h) for h in hints]  # hints: suggested, not listed (e.g. train_dataset)
    for name in sorted(unknown):
        close = difflib.get_close_matches(str(name), pool, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return UnknownOptionError(f"unknown {what} {', '.join(parts)}; valid options: {', '.join(sorted(valid))}")


@dataclass
class UnlearnConfig:
    """Options every unlearning method understands (training-loop methods use all of them)."""

    learning_rate: float = field(default=1e-4, metadata={"help": "Optimizer learning rate."})
    num_epochs: float = field(default=3, metadata={"help": "Passes over the forget set."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0, overrides num_epochs."})
    batch_size: int = field(default=8, metadata={"help": "Per-device batch size (forget examples per step)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Linear warm-up fraction of the steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example."})
    template: str = field(default="plain", metadata={"help": "Prompt template: 'plain' or 'chat'."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    lora: Any = field(
        default=None,
        metadata={
            "help": "None: train the model's own trainable parameters (the active adapter of a PeftModel, else "
            "all weights). A dict of peft LoraConfig kwargs (or a LoraConfig): attach a fresh unlearning adapter "
            "and train only it (the base stays bit-identical; the reference model is the adapter disabled)."
        },
    )
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (GPU)."})
    max_weight_growth: float = field(
        default=100.0,
        metadata={
            "help": "Divergence guard: stop (DivergenceError, nothing saved) when the weight norm grows more than "
            "this factor over the run; non-finite loss, gradients or weights always stop it. 0: no growth check."
        },
    )
    output_dir: str | None = field(default=None, metadata={"help": "Trainer scratch directory (temp if None)."})
    logging_steps: int = field(default=10, metadata={"help": "Trainer logging interval."})
    disable_tqdm: bool = field(default=True, metadata={"help": "Hide the Trainer progress bar."})
    training_args: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Further transformers.TrainingArguments fields for the methods that train with a Trainer, e.g. "
            "{'gradient_checkpointing': True} or {'optim': 'adafactor'}. Fields this config sets itself "
            "(learning_rate, batch size, seed, ...) are set through their own config field instead."
        },
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "Calibrated early stopping (methods that train through the shared engine; see "
            "docs/calibration.md): stop when the forget set reaches the target and roll back, bit-exactly, to the "
            "last state within retain_tolerance. Needs a target: holdout= (data of the same kind the model never "
            "saw) or target_nll; without one, nothing changes. False: train the whole schedule."
        },
    )
    calibration_criterion: str = field(
        default="nll",
        metadata={
            "help": "'nll': stop when the forget-set mean NLL reaches target_nll; 'mia': stop when the Min-K%++ "
            "AUC of forget vs holdout reaches 0.5 + mia_epsilon (needs holdout=)."
        },
    )
    target_nll: float | None = field(
        default=None,
        metadata={
            "help": "Target forget-set mean NLL (nats per token). None: the mean NLL of the `holdout=` dataset under "
            "the model before unlearning."
        },
    )
    retain_tolerance: float | None = field(
        default=0.5,
        metadata={
            "help": "Stop when the retain mean NLL rises more than this (nats per token) above its starting value, "
            "and restore the last checked state within it. None disables the check."
        },
    )
    eval_every: int = field(default=1, metadata={"help": "Check the stopping rule every this many optimizer steps."})
    mia_epsilon: float = field(
        default=0.05, metadata={"help": "calibration_criterion='mia': stop once the AUC is <= 0.5 + mia_epsilon."}
    )
    calibration_tokens: int = field(
        default=2048,
        metadata={"help": "Token budget of each calibration evaluation set (forget, retain sample, holdout)."},
    )

    def __post_init__(self) -> None:
        check_range("learning_rate", self.learning_rate, 0, lo_open=True)
        check_range("num_epochs", self.num_epochs, 0, lo_open=True)
        if not isinstance(self.max_steps, int) or (self.max_steps <= 0 and self.max_steps != -1):
            raise ValueError(f"max_steps must be a positive int or -1, got {self.max_steps!r}")
        check_range("batch_size", self.batch_size, 1)
        check_range("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("warmup_ratio", self.warmup_ratio, 0, 1)
        check_range("max_grad_norm", self.max_grad_norm, 0)
        check_range("max_length", self.max_length, 2)
        check_choice("template", self.template, ("plain", "chat"))
        check_training_args(self.training_args)
        if self.max_weight_growth != 0:
            check_range("max_weight_growth", self.max_weight_growth, 1, lo_open=True)
        if not isinstance(self.calibrate, bool):
            raise ValueError(f"calibrate must be True or False, got {self.calibrate!r}")
        check_choice("calibration_criterion", self.calibration_criterion, ("nll", "mia"))
        if self.target_nll is not None:
            check_range("target_nll", self.target_nll, 0)
        if self.retain_tolerance is not None:
            check_range("retain_tolerance", self.retain_tolerance, 0)
        if not isinstance(self.eval_every, int) or isinstance(self.eval_every, bool) or self.eval_every < 1:
            raise ValueError(f"eval_every must be an int >= 1, got {self.eval_every!r}")
        check_range("mia_epsilon", self.mia_epsilon, 0, 0.5)
        check_range("calibration_tokens", self.calibration_tokens, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields (a LoraConfig becomes its dict)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "to_dict"):
                v = v.to_dict()
            out[f.name] = _jsonable(v)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UnlearnConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise unknown_option_error(unknown, names, f"{cls.__name__} option")
        return cls(**values)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


#: TrainingArguments fields an UnlearnConfig sets from its own fields (``training_args`` may not set them).
OWN_TRAINING_ARGS = (
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "weight_decay", "warmup_steps", "max_grad_norm",
    "seed", "data_seed", "logging_steps", "disable_tqdm", "bf16", "remove_unused_columns",
)  # fmt: skip


def check_training_args(values: dict[str, Any] | None) -> None:
    """Validate ``UnlearnConfig.training_args``: a dict of TrainingArguments fields the config does not set itself.

    Raises:
        ValueError: not a dict, or a field the config sets through its own field. KeyError: an unknown field
            (with the closest TrainingArguments field names).

    Example:
        >>> check_training_args({"gradient_checkpointing": True})
        >>> check_training_args({"gradient_checkpoint": True})
        Traceback (most recent call last):
        ...
        KeyError: "unknown TrainingArguments field(s) ['gradient_checkpoint'] in training_args; did you mean ['gradient_checkpointing', ...]?"
    """  # noqa: E501
    if values is None:
        return
    if not isinstance(values, dict):
        raise ValueError(f"training_args must be a dict of TrainingArguments fields or None, got {values!r}")
    import difflib

    from transformers import TrainingArguments

    valid = [f.name for f in dataclasses.fields(TrainingArguments)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=3, cutoff=0.6)
        raise KeyError(
            f"unknown TrainingArguments field(s) {unknown} in training_args; did you mean {close or valid[:5]}?"
        )
    own = sorted(set(values) & set(OWN_TRAINING_ARGS))
    if own:
        raise ValueError(f"training_args may not set {own}: set them through the config's own fields")
