"""Base class of unlearning methods and the output they hand back to :func:`hf_unlearn.unlearn`.

A method describes itself once, on its class: name, config class, paper, capabilities, the keyword arguments its
``unlearn`` takes, the recorders it needs while the model trains, and how the benchmark protocol runs it.
:func:`hf_unlearn.registry.register_method` reads all of it; nothing else lists methods by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from datasets import Dataset

from hf_unlearn.config import UnlearnConfig
from hf_unlearn.registry import Paper


@dataclass
class MethodOutput:
    """What a method's ``unlearn`` returns; the dispatcher adds total time and memory."""

    model: Any
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tokens_processed: int = 0


class UnlearningMethod:
    """Implement ``unlearn``; set the class attributes; register with ``register_method(TheClass)``.

    Attributes:
        name: registry name.
        config_cls: the method's config dataclass: a subclass of :class:`~hf_unlearn.config.UnlearnConfig` (a
            ``TrainingArguments``) for a method that trains through a Trainer, else of
            :class:`~hf_unlearn.config.MethodConfig`.
        paper: one-line citation shown in docs, the CLI and certificates.
        reference: the paper's bibliographic record (model cards' citation); None without a paper.
        description: the method paragraph of model cards.
        exact: True when the result provably equals retraining without the forget set (S3T, retrain).
        needs_retain: the method needs a retain set (the dispatcher errors early when it is missing).
        needs_recording: the method needs something recorded while the model trained (its
            :meth:`training_recorders`), e.g. embedding gradients or parameter updates.
        uids_only: a list of uids is a complete forget request (the model knows its own training data, e.g.
            S3T's inventory), so no ``train_dataset`` is needed to resolve it.
        changes_weights: False when a request only changes bookkeeping (S3T deactivates adapters): the
            dispatcher's divergence check of the weights is then skipped (there is nothing it could catch).
        gradnorm_not_applicable: why per-sample parameter gradients of the method's models are not defined (an S3T
            ensemble toggles adapters inside its forward), as the note the evaluation reports; None: they are, and
            the GradNorm attack applies.
        unlearn_arguments: keyword arguments ``unlearn`` takes besides the dispatcher's (``model``, ``tokenizer``,
            ``forget``, ``retain``); the dispatcher accepts exactly these (plus config fields and ``holdout``).
            A test checks the tuple against the signature.

    Benchmark protocol (``hf_unlearn.protocol``; ``ctx`` is its context: ``setting``, ``bench``, ``tokenizer``,
    ``target``, ``forget`` / ``retain`` / ``holdout``, ``recorders``, ``cache``, ``path(name)``, ``overrides(name)``):
        benchmark_defaults: config overrides for the tiny CPU settings (a setting's ``method_overrides`` win).
        benchmark_bf16: pass the setting's ``bf16`` to the config (False: the method runs fp32 on the benchmark).
        retrained_row: the protocol may add a ``<name>-retrained`` row (:meth:`benchmark_retrained`).
        calibrated_variant: with ``calibration_variants`` the protocol also runs the method with ``calibrate=True``
            (row ``<name>-cal``) when its default run was not calibrated (e.g. NPO, off by default).
        training_recorders(ctx): TrainerCallbacks attached while the TARGET is fine-tuned.
        benchmark_inputs(ctx, config): extra ``unlearn`` keyword arguments (the holdout, a recording...); may
            adjust ``config`` (a dict) in place.
        benchmark_run(ctx, unlearn): a run that is not "unlearn a copy of the target" (S3T serves a system trained
            ahead of time; retrain reuses the gold fine-tune); None (the default) = the generic run.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = UnlearnConfig
    paper: ClassVar[str | None] = None
    reference: ClassVar[Paper | None] = None
    description: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    needs_retain: ClassVar[bool] = False
    needs_recording: ClassVar[bool] = False
    uids_only: ClassVar[bool] = False
    changes_weights: ClassVar[bool] = True
    gradnorm_not_applicable: ClassVar[str | None] = None
    unlearn_arguments: ClassVar[tuple[str, ...]] = ()
    benchmark_defaults: ClassVar[dict[str, Any]] = {}
    benchmark_bf16: ClassVar[bool] = True
    retrained_row: ClassVar[bool] = False
    calibrated_variant: ClassVar[bool] = False

    #: The Trainer of a loss-based method (an ``UnlearnTrainer`` subclass): then the default :meth:`unlearn` trains
    #: it through the shared engine, handing it the config fields named in ``trainer_arguments``.
    trainer_cls: ClassVar[type | None] = None
    trainer_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: UnlearnConfig):
        self.config = config

    def unlearn(
        self, model: Any, tokenizer: Any, forget: Dataset, retain: Dataset | None = None, **kwargs: Any
    ) -> MethodOutput:
        if self.trainer_cls is None:
            raise NotImplementedError(f"{type(self).__name__} must implement unlearn() or set trainer_cls")
        return self.train_unlearning(model, tokenizer, forget, retain)

    def train_unlearning(
        self, model: Any, tokenizer: Any, forget: Any, retain: Any = None, **extra: Any
    ) -> MethodOutput:
        """The glue every loss-based method shares: :func:`~hf_unlearn.training.engine.run_unlearning` of
        ``trainer_cls`` with the config, the retain set paired unless ``config.retain_loss == "none"``, the config
        fields named in ``trainer_arguments`` (and ``extra``) as trainer keyword arguments.

        Returns:
            :class:`MethodOutput` with the engine's report as ``details`` and its token count.
        """
        from hf_unlearn.training.engine import run_unlearning  # methods build on training; keep the base light

        c = self.config
        model, info = run_unlearning(
            self.trainer_cls,
            model,
            tokenizer,
            forget,
            retain,
            c,
            use_retain=getattr(c, "retain_loss", "nll") != "none",
            **{name: getattr(c, name) for name in self.trainer_arguments},
            **extra,
        )
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])

    # ------------------------------------------------------------------------------------ benchmark protocol
    @classmethod
    def training_recorders(cls, ctx: Any) -> list[Any]:
        """TrainerCallbacks to attach while the target is fine-tuned (their cost is the training-time overhead)."""
        return []

    @classmethod
    def benchmark_inputs(cls, ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
        """Extra ``unlearn`` keyword arguments on the benchmark; default: the split's holdout (calibration)."""
        return {"holdout": ctx.holdout}

    @classmethod
    def benchmark_run(cls, ctx: Any, unlearn: Any) -> Any:
        """A whole benchmark run of its own, or None for the generic one.

        Args:
            ctx: the protocol's context.
            unlearn: ``unlearn(model, forget, retain=None, **kwargs) -> UnlearnResult``, the dispatcher bound to
                this method (so a method never imports the API layer).
        """
        return None

    @classmethod
    def benchmark_retrained(cls, result: Any, ctx: Any) -> Any:
        """The ``<name>-retrained`` row's result from this method's result (only when ``retrained_row``)."""
        raise NotImplementedError(f"{cls.name} has no retrained row")
