"""The registered ``s3t`` method: deletion requests against a trained :class:`S3TModel`.

S3T is trained ahead of time (:meth:`S3TModel.from_training`); ``hf_unlearn.unlearn(s3t_model, forget, method="s3t")``
then deletes the forget uids (bookkeeping, milliseconds) and optionally rebuilds the cut stages (``retrain=True``).
"""

from __future__ import annotations

from typing import Any

from hf_unlearn.data import UID
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.s3t.config import S3TConfig
from hf_unlearn.methods.s3t.model import S3TModel


class S3T(UnlearningMethod):
    """Exact unlearning by deactivating the LoRA stages trained on deleted examples (arXiv 2406.16257)."""

    name = "s3t"
    exact = True
    needs_retain = False
    uids_only = True
    changes_weights = False  # a deletion deactivates adapters; freeing them runs in the background
    paper = (
        "Chowdhury et al., Towards Scalable Exact Machine Unlearning Using Parameter-Efficient Fine-Tuning "
        "(S3T), ICLR 2025, arXiv 2406.16257"
    )

    def unlearn(
        self,
        model: Any,
        tokenizer: Any,
        forget,
        retain=None,
        *,
        retrain: bool = False,
        dataset: Any = None,
        **kwargs: Any,
    ) -> MethodOutput:
        """Delete ``forget`` from an :class:`S3TModel`; with ``retrain=True`` rebuild the cut stages too.

        Args:
            model: a trained :class:`S3TModel` (train one with ``S3TModel.from_training``).
            forget: the examples to forget (their ``uid`` column is used).
            retrain: rebuild the cut stages (needs ``dataset=`` after ``from_pretrained``).
            dataset: the training examples for retraining (default: the ones the model was trained on).
        """
        if not isinstance(model, S3TModel):
            raise TypeError(
                "method 's3t' unlearns an S3TModel (train it first with S3TModel.from_training), "
                f"got {type(model).__name__}"
            )
        report = model.delete(list(forget[UID]))
        timings = {"delete": report["seconds"]}
        details: dict[str, Any] = {"delete": report}
        if retrain:
            import time

            t0 = time.perf_counter()
            new = model.retrain(dataset=dataset)
            timings["retrain"] = time.perf_counter() - t0
            details["retrained_adapters"] = new
            details["served_prefix_lengths"] = model.served_prefix_lengths()
        return MethodOutput(model=model, details=details, timings=timings)


__all__ = ["S3T", "S3TConfig"]
