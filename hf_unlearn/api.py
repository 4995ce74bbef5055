"""``hf_unlearn.unlearn``: one entry point for every post-hoc unlearning method."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from hf_unlearn.config import UnlearnConfig, unknown_option_error
from hf_unlearn.data import UID, column, exclude_uids, load_examples, resolve_examples
from hf_unlearn.models import check_causal_lm, load_model
from hf_unlearn.registry import get_method
from hf_unlearn.result import UnlearnResult
from hf_unlearn.training.calibration import holdout_scope
from hf_unlearn.training.guard import check_weights, weight_norm
from hf_unlearn.utils.profiling import measure

logger = logging.getLogger("hf_unlearn")


def _is_uid_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(u, str) for u in x)


def build_config(method: str, config: Any = None, **kwargs: Any) -> tuple[UnlearnConfig, dict[str, Any]]:
    """The method's config from a config object, a dict, or keyword arguments.

    Returns:
        ``(config, remaining_kwargs)``: keyword arguments that are not config fields are handed to the method.

    Raises:
        TypeError: a config of another method's class. KeyError: unknown dict keys.
    """
    spec = get_method(method)
    names = set(spec.config_cls.option_names())  # fields and their aliases (num_epochs, batch_size, ...)
    cfg_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    if config is None:
        return spec.config_cls(**cfg_kwargs), kwargs
    if isinstance(config, dict):
        spec.config_cls.check_names(config)  # unknown keys: the closest valid name
        resolve = spec.config_cls.resolve_aliases  # keyword arguments win, whichever spelling either side used
        return spec.config_cls.from_dict({**resolve(config), **resolve(cfg_kwargs)}), kwargs
    if not isinstance(config, spec.config_cls):
        raise TypeError(f"method {method!r} takes a {spec.config_cls.__name__}, got {type(config).__name__}")
    if cfg_kwargs:
        config = dataclasses.replace(config, **spec.config_cls.resolve_aliases(cfg_kwargs))
    return config, kwargs


_DISPATCH_ARGS = ("model", "tokenizer", "forget", "retain", "method", "config", "train_dataset", "forget_split",
                  "retain_split", "inplace")  # fmt: skip


def method_arguments(method: str) -> list[str]:
    """Names of the extra keyword arguments ``method``'s ``unlearn`` takes (e.g. ``base_model`` for ``retrain``),
    as the method class declares them (``unlearn_arguments``).

    Example:
        >>> method_arguments("retrain")
        ['base_model', 'model_init']
    """
    return list(get_method(method).unlearn_arguments)


def check_options(method: str, kwargs: dict[str, Any]) -> None:
    """Raise when a keyword is neither a config field of ``method`` nor an argument its ``unlearn`` takes.

    Every method goes through this check (in :func:`unlearn`), so a misspelled option (``learnig_rate=``) is an
    error naming the closest valid name instead of being silently ignored.

    Raises:
        UnknownOptionError (a KeyError): naming the unknown option(s), the closest valid name and the valid ones.
    """
    spec = get_method(method)
    # holdout= is a dispatcher argument: it reaches every method that trains through the shared engine (calibration)
    extra = set(method_arguments(method)) | {"holdout"}
    valid = set(spec.config_cls.option_names()) | extra
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        # the message lists our options; the TrainingArguments fields are suggested, and summed up in the note
        raise unknown_option_error(
            unknown,
            set(spec.config_cls.listed_option_names()) | extra,
            f"option for method {method!r}:",
            hints=_DISPATCH_ARGS + tuple(sorted(valid)),
            note=spec.config_cls.option_note(),
        )


def _resolve(role: str, spec: Any, train_dataset: Any, split: str | None) -> Any:
    """resolve_examples, with a clear error for a bare string that is neither a path nor a loadable dataset."""
    if isinstance(spec, str) and not Path(spec).expanduser().exists():
        hint = (
            f"to {role} uids, pass a list (e.g. {role}=[{spec!r}]) together with train_dataset=; otherwise pass a "
            "datasets.Dataset, a list of dicts, or the path of a data file or folder"
        )
        if train_dataset is not None and spec in set(column(resolve_examples(train_dataset, split=split), UID)):
            raise ValueError(f"{role}={spec!r} is a single string, not a list of uids: {hint}")
        try:
            return resolve_examples(spec, train_dataset, split=split)
        except ValueError as err:
            raise ValueError(
                f"{role}={spec!r} is a string, but no file or folder {spec!r} exists and it is not a loadable Hub "
                f"dataset: {hint}"
            ) from err
    return resolve_examples(spec, train_dataset, split=split)


def unlearn(
    model: Any,
    forget: Any,
    retain: Any = None,
    method: str = "grad_diff",
    config: Any = None,
    tokenizer: Any = None,
    *,
    train_dataset: Any = None,
    forget_split: str | None = None,
    retain_split: str | None = None,
    inplace: bool = True,
    **kwargs: Any,
) -> UnlearnResult:
    """Make ``model`` forget ``forget`` with a registered method.

    Args:
        model: a causal LM (or PeftModel), or a Hub id / local path / ``"smollm2-135m-offline"`` to load.
        forget: the examples to forget: a Dataset, Hub id, local file/folder, list of dicts, or a list of uids
            looked up in ``train_dataset``.
        retain: the examples to keep (same forms). Defaults to ``train_dataset`` minus ``forget`` when
            ``train_dataset`` is given. Forget uids found in it are removed (with a warning).
        method: a name from :func:`hf_unlearn.list_methods`.
        config: the method's config dataclass (or a dict of its fields). Config fields may also be given as
            keyword arguments, e.g. ``learning_rate=1e-4``.
        tokenizer: the model's tokenizer (loaded with the model when ``model`` is a name).
        train_dataset: the dataset the model was trained on, for uid lists and the default retain set.
        forget_split, retain_split: split names when a source has several.
        inplace: modify ``model`` in place (default, like Trainer); False works on a deep copy.
        **kwargs: method-specific arguments (e.g. ``base_model=`` for ``retrain``). ``holdout=``: examples of the
            same kind the model never saw (same forms as ``forget``); it turns on calibrated early stopping for the
            methods that train (``calibrate``, docs/calibration.md) and is embedding_ga's target; methods that
            neither train nor take it ignore it.

    Returns:
        :class:`UnlearnResult` with the unlearned model, timings, peak memory and the method's report.

    Example:
        >>> import hf_unlearn
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(6)]
        >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1? Answer: A1."] * 4, num_layers=1, vocab_size=300)
        >>> res = hf_unlearn.unlearn(model, ["u0", "u1"], method="grad_ascent", tokenizer=tok, train_dataset=data,
        ...                          num_epochs=1)
        >>> res.forget_uids
        ['u0', 'u1']
    """
    spec = get_method(method)
    check_options(method, kwargs)
    cfg, method_kwargs = build_config(method, config, **kwargs)
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model, loaded_tok = load_model(model)
        tokenizer = tokenizer or loaded_tok
    check_causal_lm(model)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("pass tokenizer= (the model's tokenizer) to unlearn a model object")
    if not inplace:
        model = copy.deepcopy(model)
    if _is_uid_list(forget) and train_dataset is None and spec.uids_only:
        forget_ds = load_examples({UID: [str(u) for u in forget]})
    else:
        forget_ds = _resolve("forget", forget, train_dataset, forget_split)
    forget_uids = column(forget_ds, UID)
    if train_dataset is not None:
        n_train = len(train_uids := set(column(resolve_examples(train_dataset, split=retain_split), UID)))
        if train_uids <= set(forget_uids):
            raise ValueError(
                f"the forget set equals the whole training set (all {n_train} examples of train_dataset): nothing "
                "would be retained, so there is no model left to keep; forget a proper subset (or train anew)"
            )
    if retain is not None:
        retain_ds = _resolve("retain", retain, train_dataset, retain_split)
    elif train_dataset is not None:
        retain_ds = exclude_uids(resolve_examples(train_dataset, split=retain_split), forget_uids)
    else:
        retain_ds = None
    if retain_ds is not None:
        overlap = set(forget_uids) & set(column(retain_ds, UID))
        if overlap:
            logger.warning("removing %d forget uid(s) from the retain set, e.g. %s", len(overlap), sorted(overlap)[:3])
            retain_ds = exclude_uids(retain_ds, overlap)
        if len(retain_ds) == 0:
            if retain is not None:
                raise ValueError(
                    f"every example of the retain set ({len(overlap)}) is also in the forget set: the retain set is "
                    "empty once they are removed; pass a retain set of examples to keep"
                )
            retain_ds = None
    if spec.needs_retain and retain_ds is None:
        raise ValueError(f"method {method!r} needs a retain set: pass retain= or train_dataset=")
    impl = spec.method_cls(cfg)
    params = spec.unlearn_arguments
    if train_dataset is not None and "train_dataset" in params:
        method_kwargs.setdefault("train_dataset", resolve_examples(train_dataset))  # e.g. SSD's I_D over D, in order
    guarded = isinstance(model, torch.nn.Module) and spec.method_cls.changes_weights
    start_norm = weight_norm(model) if guarded else None
    holdout = method_kwargs.get("holdout")
    if holdout is not None:
        holdout = resolve_examples(holdout, train_dataset)
        if "holdout" in params:
            method_kwargs["holdout"] = holdout
    if "holdout" not in params:
        method_kwargs.pop("holdout", None)  # reaches the training engine through the scope below
    with measure() as cost, holdout_scope(holdout):
        out = impl.unlearn(model, tokenizer, forget_ds, retain_ds, **method_kwargs)
    if guarded and isinstance(out.model, torch.nn.Module):  # every method, incl. the retrain-free ones (SSD, ...)
        check_weights(
            out.model,
            start_norm=start_norm,
            max_weight_growth=getattr(cfg, "max_weight_growth", 0) or 0,
            where=f"in {method}",
        )
    timings = {"unlearn": cost.seconds, **out.timings}
    base_name = getattr(getattr(out.model, "config", None), "name_or_path", None)
    return UnlearnResult(
        model=out.model,
        method=method,
        config=cfg,
        forget_uids=forget_uids,
        timings=timings,
        memory=cost.as_dict(),
        details=out.details,
        tokenizer=tokenizer,
        base_model_name=base_name,
        tokens_processed=out.tokens_processed,
    )
