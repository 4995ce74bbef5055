"""Configuration dataclasses shared by every method, the TRL way.

* :class:`UnlearnConfig` (methods that train through a ``transformers.Trainer`` subclass) IS a
  ``transformers.TrainingArguments``: every Trainer feature (gradient checkpointing, bf16, ``optim``, ``report_to``,
  logging, FSDP / DeepSpeed through accelerate, ...) is a field of every such method's config, with HF's names
  (``num_train_epochs``, ``per_device_train_batch_size``), plus our data and calibration fields (``max_length``,
  ``template``, ``lora``, ``calibrate``, ...). Short aliases stay accepted everywhere (constructor, ``from_dict``,
  ``dataclasses.replace``, ``--set``, YAML) and readable as properties: :data:`TRAINING_ALIASES`.
* :class:`MethodConfig`: the small config of methods that run no Trainer (SSD's dampening), without training
  fields they never use.

Method-specific configs subclass one of them and add their own fields, each with ``field(metadata={"help": ...})``;
values are validated in ``__post_init__`` and errors name the bad value. Creating a config is cheap and has no side
effect: the TrainingArguments post-processing (device and accelerator state, output folder, enum conversions) runs on
the copy :meth:`UnlearnConfig.training_arguments` hands to the Trainer, never on the config itself.

Example:
    >>> from hf_unlearn.config import UnlearnConfig
    >>> cfg = UnlearnConfig(learning_rate=1e-4, num_epochs=2, gradient_checkpointing=True)
    >>> d = cfg.to_dict()
    >>> cfg.num_train_epochs, cfg.num_epochs, d["num_train_epochs"], d["gradient_checkpointing"]
    (2, 2, 2, True)
    >>> UnlearnConfig(learning_rate=-1)
    Traceback (most recent call last):
    ...
    ValueError: learning_rate must be > 0, got -1
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

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
    unknown: list[str] | set[str],
    valid: list[str] | set[str],
    what: str,
    hints: tuple[str, ...] = (),
    note: str = "",
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
    listed = ", ".join(sorted(valid))
    return UnknownOptionError(f"unknown {what} {', '.join(parts)}; valid options: {listed}{note}")


#: Short names kept for the HF TrainingArguments fields (constructor, from_dict, dataclasses.replace, --set, YAML,
#: and as read/write properties). ``warmup_ratio`` is a fraction of the steps: transformers 5 reads a
#: ``warmup_steps`` below 1 as that fraction.
TRAINING_ALIASES = {
    "num_epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "warmup_ratio": "warmup_steps",
}

#: The old escape hatch: ``training_args={...}`` of TrainingArguments fields, still accepted (its entries become the
#: config's own fields, which they now are).
LEGACY_TRAINING_ARGS = "training_args"


class _ConfigMeta(type):
    """Maps aliases (and the legacy ``training_args`` dict) to field names before the dataclass ``__init__`` runs,
    so ``Config(num_epochs=2)``, ``from_dict``, ``dataclasses.replace`` and HfArgumentParser all accept them."""

    def __call__(cls, *args: Any, **kwargs: Any):
        return super().__call__(*args, **ConfigBase.resolve_aliases.__func__(cls, kwargs))  # a field may shadow it


class ConfigBase(metaclass=_ConfigMeta):
    """Helpers every method config shares: aliases, ``from_dict`` / ``to_dict`` / JSON, field names, and
    HfArgumentParser-typed overrides (:meth:`parse_overrides`)."""

    #: alias -> field name (see :data:`TRAINING_ALIASES`)
    aliases: dict[str, str] = {}  # noqa: RUF012 (not a dataclass field: no annotation in the dataclasses)

    @classmethod
    def resolve_aliases(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with aliases renamed to their field (an alias given together with its field wins, so
        ``dataclasses.replace(cfg, num_epochs=2)`` works) and a legacy ``training_args`` dict spread out.

        Raises:
            UnknownOptionError: a ``training_args`` key that is no TrainingArguments field.
            ValueError: ``training_args`` that is not a dict, or an out-of-range ``warmup_ratio``.

        Example:
            >>> UnlearnConfig.resolve_aliases({"num_epochs": 2, "training_args": {"optim": "adafactor"}})
            {'num_train_epochs': 2, 'optim': 'adafactor'}
        """
        out: dict[str, Any] = {}
        from_alias: set[str] = set()
        legacy = None
        for key, value in values.items():  # the input order is kept
            if key == LEGACY_TRAINING_ARGS and cls.aliases:
                legacy = value
            elif key in cls.aliases:
                if key == "warmup_ratio" and not isinstance(value, str):  # text: typed by parse_overrides
                    check_range("warmup_ratio", value, 0, 1)
                out[cls.aliases[key]] = value
                from_alias.add(cls.aliases[key])
            elif key not in from_alias:
                out[key] = value
        if legacy is not None:
            if not isinstance(legacy, dict):
                raise ValueError(f"training_args must be a dict of TrainingArguments fields or None, got {legacy!r}")
            valid = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
            unknown = sorted(set(legacy) - set(valid))
            if unknown:
                raise unknown_option_error(unknown, valid, "TrainingArguments field in training_args:")
            out.update(legacy)
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        """The config's fields (``__init__`` arguments), without aliases."""
        return [f.name for f in dataclasses.fields(cls) if f.init]

    @classmethod
    def option_names(cls) -> list[str]:
        """Every name the config accepts: its fields, the aliases, and the legacy ``training_args``."""
        return cls.field_names() + list(cls.aliases) + ([LEGACY_TRAINING_ARGS] if cls.aliases else [])

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a dict (a YAML/JSON file, ``to_dict()`` output), rejecting unknown keys with the closest valid
        name. Aliases are accepted.

        Example:
            >>> UnlearnConfig.from_dict({"num_epochs": 2}).num_train_epochs
            2
            >>> UnlearnConfig.from_dict({"num_epoch": 2})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            hf_unlearn.config.UnknownOptionError: unknown UnlearnConfig option 'num_epoch' (did you mean 'num_epochs'?); ...
        """  # noqa: E501
        cls.check_names(values)
        return cls(**values)

    @classmethod
    def listed_option_names(cls) -> list[str]:
        """The names an error message lists: :meth:`option_names` without the TrainingArguments fields that
        hf_unlearn does not set itself (those are summed up as "any transformers.TrainingArguments field")."""
        inherited = _inherited_training_fields(cls)
        return [n for n in cls.option_names() if n not in inherited]

    @classmethod
    def option_note(cls) -> str:
        """The suffix of an unknown-option error for a config that takes every TrainingArguments field."""
        return " and any transformers.TrainingArguments field" if _inherited_training_fields(cls) else ""

    @classmethod
    def check_names(cls, values: dict[str, Any] | list[str]) -> None:
        """Raise :class:`UnknownOptionError` (closest valid name) for names the config does not accept."""
        names = set(cls.option_names())
        unknown = sorted(set(values) - names)
        if unknown:
            raise unknown_option_error(
                unknown,
                cls.listed_option_names(),
                f"{cls.__name__} option",
                hints=tuple(names),
                note=cls.option_note(),
            )

    def _serialized_names(self) -> list[str]:
        return self.field_names()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields (a LoraConfig becomes its dict). ``from_dict(cfg.to_dict()) == cfg``."""
        out = {}
        for name in self._serialized_names():
            v = getattr(self, name)
            if hasattr(v, "to_dict") and not isinstance(v, type):
                v = v.to_dict()
            out[name] = _jsonable(v)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def parse_overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Typed values of ``key -> text`` overrides (``hf-unlearn unlearn --set``, recipe ``--method_config.*``),
        parsed by ``transformers.HfArgumentParser`` from this same dataclass: the YAML config file and the command
        line cannot drift apart. Aliases are accepted (and returned under their field name); ``null``
        gives None for a field that allows it; fields of structured type (dicts, lists, ``lora``) take YAML/JSON
        text. Values that are not strings are returned as they are.

        Raises:
            UnknownOptionError: an unknown key (closest valid name). ValueError: a value of the wrong type.

        Example:
            >>> UnlearnConfig.parse_overrides({"num_epochs": "2", "bf16": "false", "lora": "{r: 4}"})
            {'num_train_epochs': 2.0, 'bf16': False, 'lora': {'r': 4}}
            >>> UnlearnConfig.parse_overrides({"learning_rate": "fast"})
            Traceback (most recent call last):
            ...
            ValueError: learning_rate must be a number, got 'fast'
        """
        cls.check_names(overrides)
        values = cls.resolve_aliases({k: v for k, v in overrides.items() if k != LEGACY_TRAINING_ARGS})
        if LEGACY_TRAINING_ARGS in overrides:
            legacy = overrides[LEGACY_TRAINING_ARGS]
            values.update(
                cls.resolve_aliases({LEGACY_TRAINING_ARGS: _yaml_value(legacy) if isinstance(legacy, str) else legacy})
            )
        hints = typing.get_type_hints(cls)
        out: dict[str, Any] = {}
        argv: list[str] = []
        for name, text in values.items():
            if not isinstance(text, str):
                out[name] = text
            elif text.strip() == "null" and _allows_none(hints.get(name)):  # JSON's null, as before
                out[name] = None
            else:
                argv += [f"--{name}", text]
        if argv:
            parsed, _ = _OverrideParser(cls).parse_known_args(argv)
            out.update({name: getattr(parsed, name) for name in values if name not in out})
        return {name: out[name] for name in values}


def _inherited_training_fields(cls: type) -> set[str]:
    """TrainingArguments fields ``cls`` inherits without declaring them itself (empty for a MethodConfig)."""
    if not issubclass(cls, TrainingArguments):
        return set()
    own: set[str] = set()
    for klass in cls.__mro__:
        if klass is TrainingArguments:
            break
        own.update(vars(klass).get("__annotations__", {}))
    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init} - own


def _allows_none(tp: Any) -> bool:
    return tp is None or tp is Any or type(None) in typing.get_args(tp)


def _yaml_value(text: str) -> Any:
    """YAML (a superset of JSON) for structured values: ``{r: 4}``, ``[1, 2]``, ``{"r": 4}``."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _is_structured(tp: Any) -> bool:
    """A field type HfArgumentParser cannot parse from one string (Any, dicts, lists, tuples, plain unions)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return str not in args and (len(args) != 1 or _is_structured(args[0]))
    if origin is typing.Literal:
        return False
    base = origin or tp
    return not (isinstance(base, type) and (issubclass(base, (int, float, str, bool, Enum))))


class _OverrideParser(HfArgumentParser):
    """HfArgumentParser whose errors are ValueErrors naming the option (not a usage dump and exit), and whose
    structured fields of our own configs (dicts, lists, ``lora``) take YAML/JSON text."""

    _ta_fields = frozenset(f.name for f in dataclasses.fields(TrainingArguments))

    def __init__(self, dataclass_type: type):
        self._hints = typing.get_type_hints(dataclass_type)
        super().__init__(dataclass_type)

    def _add_dataclass_arguments(self, dtype: Any) -> None:
        parser = self
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            tp = self._hints[f.name]
            if f.name not in self._ta_fields and _is_structured(tp):
                aliases = f.metadata.get("aliases", [])
                parser.add_argument(f"--{f.name}", *aliases, type=_yaml_value, help=f.metadata.get("help"))
            else:
                f = copy.copy(f)  # HfArgumentParser narrows field.type in place: work on a copy
                f.type = tp
                self._parse_dataclass_field(parser, f)

    def error(self, message: str):  # argparse would print the usage of ~200 options and exit
        raise ValueError(_plain_error(message))


def _plain_error(message: str) -> str:
    """An argparse error in our words: ``argument --lr/--l-r: invalid float value: 'x'`` -> ``lr must be a number,
    got 'x'``."""
    m = re.match(r"argument --(\w+)(?:/--[\w-]+)*: (.*)", message, re.S)
    if m is None:
        return message
    name, rest = m.groups()
    kinds = {"float": "a number", "int": "an integer"}
    bad = re.match(r"invalid (\w+) value: (.*)", rest)
    if bad and bad.group(1) in kinds:
        return f"{name} must be {kinds[bad.group(1)]}, got {bad.group(2)}"
    choice = re.match(r"invalid choice: (.*?) \(choose from (.*)\)$", rest, re.S)
    if choice:
        valid = [c.strip().strip("'") for c in choice.group(2).split(",")]
        return f"{name} must be one of {valid}, got {choice.group(1)}"
    return f"{name}: {rest}"


@dataclass
class MethodConfig(ConfigBase):
    """The small config of a method that runs no Trainer (SSD's dampening, embedding_ga): data fields only.

    Example:
        >>> MethodConfig(max_length=64).to_dict()
        {'max_length': 64, 'template': 'plain', 'seed': 0}
    """

    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example."})
    template: str = field(default="plain", metadata={"help": "Prompt template: 'plain' or 'chat'."})
    seed: int = field(default=0, metadata={"help": "Random seed."})

    def __post_init__(self) -> None:
        check_range("max_length", self.max_length, 2)
        check_choice("template", self.template, ("plain", "chat"))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


def _alias_property(alias: str, name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self, name)

    def set_(self: Any, value: Any) -> None:
        setattr(self, name, value)

    return property(get, set_, doc=f"Alias of ``{name}``.")


@dataclass
class TrainConfig(ConfigBase, TrainingArguments):
    """``transformers.TrainingArguments`` with hf_unlearn's defaults (no checkpoints, no reporting, uid columns
    kept, quiet, seed 0) and the short aliases; the base of :class:`UnlearnConfig` and what
    :func:`hf_unlearn.training.finetune` trains with.

    Aliases: ``num_epochs`` (``num_train_epochs``), ``batch_size`` (``per_device_train_batch_size``),
    ``warmup_ratio`` (``warmup_steps`` < 1, a fraction of the steps).

    Example:
        >>> cfg = TrainConfig(batch_size=4, gradient_checkpointing=True, optim="adafactor")
        >>> cfg.per_device_train_batch_size, cfg.batch_size, cfg.optim
        (4, 4, 'adafactor')
        >>> args = cfg.training_arguments("/tmp/scratch")  # what the Trainer gets: a post-processed copy
        >>> args.activation_checkpointing, args.lr_scheduler_type.value, cfg.output_dir is None
        (True, 'constant', True)
    """

    aliases = TRAINING_ALIASES

    # ---- TrainingArguments fields with hf_unlearn defaults (HF names; aliases in TRAINING_ALIASES)
    output_dir: str | None = field(
        default=None, metadata={"help": "Trainer scratch directory (a temp folder, removed afterwards, if None)."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Optimizer learning rate."})
    num_train_epochs: float = field(
        default=3, metadata={"help": "Passes over the forget set (alias num_epochs).", "aliases": ["--num_epochs"]}
    )
    per_device_train_batch_size: int = field(
        default=8,
        metadata={
            "help": "Per-device batch size (forget examples per step; alias batch_size).",
            "aliases": ["--batch_size"],
        },
    )
    max_steps: int = field(default=-1, metadata={"help": "If > 0: the number of optimizer steps (overrides epochs)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision."})
    warmup_steps: float = field(
        default=0,
        metadata={
            "help": "Linear warm-up: steps, or a fraction of the steps when < 1 (alias warmup_ratio).",
            "aliases": ["--warmup_ratio"],
        },
    )
    lr_scheduler_type: str | None = field(
        default=None,
        metadata={
            "help": "Learning-rate schedule (a transformers SchedulerType). None: 'constant' without warm-up, "
            "'linear' with warm-up."
        },
    )
    seed: int = field(default=0, metadata={"help": "Random seed (also the data order seed unless data_seed is set)."})
    logging_steps: float = field(default=10, metadata={"help": "Trainer logging interval."})
    disable_tqdm: bool | None = field(default=True, metadata={"help": "Hide the Trainer progress bar."})
    save_strategy: str = field(default="no", metadata={"help": "Trainer checkpoints: 'no' (default) or steps/epoch."})
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "Logging integrations (wandb, tensorboard, ...); 'none' by default."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the uid columns the recorders and paired batches need (False)."}
    )
    num_epochs = _alias_property("num_epochs", "num_train_epochs")
    batch_size = _alias_property("batch_size", "per_device_train_batch_size")
    warmup_ratio = _alias_property("warmup_ratio", "warmup_steps")

    def __post_init__(self) -> None:
        # Only our checks: TrainingArguments.__post_init__ (devices, accelerator state, enum conversion, output
        # folder default) runs in training_arguments(), on the copy the Trainer gets.
        check_range("learning_rate", self.learning_rate, 0, lo_open=True)
        check_range("num_train_epochs (num_epochs)", self.num_train_epochs, 0, lo_open=True)
        if not isinstance(self.max_steps, int) or (self.max_steps <= 0 and self.max_steps != -1):
            raise ValueError(f"max_steps must be a positive int or -1, got {self.max_steps!r}")
        check_range("per_device_train_batch_size (batch_size)", self.per_device_train_batch_size, 1)
        check_range("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("warmup_steps (warmup_ratio)", self.warmup_steps, 0)
        check_range("max_grad_norm", self.max_grad_norm, 0)
        _check_enum("lr_scheduler_type", self.lr_scheduler_type, "SchedulerType", allow_none=True)
        _check_enum("optim", self.optim, "OptimizerNames")
        _check_enum("save_strategy", self.save_strategy, "SaveStrategy")

    def _serialized_names(self) -> list[str]:
        """Our fields and the TrainingArguments fields we set defaults for, always; any other TrainingArguments
        field only when it differs from its default (a compact record that still round-trips exactly)."""
        inherited = _inherited_training_fields(type(self))
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.init and (f.name not in inherited or getattr(self, f.name) != _default(f))
        ]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for k in out:
            if k.endswith("_token") and out[k] is not None:
                out[k] = f"<{k.upper()}>"  # as TrainingArguments.to_dict: never serialise a secret
        return out

    def training_arguments(self, output_dir: str | None = None, **overrides: Any) -> TrainConfig:
        """The TrainingArguments the Trainer gets: a copy of this config (same class, every field) with
        ``overrides`` applied and the TrainingArguments post-processing run (devices, accelerator state).

        Run-time defaults: ``output_dir`` (else ``self.output_dir``), ``lr_scheduler_type`` None -> 'constant'
        without warm-up / 'linear' with, ``data_seed`` None -> ``seed``, ``use_cpu`` when no CUDA device.

        Args:
            output_dir: the Trainer's scratch folder for this run (not created here).
            **overrides: fields (or aliases) to change for this run, e.g. a stage's ``seed``.

        Example:
            >>> TrainConfig(warmup_ratio=0.1).training_arguments("/tmp/x").lr_scheduler_type.value
            'linear'
        """
        self.check_names(overrides)
        args = copy.deepcopy(self)
        for name, value in self.resolve_aliases(overrides).items():
            setattr(args, name, value)
        if output_dir is not None:
            args.output_dir = output_dir
        if args.lr_scheduler_type is None:
            args.lr_scheduler_type = "linear" if args.warmup_steps else "constant"
        if args.data_seed is None:
            args.data_seed = args.seed
        if not args.use_cpu:
            import torch

            args.use_cpu = not torch.cuda.is_available()
        TrainingArguments.__post_init__(args)
        return args

    def extra_training_arguments(self) -> dict[str, Any]:
        """The TrainingArguments fields set to something other than their defaults that TrainConfig does not
        declare (gradient_checkpointing, optim, fsdp, ...): what a method that builds sub-configs
        (RUM's groups) hands on unchanged.

        Example:
            >>> TrainConfig(gradient_checkpointing=True, learning_rate=1e-3).extra_training_arguments()
            {'gradient_checkpointing': True}
        """
        own = set(vars(TrainConfig)["__annotations__"])
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(TrainingArguments)
            if f.init and f.name not in own and getattr(self, f.name) != _default(f)
        }


@dataclass
class UnlearnConfig(TrainConfig):
    """Options of every method that trains through a Trainer: all ``transformers.TrainingArguments`` fields (with
    :class:`TrainConfig`'s defaults) plus our data and calibration fields.

    Aliases: ``num_epochs`` (``num_train_epochs``), ``batch_size`` (``per_device_train_batch_size``),
    ``warmup_ratio`` (``warmup_steps`` < 1, a fraction of the steps).

    Example:
        >>> cfg = UnlearnConfig(batch_size=4, gradient_checkpointing=True, optim="adafactor", max_length=64)
        >>> cfg.per_device_train_batch_size, cfg.batch_size, cfg.optim, cfg.max_length
        (4, 4, 'adafactor', 64)
    """

    # ---- our data fields
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example."})
    template: str = field(default="plain", metadata={"help": "Prompt template: 'plain' or 'chat'."})
    lora: Any = field(
        default=None,
        metadata={
            "help": "None: train the model's own trainable parameters (the active adapter of a PeftModel, else "
            "all weights). A dict of peft LoraConfig kwargs (or a LoraConfig): attach a fresh unlearning adapter "
            "and train only it (the base stays bit-identical; the reference model is the adapter disabled)."
        },
    )
    max_weight_growth: float = field(
        default=100.0,
        metadata={
            "help": "Divergence guard: stop (DivergenceError, nothing saved) when the weight norm grows more than "
            "this factor over the run; non-finite loss, gradients or weights always stop it. 0: no growth check."
        },
    )
    # ---- calibrated early stopping
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
        super().__post_init__()
        check_range("max_length", self.max_length, 2)
        check_choice("template", self.template, ("plain", "chat"))
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


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _check_enum(name: str, value: Any, enum_name: str, allow_none: bool = False) -> None:
    """A TrainingArguments enum field checked at config time (cheap), naming the valid values."""
    if value is None and allow_none:
        return
    from transformers import training_args

    enum = getattr(training_args, enum_name)
    valid = [e.value for e in enum]
    if (value.value if isinstance(value, Enum) else value) not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
