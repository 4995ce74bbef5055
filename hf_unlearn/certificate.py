"""Deletion certificates: what was forgotten (as hashes), how, and the evidence, as JSON and markdown.

A certificate is built from a :class:`hf_unlearn.ledger.Ledger` record. It lists the uid hashes (never the uids or
any example text), the method and whether its guarantee is exact or approximate, the weight hashes before and
after, the evaluation evidence (numbers only), library versions and timestamps, plus a sha256 digest of its own
canonical JSON so later edits are detectable.

Example:
    >>> import tempfile, os
    >>> from hf_unlearn.ledger import Ledger
    >>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.db"))
    >>> rid = led.submit(["u7"], method="retrain")
    >>> led.mark_applied(rid, {"retrained_on": 99}, "a" * 64, "b" * 64)  # exact: no evidence needed
    >>> cert = make_certificate(led, rid, versions={"hf_unlearn": "0.1.0"})
    >>> cert["guarantee"], cert["forget_set"]["n_uids"]
    ('exact', 1)
    >>> verify_certificate(cert)
    True
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from hf_unlearn.model_card import TEMPLATE_DIR, _fmt, _label, library_versions, summarize_evaluation
from hf_unlearn.utils.serialization import numbers_only as _numbers_only

CERTIFICATE_VERSION = 1
CERTIFICATE_TEMPLATE = TEMPLATE_DIR / "certificate.md"

_EXPLAIN = {
    "exact": "the model is the one training without the forgotten examples would give (up to the recipe's own "
    "randomness); nothing learned from them remains.",
    "approximate": "the forgotten examples' influence was reduced by a post-hoc method; the evidence below measures "
    "how close the model is to one retrained without them.",
}


class CertificateError(ValueError):
    """The request cannot be certified (not applied, or an approximate method without verification evidence)."""


def _check_certifiable(rec: dict[str, Any], exact: bool) -> None:
    rid, status = rec["request_id"], rec["status"]
    if status in ("received", "applying", "failed"):
        what = {
            "received": "it was never applied",
            "applying": "its model save did not complete (run `hf-unlearn ledger recover`)",
            "failed": f"applying it failed ({(rec.get('error') or '')[:200]})",
        }[status]
        raise CertificateError(
            f"no certificate for request {rid!r}: its status is {status!r} ({what}). Certificates are issued only "
            "for applied requests (and, for approximate methods, verified ones)."
        )
    if status == "applied" and not exact:
        raise CertificateError(
            f"no certificate for request {rid!r}: its status is 'applied' but method {rec['method']!r} is "
            "approximate, so the certificate needs verification evidence first: `hf-unlearn ledger verify "
            f"{rid} --evidence EVAL.json`."
        )


_S3T_EXPLAIN = (
    "exact: every LoRA adapter whose training data held a forgotten example was dropped (adapters_removed); "
    "each shard now serves only adapters trained without them (served: its adapter chain, served_prefix_lengths: "
    "how many stages); the base weights are frozen and were never trained on any example. No trace of the "
    "forgotten examples remains in what is served. Utility may be lower until `retrain` rebuilds the cut stages."
)


def _method_info(method: str) -> tuple[bool, str | None]:
    try:
        from hf_unlearn.registry import get_method

        spec = get_method(method)
        return spec.exact, spec.paper
    except ValueError:  # not registered (a method of another installation): no claim
        return False, None


def _digest(cert: dict[str, Any]) -> str:
    body = {k: v for k, v in cert.items() if k != "certificate_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_certificate(
    ledger: Any,
    request_id: str,
    evaluation: dict[str, Any] | None = None,
    *,
    gold_evaluation: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    issued_at: str | None = None,
) -> dict[str, Any]:
    """The deletion certificate of one ledger request, as a JSON-able dict.

    Args:
        ledger: a :class:`hf_unlearn.ledger.Ledger`.
        request_id: the request.
        evaluation: evidence for the unlearned model: an ``evaluate_unlearning`` report or a dict of metrics
            (default: the evidence recorded with ``Ledger.mark_verified``). Only numbers are kept.
        gold_evaluation: the same for the gold (retrained) model, for comparison.
        versions: library versions (default: the installed ones).
        issued_at: ISO timestamp (default: now, UTC).

    Raises:
        KeyError: unknown request id. CertificateError (a ValueError): the request is not applied (its status is
        named), or it used an approximate method and has no verification evidence yet.

    Example:
        >>> import tempfile, os
        >>> from hf_unlearn.ledger import Ledger
        >>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.db"))
        >>> rid = led.submit(["u1", "u2"], method="npo")
        >>> led.mark_applied(rid, {"steps": 3}, "a" * 64, "b" * 64)
        >>> led.mark_verified(rid, {"forget_quality": 0.8})
        >>> make_certificate(led, rid)["guarantee"]
        'approximate'
    """
    rec = ledger.get(request_id)
    exact, paper = _method_info(rec["method"])
    _check_certifiable(rec, exact)
    recorded = rec.get("evidence") or {}
    ev = evaluation if evaluation is not None else recorded.get("evaluation", recorded)
    gold = gold_evaluation if gold_evaluation is not None else recorded.get("gold")
    evidence = {"unlearned": summarize_evaluation(ev)}
    if gold:
        evidence["gold"] = summarize_evaluation(gold)
    guarantee = "exact" if exact else "approximate"
    cert = {
        "certificate_version": CERTIFICATE_VERSION,
        "request": {
            k: rec.get(k)
            for k in (
                "request_id",
                "status",
                "requester",
                "reason",
                "created_at",
                "applied_at",
                "verified_at",
                "error",
            )
        },
        "method": {"name": rec["method"], "exact": exact, "paper": paper},
        "guarantee": guarantee,
        "guarantee_explanation": _S3T_EXPLAIN if rec["method"] == "s3t" else _EXPLAIN[guarantee],
        "forget_set": {
            "n_uids": rec["n_uids"],
            "uids_digest": rec["uids_digest"],
            "uid_hash_algorithm": "sha256(utf-8 uid)",
            "uid_hashes": list(rec["uid_hashes"]),
        },
        "weights": {
            "hash_algorithm": "sha256 over sorted parameter names, dtypes, shapes and bytes",
            "hash_before": rec.get("hash_before"),
            "hash_after": rec.get("hash_after"),
            "changed": bool(
                rec.get("hash_before") and rec.get("hash_after") and rec["hash_before"] != rec["hash_after"]
            ),
        },
        "changes": _numbers_only(rec.get("changes") or {}),
        "followups": [
            {k: f.get(k) for k in ("kind", "status", "started_at", "finished_at", "hash_before", "hash_after")}
            | {"details": _numbers_only(f.get("details") or {})}
            for f in (ledger.followups(request_id) if hasattr(ledger, "followups") else [])
        ],
        "evidence": evidence,
        "versions": versions if versions is not None else library_versions(),
        "issued_at": issued_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    cert["certificate_sha256"] = _digest(cert)
    return cert


def verify_certificate(cert: dict[str, Any]) -> bool:
    """Whether a certificate's content still matches its ``certificate_sha256`` digest."""
    return cert.get("certificate_sha256") == _digest(cert)


def certificate_markdown(cert: dict[str, Any]) -> str:
    """Render a certificate dict (from :func:`make_certificate`) as markdown.

    Example:
        >>> import tempfile, os
        >>> from hf_unlearn.ledger import Ledger
        >>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.db"))
        >>> rid = led.submit(["u1"], method="retrain")
        >>> led.mark_applied(rid, {"retrained_on": 9}, "a" * 64, "b" * 64)
        >>> certificate_markdown(make_certificate(led, rid)).splitlines()[0].startswith("# Deletion certificate")
        True
    """
    import jinja2

    rows = []
    for who, metrics in cert.get("evidence", {}).items():
        for k, v in metrics.items():
            rows.append((f"{who}: {_label(k)}", _fmt(v)))
    template = jinja2.Template(CERTIFICATE_TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        c=_Attr(copy.deepcopy(cert)),
        changes_json=json.dumps(cert.get("changes") or {}, indent=2, sort_keys=True),
        evidence_rows=rows,
        versions=sorted(cert.get("versions", {}).items()),
    )


class _Attr(dict):
    """Dict with attribute access for the template (``c.request.status``)."""

    def __getattr__(self, name: str) -> Any:
        v = self.get(name)
        return _Attr(v) if isinstance(v, dict) else v


def write_certificate(
    ledger: Any, request_id: str, out_dir: str | Path, evaluation: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, Path]:
    """Write ``certificate-<id>.json`` and ``certificate-<id>.md`` into ``out_dir``; returns their paths."""
    cert = make_certificate(ledger, request_id, evaluation, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"certificate-{request_id}.json", "markdown": out / f"certificate-{request_id}.md"}
    paths["json"].write_text(json.dumps(cert, indent=2, sort_keys=True) + "\n")
    paths["markdown"].write_text(certificate_markdown(cert))
    return paths
