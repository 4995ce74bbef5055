"""Base class of unlearning methods and the output they hand back to :func:`hf_unlearn.unlearn`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import Dataset

from hf_unlearn.config import UnlearnConfig


@dataclass
class MethodOutput:
    """What a method's ``unlearn`` returns; the dispatcher adds total time and memory."""

    model: Any
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tokens_processed: int = 0


class UnlearningMethod:
    """Implement ``unlearn``; set the class attributes; register with ``register_method``.

    Attributes:
        name: registry name.
        exact: True when the result provably equals retraining without the forget set (S3T, retrain).
        paper: citation shown in docs and model cards.
        needs_retain: the method needs a retain set (the dispatcher errors early when it is missing).
        uids_only: a list of uids is a complete forget request (the model knows its own training data, e.g.
            S3T's inventory), so no ``train_dataset`` is needed to resolve it.
        changes_weights: False when a request only changes bookkeeping (S3T deactivates adapters): the
            dispatcher's divergence check of the weights is then skipped (there is nothing it could catch).
    """

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    paper: ClassVar[str | None] = None
    needs_retain: ClassVar[bool] = False
    uids_only: ClassVar[bool] = False
    changes_weights: ClassVar[bool] = True

    def __init__(self, config: UnlearnConfig):
        self.config = config

    def unlearn(
        self, model: Any, tokenizer: Any, forget: Dataset, retain: Dataset | None = None, **kwargs: Any
    ) -> MethodOutput:
        raise NotImplementedError
