"""Reports from :func:`hf_unlearn.evaluation.evaluate_unlearning` results: JSON, a markdown table, a PNG scatter.

Example:
    >>> r = {"name": "npo", "forget_quality": 0.2, "model_utility": 0.5, "splits": {}, "mia": {}, "perplexity": {}}
    >>> print(markdown_table([r]).splitlines()[2][:31])
    | npo | 0.2 | 0.5 | n/a | n/a |
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "write_json",
    "load_results",
    "markdown_table",
    "muse_table",
    "markdown_report",
    "plot_tradeoff",
    "write_report",
]

# (header, path into the result) for the markdown table. Directions (docs/metrics.md): "higher" / "lower" = better
# after unlearning; "gold" = the ideal is the gold retain model's value, not a fixed number.
COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("forget quality (higher)", ("forget_quality",)),
    ("model utility (higher)", ("model_utility",)),
    ("forget prob (lower, ideal gold)", ("splits", "forget", "aggregate", "probability")),
    ("forget ROUGE-L (lower, ideal gold)", ("splits", "forget", "aggregate", "rougeL_recall")),
    ("forget truth ratio (ideal gold)", ("splits", "forget", "aggregate", "truth_ratio")),
    ("forget EM (lower, ideal gold)", ("splits", "forget", "aggregate", "exact_memorization")),
    ("forget ES (lower, ideal gold)", ("splits", "forget", "aggregate", "extraction_strength")),
    ("retain prob (higher)", ("splits", "retain", "aggregate", "probability")),
    ("retain ROUGE-L (higher)", ("splits", "retain", "aggregate", "rougeL_recall")),
    ("MIA AUC Min-K (ideal gold)", ("mia", "min_k", "auc")),
    ("privleak Min-K (ideal 0)", ("mia", "min_k", "privleak")),
    ("ppl retain", ("perplexity", "retain")),
    ("ppl holdout", ("perplexity", "holdout")),
    ("eval s", ("cost", "wall_seconds")),
    ("definitions", ("meta", "definitions")),
]

# the MUSE report (hf_unlearn.evaluation.muse.evaluate_muse results), MUSE's four columns
MUSE_COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("VerbMem forget (lower, ideal gold)", ("verbmem_f",)),
    ("KnowMem forget (lower, ideal gold)", ("knowmem_f",)),
    ("KnowMem retain (higher)", ("knowmem_r",)),
    ("PrivLeak Min-K (ideal 0)", ("privleak",)),
    ("MIA AUC Min-K (ideal gold)", ("mia", "min_k", "auc")),
    ("definitions", ("meta", "definitions")),
]


def _get(result: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    obj: Any = result
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4g}"
    return str(value)


def _named(results: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping]]:
    if isinstance(results, Mapping):
        return [(str(k), v) for k, v in results.items()]
    return [(str(r.get("name") or f"model {i}"), r) for i, r in enumerate(results)]


def write_json(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write one result as indented JSON (parent folders created). Returns the path.

    Example:
        >>> import tempfile
        >>> p = write_json({"a": 1}, Path(tempfile.mkdtemp()) / "r.json")
        >>> json.loads(p.read_text())
        {'a': 1}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def load_results(paths: Sequence[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """Load result JSONs into ``{name: result}`` (the result's ``name``, else the file stem)."""
    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        res = json.loads(Path(p).read_text())
        out[str(res.get("name") or Path(p).stem)] = res
    return out


def markdown_table(
    results: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, tuple[str, ...]]] = COLUMNS,
) -> str:
    """A markdown table with one row per method / model and the headline metrics as columns.

    Args:
        results: ``{name: result}`` or a list of results (named by their ``name`` field).
        columns: ``(header, path into the result)`` pairs (default: the TOFU columns).
    """
    header = "| method | " + " | ".join(h for h, _ in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    rows = [f"| {name} | " + " | ".join(_fmt(_get(r, p)) for _, p in columns) + " |" for name, r in _named(results)]
    return "\n".join([header, rule, *rows]) + "\n"


def muse_table(results: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> str:
    """The MUSE-style table (VerbMem, KnowMem forget / retain, PrivLeak) of ``evaluate_muse`` results.

    Example:
        >>> r = {"name": "npo", "verbmem_f": 12.5, "knowmem_f": 30.0, "knowmem_r": 41.0, "privleak": -5.0}
        >>> muse_table([r]).splitlines()[2][:36]
        '| npo | 12.5 | 30 | 41 | -5 | n/a | '
    """
    return markdown_table(results, MUSE_COLUMNS)


def markdown_report(results: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> str:
    """The headline table (:func:`markdown_table`) followed by a table of MIA AUC / privleak for every attack.

    Example:
        >>> r = {"name": "ga", "mia": {"loss": {"auc": 0.75, "privleak": -50.0}}}
        >>> markdown_report([r]).splitlines()[-1]
        '| ga | 0.75 / -50 |'
    """
    named = _named(results)
    attacks: list[str] = []
    for _, r in named:
        attacks += [a for a in (r.get("mia") or {}) if a not in attacks]
    lines = [markdown_table(dict(named))]
    if attacks:
        lines.append(
            "MIA AUC / privleak (forget vs holdout; privleak 0 is ideal; the ideal AUC is the gold retain model's)\n"
        )
        lines.append("| method | " + " | ".join(attacks) + " |")
        lines.append("|---|" + "---|" * len(attacks))
        for name, r in named:
            cells = []
            for a in attacks:
                e = (r.get("mia") or {}).get(a) or {}
                cells.append(f"{_fmt(e.get('auc'))} / {_fmt(e.get('privleak'))}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_tradeoff(
    results: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "Forget quality vs model utility",
) -> Path:
    """PNG scatter: model utility (x) vs forget quality (y, log scale), one labelled point per method.

    Results without a forget quality (e.g. the gold model evaluated without a reference) are skipped; a result
    with forget quality 0 is drawn at the bottom of the axis.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = [
        (name, r.get("model_utility"), r.get("forget_quality"))
        for name, r in _named(results)
        if r.get("forget_quality") is not None and r.get("model_utility") is not None
    ]
    floor = min([fq for _, _, fq in points if fq > 0] + [1e-3]) / 10
    for name, mu, fq in points:
        y = max(fq, floor)
        ax.scatter([mu], [y], s=40)
        ax.annotate(name, (mu, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("model utility (higher is better)")
    ax.set_ylabel("forget quality (KS p-value, higher is better)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no result with a forget quality", ha="center", va="center", transform=ax.transAxes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def write_report(
    results: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    stem: str = "report",
) -> dict[str, Any]:
    """Write one JSON per result, ``<stem>.md`` (the table) and ``<stem>.png`` (the scatter) into ``out_dir``.

    Returns:
        ``{"json": [paths], "markdown": path, "png": path}``.

    Example:
        >>> import tempfile
        >>> r = {"name": "ga", "forget_quality": 0.01, "model_utility": 0.4}
        >>> paths = write_report([r], tempfile.mkdtemp())
        >>> sorted(p.name for p in paths["json"]), paths["png"].stat().st_size > 0
        (['ga.json'], True)
    """
    out = Path(out_dir)
    named = _named(results)
    jsons = [write_json(r, out / f"{_safe(name)}.json") for name, r in named]
    md = out / f"{stem}.md"
    muse = bool(named) and all(r.get("benchmark") == "muse" for _, r in named)
    md.write_text(muse_table(dict(named)) if muse else markdown_table(dict(named)))
    png = plot_tradeoff(dict(named), out / f"{stem}.png")
    return {"json": jsons, "markdown": md, "png": png}
