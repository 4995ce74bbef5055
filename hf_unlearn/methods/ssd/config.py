"""Configuration of Selective Synaptic Dampening (SSD)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hf_unlearn.config import MethodConfig, check_choice, check_range

TARGETS = ("full", "adapter")
IMPORTANCE_MODES = ("batch_sq", "per_sample_sq")
ON_STALE = ("recompute", "error", "reuse")
CACHE_POLICIES = ("anchored", "strict", "reuse", "refresh")


def _check_positive_finite(name: str, value: object) -> None:
    check_range(name, value, 0, lo_open=True)
    if not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _check_patterns(name: str, patterns: object) -> tuple[str, ...]:
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{name} must be a list of regular expressions (str), got {patterns!r}")
    for p in patterns:
        try:
            re.compile(p)
        except re.error as err:
            raise ValueError(f"{name}: invalid regular expression {p!r}: {err}") from None
    return tuple(patterns)


@dataclass
class SSDConfig(MethodConfig):
    """Selective Synaptic Dampening (Foster et al., AAAI 2024): retrain-free, two importance maps and a mask.

    SSD trains nothing, so its config is a :class:`~hf_unlearn.config.MethodConfig` (no learning rate, epochs or
    other TrainingArguments fields); ``batch_size``, ``max_length`` and ``template`` define the importance batches.

    Example:
        >>> SSDConfig(alpha=5, lambda_=0.5).alpha
        5
        >>> SSDConfig(alpha=0)
        Traceback (most recent call last):
        ...
        ValueError: alpha must be > 0, got 0
    """

    alpha: float = field(
        default=10.0,
        metadata={
            "help": "Selection threshold: an entry is dampened when I_F > alpha * I_D (strict). Official default 10. "
            "Ignored when auto_alpha is set."
        },
    )
    lambda_: float = field(
        default=1.0,
        metadata={
            "help": "Dampening constant: selected entries are multiplied by min(lambda_ * I_D / I_F, 1). "
            "Official default 1. With lambda_ <= alpha every selected entry shrinks; with lambda_ > alpha some "
            "selected entries are left unchanged (beta capped at 1)."
        },
    )
    target: str = field(
        default="full",
        metadata={
            "help": "'full': every parameter (tied embeddings once); 'adapter': only the LoRA parameters of the "
            "active adapter of a PeftModel (base weights stay bit-identical)."
        },
    )
    batch_size: int = field(
        default=128,
        metadata={"help": "Mini-batch size of BOTH importance passes (forget and full data). Official 128."},
    )
    importance: str = field(
        default="batch_sq",
        metadata={
            "help": "'batch_sq' (official): mean over mini-batches of (grad of the batch-mean loss)^2. "
            "'per_sample_sq': mean over examples of (grad of the example's loss)^2 (empirical Fisher, "
            "torch.func vmap)."
        },
    )
    label_free: bool = field(
        default=False,
        metadata={
            "help": "LFSSD: loss = mean over label positions of ||logits||^2 (no target tokens used) and the "
            "importance accumulates |grad| instead of grad^2."
        },
    )
    auto_alpha: float | None = field(
        default=None,
        metadata={
            "help": "If set (a percentile q in (0, 100)), alpha := the q-th percentile of I_F / I_D over the targeted "
            "entries with I_D > 0, so that about (100 - q)% of them are selected. Off by default."
        },
    )
    include: list[str] | None = field(
        default=None,
        metadata={"help": "Regular expressions (re.search on parameter names): only matching tensors are targeted."},
    )
    exclude: list[str] | None = field(
        default=None,
        metadata={"help": "Regular expressions (re.search on parameter names): matching tensors are never touched."},
    )
    offload: bool = field(
        default=False,
        metadata={"help": "Keep the importance maps on CPU (for models whose two fp32 maps do not fit on device)."},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the I_D cache (safetensors + weights sha256). None: '<model folder>/ssd_cache' when "
            "the model was loaded from a local folder, else no cache."
        },
    )
    use_cache: bool = field(default=True, metadata={"help": "Read/write the I_D cache (False: always recompute)."})
    on_stale: str = field(
        default="recompute",
        metadata={
            "help": "When the cached I_D belongs to other weights: 'recompute' (and overwrite), 'error' (refuse), or "
            "'reuse' (use it anyway, with a warning: an approximation for sequential requests on a model SSD has "
            "already dampened)."
        },
    )
    cache_policy: str = field(
        default="anchored",
        metadata={
            "help": "Sequential requests on a model SSD has already dampened (its weights hash changed). "
            "'anchored': keep the I_D of the original weights and compute each request's I_F on those original "
            "weights too (the dampened entries' original values are kept beside the cache and swapped in for the "
            "I_F pass), then dampen the current model: each request selects what SSD would select on the original "
            "model; one pass over F per request. 'strict': recompute I_D on the current weights whenever they "
            "changed (the official algorithm per request; a full pass over D each time). 'reuse': keep the "
            "original I_D but compute I_F on the dampened weights (cheap, but the two maps then belong to "
            "different weights: measured to collapse the model, benchmarks/results/ssd_sequence.md). 'refresh': "
            "'reuse' with I_D recomputed every refresh_every requests. Only models derived by SSD requests from "
            "the cached weights count as the same lineage: any other change is handled by on_stale."
        },
    )
    refresh_every: int = field(
        default=5, metadata={"help": "cache_policy='refresh': requests that may reuse one I_D before it is redone."}
    )
    cache_hash: str = field(
        default="all",
        metadata={
            "help": "What the cache's weights sha256 covers: 'all' (every state_dict tensor: safe) or 'targeted' "
            "(only the targeted tensors: far cheaper for target='adapter' on a large frozen base, but a changed base "
            "with an unchanged adapter is then NOT detected)."
        },
    )
    per_sample_chunk: int = field(
        default=8, metadata={"help": "Examples per vmap chunk in importance='per_sample_sq' (memory bound)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("batch_size", self.batch_size, 1)
        _check_positive_finite("alpha", self.alpha)
        _check_positive_finite("lambda_", self.lambda_)
        check_choice("target", self.target, TARGETS)
        check_choice("importance", self.importance, IMPORTANCE_MODES)
        check_choice("on_stale", self.on_stale, ON_STALE)
        check_choice("cache_hash", self.cache_hash, ("all", "targeted"))
        check_choice("cache_policy", self.cache_policy, CACHE_POLICIES)
        if not isinstance(self.refresh_every, int) or isinstance(self.refresh_every, bool) or self.refresh_every < 1:
            raise ValueError(f"refresh_every must be an int >= 1, got {self.refresh_every!r}")
        if not isinstance(self.label_free, bool):
            raise ValueError(f"label_free must be True or False, got {self.label_free!r}")
        if self.auto_alpha is not None:
            check_range("auto_alpha", self.auto_alpha, 0, 100, lo_open=True, hi_open=True)
        self.include = list(_check_patterns("include", self.include)) or None
        self.exclude = list(_check_patterns("exclude", self.exclude)) or None
        check_range("per_sample_chunk", self.per_sample_chunk, 1)
