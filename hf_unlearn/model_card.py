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

# The five papers hf_unlearn implements, and the baselines. "description" is the card's method paragraph.
PAPERS: dict[str, dict[str, Any]] = {
    "s3t": {
        "title": "Towards Scalable Exact Machine Unlearning Using Parameter-Efficient Fine-Tuning",
        "authors": "Somnath Basu Roy Chowdhury and Krzysztof Choromanski and Arijit Sehanobish and Avinava Dubey "
        "and Snigdha Chaturvedi",
        "arxiv": "2406.16257",
        "year": 2024,
        "venue": "ICLR 2025",
        "description": "S3T (Sequence-aware Sharded Sliced Training) trains LoRA adapters stage by stage so that each "
        "data slice only influences a known set of adapters; a deletion deactivates the adapters trained on the "
        "deleted examples. The served model equals a model trained without them (exact unlearning).",
    },
    "ssd": {
        "title": "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening",
        "authors": "Jack Foster and Stefan Schoepf and Alexandra Brintrup",
        "arxiv": "2308.07707",
        "year": 2023,
        "venue": "AAAI 2024",
        "description": "Selective Synaptic Dampening compares each parameter's importance (mean squared gradient) on "
        "the forget set with its importance on the whole training data, and shrinks the parameters that matter "
        "disproportionately to the forget set. Retrain-free and approximate.",
    },
    "embedding_ga": {
        "title": "A More Practical Approach to Machine Unlearning",
        "authors": "David Zagardo",
        "arxiv": "2406.09391",
        "year": 2024,
        "venue": "arXiv",
        "description": "Gradient ascent on the embedding layer with the forget examples' gradients recorded during "
        "the first training epoch, calibrated to stop when the forget set looks like unseen data. Approximate; "
        "hf_unlearn's version is a reconstruction from the paper's abstract.",
    },
    "partial_amnesiac": {
        "title": "Efficient Knowledge Deletion from Trained Models through Layer-wise Partial Machine Unlearning",
        "authors": "Vinay Chakravarthi Gogineni and Esmaeil S. Nadimi",
        "arxiv": "2403.07611",
        "year": 2024,
        "venue": "arXiv",
        "description": "Partial amnesiac unlearning: the parameter updates of every training batch are pruned "
        "layer-wise and stored; unlearning subtracts the stored updates of the batches that contained forget "
        "examples. Approximate; reconstructed from the paper's abstract.",
    },
    "partial_label_flip": {
        "title": "Efficient Knowledge Deletion from Trained Models through Layer-wise Partial Machine Unlearning",
        "authors": "Vinay Chakravarthi Gogineni and Esmaeil S. Nadimi",
        "arxiv": "2403.07611",
        "year": 2024,
        "venue": "arXiv",
        "description": "Label-flipping unlearning with layer-wise partial updates: training on the forget set with "
        "wrong targets, updating only the largest-gradient fraction of each tensor. Approximate; reconstructed from "
        "the paper's abstract.",
    },
    "partial_grad_ascent": {
        "title": "Efficient Knowledge Deletion from Trained Models through Layer-wise Partial Machine Unlearning",
        "authors": "Vinay Chakravarthi Gogineni and Esmaeil S. Nadimi",
        "arxiv": "2403.07611",
        "year": 2024,
        "venue": "arXiv",
        "description": "Optimization-based unlearning with layer-wise partial updates: gradient ascent on the forget "
        "set, updating only the largest-gradient fraction of each tensor. Approximate; reconstructed from the paper's "
        "abstract.",
    },
    "rum": {
        "title": "Scalability of memorization-based machine unlearning",
        "authors": "Kairan Zhao and Peter Triantafillou",
        "arxiv": "2410.16516",
        "year": 2024,
        "venue": "arXiv",
        "description": "RUM (refine, then meta-unlearn) with memorization proxies: forget examples are scored by how "
        "memorized they are (cheap proxies recorded during training), split into groups, and unlearned group by "
        "group, each with its own algorithm and hyper-parameters. Approximate.",
    },
    "npo": {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "authors": "Ruiqi Zhang and Licong Lin and Yu Bai and Song Mei",
        "arxiv": "2404.05868",
        "year": 2024,
        "venue": "COLM 2024",
        "description": "Negative Preference Optimization: a bounded, preference-style loss that lowers the likelihood "
        "of the forget set relative to the original model. Approximate baseline.",
    },
    "grad_ascent": {
        "title": "Knowledge Unlearning for Mitigating Privacy Risks in Language Models",
        "authors": "Joel Jang and Dongkeun Yoon and Sohee Yang and Sungmin Cha and Moontae Lee and Lajanugen "
        "Logeswaran and Minjoon Seo",
        "arxiv": "2210.01504",
        "year": 2022,
        "venue": "ACL 2023",
        "description": "Gradient ascent on the forget set (the language-modelling loss is maximised). Approximate "
        "baseline.",
    },
    "grad_diff": {
        "title": "TOFU: A Task of Fictitious Unlearning for LLMs",
        "authors": "Pratyush Maini and Zhili Feng and Avi Schwarzschild and Zachary C. Lipton and J. Zico Kolter",
        "arxiv": "2401.06121",
        "year": 2024,
        "venue": "COLM 2024",
        "description": "Gradient difference: gradient ascent on the forget set plus gradient descent on the retain "
        "set (as in the TOFU baselines; after Liu et al., Continual Learning and Private Unlearning). Approximate "
        "baseline.",
    },
    "simnpo": {
        "title": "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
        "authors": "Chongyu Fan and Jiancheng Liu and Licong Lin and Jinghan Jia and Ruiqi Zhang and Song Mei and "
        "Sijia Liu",
        "arxiv": "2410.07163",
        "year": 2024,
        "venue": "arXiv",
        "description": "SimNPO: a reference-free, length-normalised version of Negative Preference Optimization "
        "with a reward margin, plus a retain-set NLL term. Approximate baseline.",
    },
    "idk_dpo": {
        "title": "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        "authors": "Rafael Rafailov and Archit Sharma and Eric Mitchell and Stefano Ermon and Christopher D. Manning "
        "and Chelsea Finn",
        "arxiv": "2305.18290",
        "year": 2023,
        "venue": "NeurIPS 2023",
        "description": "IdkDPO: Direct Preference Optimization with a refusal (an 'I don't know' answer) as the "
        "preferred answer and the forget answer as the rejected one, plus a retain-set NLL term (the TOFU / "
        "OpenUnlearning DPO baseline). Approximate baseline.",
    },
    "rmu": {
        "title": "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
        "authors": "Nathaniel Li and Alexander Pan and Anjali Gopal and Summer Yue and Daniel Berrios and others",
        "arxiv": "2403.03218",
        "year": 2024,
        "venue": "ICML 2024",
        "description": "RMU (Representation Misdirection for Unlearning): the MLPs of a few middle blocks are "
        "trained so that the activations of one block on the forget set point toward a scaled random vector, while "
        "on the retain set they stay close to the original model's. Approximate baseline.",
    },
    "undial": {
        "title": "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
        "authors": "Yijiang River Dong and Hongzhou Lin and Mikhail Belkin and Ramon Huerta and Ivan Vulic",
        "arxiv": "2402.10052",
        "year": 2024,
        "venue": "NAACL 2025",
        "description": "UNDIAL: self-distillation on the forget set toward the original model's next-token "
        "distribution with the memorised token's logit lowered by a fixed amount; a minimisation with a fixed "
        "target, so training stays stable. Approximate baseline.",
    },
    "wga": {
        "title": "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
        "authors": "Qizhou Wang and Jin Peng Zhou and Zhanke Zhou and Saebyeol Shin and Bo Han and Kilian Q. "
        "Weinberger",
        "arxiv": "2502.19301",
        "year": 2025,
        "venue": "ICLR 2025",
        "description": "Weighted gradient ascent: gradient ascent on the forget set with each token weighted by its "
        "current probability to a power beta (no gradient through the weight), which slows the ascent down on "
        "tokens already forgotten; plus a retain-set NLL term. Approximate baseline.",
    },
    "retrain": {
        "title": None,
        "description": "Retraining from scratch on the training data minus the forget set, with the same recipe: the "
        "exact gold standard every other method is compared against.",
    },
}

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
                import hf_unlearn

                out[name] = getattr(hf_unlearn, "__version__", "unknown")
            else:
                out[name] = "not installed"
    return out


def citation(method: str) -> str | None:
    """A BibTeX entry for the method's paper (None for ``retrain`` and unknown methods)."""
    p = PAPERS.get(method)
    if not p or not p.get("title"):
        return None
    first = p["authors"].split(" and ")[0].split()[-1].lower()
    return (
        f"@article{{{first}{p['year']}_{method},\n"
        f"  title   = {{{p['title']}}},\n"
        f"  author  = {{{p['authors']}}},\n"
        f"  journal = {{arXiv preprint arXiv:{p['arxiv']}}},\n"
        f"  year    = {{{p['year']}}},\n"
        f"  note    = {{{p['venue']}}}\n"
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
    exact = False
    paper_attr = None
    try:
        from hf_unlearn.registry import get_method

        spec = get_method(method)
        exact, paper_attr = spec.exact, spec.paper
    except ValueError:
        pass
    info = PAPERS.get(method, {})
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    from hf_unlearn.config import _jsonable

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
    if info.get("title"):
        paper_line = (
            f"{info['title']} ({info['venue']}, [arXiv {info['arxiv']}](https://arxiv.org/abs/{info['arxiv']}))"
        )
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
        method_description=info.get("description") or paper_attr or f"The `{method}` method.",
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
