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
from hf_unlearn.registry import Paper


class S3T(UnlearningMethod):
    """Exact unlearning by deactivating the LoRA stages trained on deleted examples (arXiv 2406.16257)."""

    name = "s3t"
    config_cls = S3TConfig
    reference = Paper(
        title="Towards Scalable Exact Machine Unlearning Using Parameter-Efficient Fine-Tuning",
        authors=(
            "Somnath Basu Roy Chowdhury and Krzysztof Choromanski and Arijit Sehanobish and Avinava Dubey and Snigdha "
            "Chaturvedi"
        ),
        arxiv="2406.16257",
        year=2024,
        venue="ICLR 2025",
    )
    description = (
        "S3T (Sequence-aware Sharded Sliced Training) trains LoRA adapters stage by stage so that each data slice "
        "only influences a known set of adapters; a deletion deactivates the adapters trained on the deleted "
        "examples. The served model equals a model trained without them (exact unlearning)."
    )
    unlearn_arguments = ("retrain", "dataset")
    exact = True
    needs_retain = False
    uids_only = True
    changes_weights = False  # a deletion deactivates adapters; freeing them runs in the background
    paper = (
        "Chowdhury et al., Towards Scalable Exact Machine Unlearning Using Parameter-Efficient Fine-Tuning "
        "(S3T), ICLR 2025, arXiv 2406.16257"
    )

    # the ensemble toggles which adapters are live inside every forward: per-sample gradients are not defined
    gradnorm_not_applicable = "GradNorm MIA not applicable to an S3T ensemble"
    # Slices are assigned per author (group_column="author_id"): a deletion request names a person, so all of that
    # person's data sits in one slice and the request cuts one slice instead of every one.
    # The demo setting overrides these on its pretrained tiny base (general-knowledge QA spread by uid, full-rank
    # LoRA, lr 1e-2, 5 epochs per stage): docs/methods/s3t.md, "Recipe on the tiny base"
    # (benchmarks/s3t_demo_recipe.py).
    benchmark_defaults = {
        "n_shards": 1,
        "n_slices": 4,
        "group_column": "author_id",
        "lora": {"r": 16, "lora_alpha": 32},
        # a deletion that cuts every shard leaves the base model serving (exact: it saw no training data), so the
        # row is that model's quality rather than an error; details["serving"] says so
        "when_dead": "base",
    }
    retrained_row = True

    @classmethod
    def benchmark_run(cls, ctx: Any, unlearn: Any) -> Any:
        """Train S3T on ``full`` ahead of time (reported as ``s3t_training``), then serve the deletion request.

        One trained system serves every forget split (each deletion on its own copy), cached in ``ctx.cache``.
        """
        import copy
        import time

        if "s3t" not in ctx.cache:
            s = ctx.setting
            cfg = S3TConfig(
                **{
                    "num_epochs": 3,  # per stage (official): stage t re-reads t of the L slices, B sequences a shard
                    "learning_rate": s.ft_lr,
                    "batch_size": s.ft_batch_size,
                    "max_length": s.max_length,
                    "seed": s.seed,
                    **cls.benchmark_defaults,
                    **({"bf16": True} if s.bf16 else {}),
                    **ctx.overrides("s3t"),
                }
            )
            t0 = time.perf_counter()
            model = S3TModel.from_training(copy.deepcopy(ctx.base_model), ctx.tokenizer, ctx.bench["full"], cfg)
            ctx.cache["s3t"] = (model, time.perf_counter() - t0)
        trained, train_seconds = ctx.cache["s3t"]
        res = unlearn(copy.deepcopy(trained), list(ctx.forget["uid"]))
        res.timings["s3t_training"] = train_seconds
        res.details.update(s3t_training_seconds=train_seconds, delete_seconds=res.timings["delete"])
        return res

    @classmethod
    def benchmark_retrained(cls, result: Any, ctx: Any) -> Any:
        """The system of ``result`` after ``retrain()`` on the benchmark's ``full`` minus the deleted uids.

        Deletion serves shorter prefixes at once (milliseconds); ``retrain()`` rebuilds the cut stages on the
        surviving data of their slices (exactly the model trained without the deleted uids), restoring capacity.
        Its wall time is the row's cost.
        """
        import copy
        import dataclasses
        import time

        model = copy.deepcopy(result.model)
        t0 = time.perf_counter()
        new = model.retrain(ctx.bench["full"])
        seconds = time.perf_counter() - t0
        details = {**result.details, "retrain_seconds": seconds, "adapters_retrained": len(new or [])}
        details["served_prefix_lengths"] = {str(k): v for k, v in model.served_prefix_lengths().items()}
        return dataclasses.replace(
            result, model=model, timings={**result.timings, "unlearn": seconds}, details=details
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
        if not model.served():
            details["serving"] = (
                "base model (every shard dead; when_dead='base')"
                if model.config_s3t.when_dead == "base"
                else "nothing: every shard dead, retrain() first (when_dead='raise')"
            )
        return MethodOutput(model=model, details=details, timings=timings)


__all__ = ["S3T", "S3TConfig"]
