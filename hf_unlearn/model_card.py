"""Model cards for unlearned models, rendered with ``huggingface_hub.ModelCard`` from ``templates/model_card.md``.

A card states the base model, the method and its paper, the config, the forget set as a size and a hash of its
uids (never its text), metrics next to the gold (retrained) model when known, and the library versions.

Example:
    >>> from hf_unlearn.model_card import render_model_card
    >>> card = render_model_card(method="grad_ascent", config={"learning_rate": 1e-4}, n_forget=4,
    ...                          forget_digest="0" * 64, base_model_name="gpt2", date="2025-01-01",
    ...                          versions={"hf_unlearn": "0.1.0"})
    >>> card.data.tags
    ['hf_unlearn', 'unlearning', 'grad_ascent']
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).parent / "templates"
MODEL_CARD_TEMPLATE = TEMPLATE_DIR / "model_card.md"

VERSION_PACKAGES = ("hf_unlearn", "torch", "transformers", "peft", "accelerate", "datasets", "huggingface_hub")

# evaluate_unlearning keys shown in cards and certificates, with their labels (higher/lower-is-better hints)
METRIC_LABELS = {
    "forget_quality": "forget quality (KS-test p-value vs gold, higher = closer to retrained)",
    "model_utility": "model utility (higher = better)",
    "forget_nll": "forget-set answer NLL",
    "retain_nll": "retain-set answer NLL",
    "holdout_nll": "holdout answer NLL",
    "perplexity.retain": "retain perplexity",
    "perplexity.holdout": "holdout perplexity",
}


def library_versions(packages: tuple[str, ...] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of the libraries that produced a model (``"not installed"`` when absent)."""
    import platform

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "hf_unlearn":
                from hf_unlearn._version import __version__

                out[name] = __version__
            else:
                out[name] = "not installed"
    return out


def _registered(method: str) -> Any:
    """The registry's spec of ``method`` (its class carries the paper and the card's description), else None."""
    from hf_unlearn.registry import get_method

    try:
        return get_method(method)
    except ValueError:
        return None


def citation(method: str) -> str | None:
    """A BibTeX entry for the method's paper (None for ``retrain`` and unknown methods)."""
    spec = _registered(method)
    p = spec.reference if spec is not None else None
    if p is None or not p.title:
        return None
    first = p.authors.split(" and ")[0].split()[-1].lower()
    return (
        f"@article{{{first}{p.year}_{method},\n"
        f"  title   = {{{p.title}}},\n"
        f"  author  = {{{p.authors}}},\n"
        f"  journal = {{arXiv preprint arXiv:{p.arxiv}}},\n"
        f"  year    = {{{p.year}}},\n"
        f"  note    = {{{p.venue}}}\n"
        "}"
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarize_evaluation(evaluation: dict[str, Any] | None) -> dict[str, float | None]:
    """The headline numbers of an evaluation, flat and text-free (safe for cards and certificates).

    Args:
        evaluation: an :func:`hf_unlearn.evaluation.evaluate_unlearning` report, or any dict of metrics (nested
            dicts are flattened with dots; per-item values, strings and lists are dropped).

    Example:
        >>> summarize_evaluation({"forget_quality": 0.5, "mia": {"loss": {"auc": 0.6, "privleak": -2.0}}})
        {'forget_quality': 0.5, 'mia.loss.auc': 0.6, 'mia.loss.privleak': -2.0}
    """
    if not evaluation:
        return {}
    out: dict[str, float | None] = {}

    def walk(prefix: str, obj: Any) -> None:
        for k in sorted(obj):
            if k in ("per_item", "splits", "meta", "notes", "cost", "name", "model_utility_components"):
                continue
            v = obj[k]
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(key + ".", v)
            elif _is_number(v):
                out[key] = float(v)
            elif v is None and prefix.count(".") < 2:
                out[key] = None

    walk("", evaluation)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if _is_number(v):
        return f"{v:.4g}"
    return str(v)


def _label(key: str) -> str:
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    m = re.fullmatch(r"mia\.(\w+)\.(auc|privleak)", key)
    if m:
        return f"MIA {m.group(1)}: {'AUC (0.5 = chance)' if m.group(2) == 'auc' else 'privleak (0 = like gold)'}"
    return key


def _evaluation_section(rows: list[tuple[str, str, str]], has_gold: bool) -> str:
    if not rows:
        return (
            "Not evaluated. Run `hf-unlearn evaluate` (or `hf_unlearn.evaluation.evaluate_unlearning`) against a\n"
            "gold model retrained without the forget set to measure forget quality and membership-inference AUC."
        )
    if has_gold:
        lines = ["| metric | this model | gold (retrained without the forget set) |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    else:
        lines = ["No gold (retrained) model was evaluated for comparison.", "", "| metric | this model |", "|---|---|"]
        lines += [f"| {a} | {b} |" for a, b, _ in rows]
    return "\n".join(lines)


def _hub_id(name: str | None) -> str | None:
    """The Hub id in a model name when it looks like one (``org/name``), for the card's ``base_model`` field."""
    if not name:
        return None
    head = str(name).split(" ")[0]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", head) and not head.startswith("hf_unlearn/"):
        return head
    return None


def render_model_card(
    *,
    method: str,
    config: Any,
    n_forget: int,
    forget_digest: str,
    base_model_name: str | None,
    base_revision: str | None = None,
    metrics: dict[str, Any] | None = None,
    gold_metrics: dict[str, Any] | None = None,
    save_format: str = "peft_adapter",
    timings: dict[str, float] | None = None,
    versions: dict[str, str] | None = None,
    date: str | None = None,
    repo_id: str | None = None,
    note: str | None = None,
    license: str | None = None,
    calibration: dict[str, Any] | None = None,
) -> Any:
    """Render the model card of an unlearned model as a ``huggingface_hub.ModelCard``.

    Args:
        method: registry name of the method.
        config: the method's config (a dataclass with ``to_dict`` or a dict).
        n_forget: number of forgotten examples.
        forget_digest: sha256 of the sorted forget uids (:func:`hf_unlearn.utils.hashing.uids_digest`).
        base_model_name: the base model's name or path; ``base_revision``: its revision, if known.
        metrics, gold_metrics: evaluation of this model and of the gold (retrained) model, as
            :func:`hf_unlearn.evaluation.evaluate_unlearning` reports or flat dicts (see
            :func:`summarize_evaluation`); only numbers reach the card.
        save_format: ``"peft_adapter"`` or ``"full"`` (what the folder holds).
        timings: seconds per phase.
        versions: library versions (default: the installed ones; pass fixed values for reproducible cards).
        date: ISO date shown on the card (default: today, UTC).
        repo_id: the Hub repo the card is for (used in the loading snippet).
        note: an optional note printed at the top (e.g. that the numbers are illustrative).
        license: the card's license field.
        calibration: the calibrated early stopping report (``result.details["calibration"]``): the card states
            the criterion and where it stopped.

    Returns:
        ``huggingface_hub.ModelCard``; ``str(card)`` is the README.md text.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if save_format not in ("peft_adapter", "full"):
        raise ValueError(f"save_format must be 'peft_adapter' or 'full', got {save_format!r}")
    spec = _registered(method)
    exact, paper_attr = (spec.exact, spec.paper) if spec is not None else (False, None)
    ref = spec.reference if spec is not None else None
    description = spec.description if spec is not None else None
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    from hf_unlearn.utils.serialization import jsonable as _jsonable

    cfg_json = json.dumps(_jsonable(cfg), indent=2, sort_keys=True)
    adapter = save_format == "peft_adapter"
    tags = ["hf_unlearn", "unlearning", method]
    card_data = ModelCardData(
        base_model=_hub_id(base_model_name),
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        license=license,
    )
    ours = summarize_evaluation(metrics)
    gold = summarize_evaluation(gold_metrics)
    keys = sorted(set(ours) | set(gold), key=lambda k: (k not in METRIC_LABELS, k))
    rows = [(_label(k), _fmt(ours.get(k)), _fmt(gold.get(k))) for k in keys]
    where = repo_id or "path/to/this/folder"
    base_ref = _hub_id(base_model_name) or (base_model_name or "path/to/the/base/model")
    if adapter:
        snippet = (
            "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'base = AutoModelForCausalLM.from_pretrained("{base_ref}")\n'
            f'model = PeftModel.from_pretrained(base, "{where}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")'
        )
    else:
        snippet = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{where}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")'
        )
    vers = versions if versions is not None else library_versions()
    if ref is not None and ref.title:
        paper_line = f"{ref.title} ({ref.venue}, [arXiv {ref.arxiv}](https://arxiv.org/abs/{ref.arxiv}))"
    else:
        paper_line = paper_attr or ""
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=f"{method} unlearning of {base_model_name or 'a causal LM'}",
        summary=(
            f"This model is `{base_model_name or 'a causal LM'}` after removing the influence of {n_forget} "
            f"training example(s) with the `{method}` unlearning method of hf_unlearn."
        ),
        note=note,
        base_model_name=base_model_name or "unknown",
        base_revision=base_revision,
        method=method,
        guarantee="exact: equals retraining without the forget set" if exact else "approximate",
        save_format="a PEFT (LoRA) adapter folder" if adapter else "a full `save_pretrained` model folder",
        n_forget=n_forget,
        forget_digest=forget_digest,
        timings=", ".join(f"{k} {v:.2f}s" for k, v in sorted((timings or {}).items()) if _is_number(v)),
        method_description=description or paper_attr or f"The `{method}` method.",
        citation=citation(method),
        paper_line=paper_line,
        config_json=cfg_json,
        evaluation_section=_evaluation_section(rows, has_gold=bool(gold)),
        load_snippet=snippet,
        versions=sorted(vers.items()),
        date=date or _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
        stopping=_stopping_line(calibration),
    )


def _stopping_line(cal: dict[str, Any] | None) -> str | None:
    """One line for the card: the calibration criterion and where it stopped."""
    if not cal:
        return None
    if cal.get("criterion") == "mia":
        rule = f"Min-K%++ AUC of forget vs holdout <= {0.5 + (cal.get('mia_epsilon') or 0):.2f}"
    else:
        rule = f"forget NLL >= {_fmt(cal.get('target_nll'))} ({cal.get('target_source')})"
    tol = cal.get("retain_tolerance")
    tol_txt = f", retain NLL within +{_fmt(tol)} of its start" if tol is not None else ""
    return (
        f"calibrated: {rule}{tol_txt}; stopped after step {cal.get('stopped_at_step')} "
        f"({cal.get('stop_reason')}), kept step {cal.get('kept_step')}"
    )


def model_card_from_result(
    result: Any,
    *,
    metrics: dict[str, Any] | None = None,
    gold_metrics: dict[str, Any] | None = None,
    save_format: str = "peft_adapter",
    **kwargs: Any,
) -> Any:
    """:func:`render_model_card` filled from an :class:`hf_unlearn.UnlearnResult`.

    Args:
        result: the result of :func:`hf_unlearn.unlearn`.
        metrics: this model's evaluation (default: ``result.metrics``, without its ``gold`` entry).
        gold_metrics: the gold model's evaluation (default: ``result.metrics["gold"]`` when present).
        save_format: ``"peft_adapter"`` or ``"full"``.
        **kwargs: passed to :func:`render_model_card` (``versions``, ``date``, ``repo_id``, ``base_revision``...).
    """
    from hf_unlearn.utils.hashing import uids_digest

    res_metrics = dict(result.metrics or {})
    if gold_metrics is None:
        gold_metrics = res_metrics.pop("gold", None)
    else:
        res_metrics.pop("gold", None)
    if metrics is None:
        metrics = res_metrics
    base_revision = kwargs.pop("base_revision", None)
    if base_revision is None:
        base_revision = getattr(getattr(result.model, "config", None), "_commit_hash", None)
    return render_model_card(
        method=result.method,
        config=result.config,
        n_forget=len(result.forget_uids),
        forget_digest=uids_digest(result.forget_uids),
        base_model_name=result.base_model_name,
        base_revision=base_revision,
        metrics=metrics,
        gold_metrics=gold_metrics,
        save_format=save_format,
        timings=result.timings,
        calibration=kwargs.pop("calibration", (result.details or {}).get("calibration")),
        **kwargs,
    )
