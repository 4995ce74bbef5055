"""The object every unlearning call returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hf_unlearn.config import UnlearnConfig
from hf_unlearn.utils.serialization import jsonable as _jsonable


@dataclass
class UnlearnResult:
    """What :func:`hf_unlearn.unlearn` returns.

    Attributes:
        model: the unlearned model (a PeftModel when the method trained an adapter).
        method: registry name of the method.
        config: the method's config.
        forget_uids: uids of the forgotten examples (never their text).
        timings: seconds per phase (``unlearn`` always; methods add e.g. ``importance``).
        memory: peak memory in MiB (``peak_rss_mib``; ``peak_cuda_mib`` on GPU).
        metrics: evaluation results, when evaluated.
        details: method-specific report (entries dampened, adapters deactivated, steps undone, ...).
        tokenizer: the tokenizer used, for saving.
        base_model_name: ``config._name_or_path`` of the base model, for model cards.
    """

    model: Any
    method: str
    config: UnlearnConfig
    forget_uids: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    base_model_name: str | None = None
    tokens_processed: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no model, no text)."""
        return {
            "method": self.method,
            "config": self.config.to_dict() if hasattr(self.config, "to_dict") else _jsonable(self.config),
            "n_forget": len(self.forget_uids),
            "timings": self.timings,
            "memory": self.memory,
            "tokens_processed": self.tokens_processed,
            "metrics": _jsonable(self.metrics),
            "details": _jsonable(self.details),
            "base_model": self.base_model_name,
        }

    def to_json(self) -> str:
        return json.dumps(self.summary(), indent=2, sort_keys=True)

    def __repr__(self) -> str:
        t = self.timings.get("unlearn")
        t_s = f"{t:.2f}s" if t is not None else "?"
        return f"UnlearnResult(method={self.method!r}, n_forget={len(self.forget_uids)}, unlearn={t_s})"
