"""Save unlearned models as standard folders (loadable without hf_unlearn) and push them to the Hugging Face Hub.

:func:`save_unlearned` writes, atomically:

- the model: a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) when the result is a
  PeftModel (or a served S3T shard), else a full ``save_pretrained`` folder (``config.json`` + safetensors);
- the tokenizer, when known;
- ``README.md``: the model card (:mod:`hf_unlearn.model_card`);
- ``hf_unlearn.json``: method, config, forget-set size and the sha256 of its sorted uids, metrics (numbers only),
  weight hashes and library versions. Never example text.

:func:`push_to_hub` uploads such a folder with ``huggingface_hub`` (``create_repo`` + ``upload_folder``).

Example:
    >>> import tempfile, hf_unlearn
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1? Answer: A1."] * 4, num_layers=1, vocab_size=300)
    >>> res = hf_unlearn.unlearn(model, ["u0"], method="grad_ascent", tokenizer=tok, train_dataset=data, num_epochs=1)
    >>> out = save_unlearned(res, tempfile.mkdtemp() + "/unlearned")
    >>> {"README.md", "config.json", "model.safetensors", "hf_unlearn.json"} <= {p.name for p in out.iterdir()}
    True
    >>> push_to_hub(out, "me/unlearned", dry_run=True, quiet=True) == sorted(p.name for p in out.iterdir())
    True
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hf_unlearn.utils.atomic import atomic_folder
from hf_unlearn.utils.hashing import folder_weights_hash, uids_digest, weights_hash

META_FILE = "hf_unlearn.json"
META_VERSION = 1


class HubUnavailableError(ConnectionError):
    """The Hugging Face Hub cannot be reached (offline mode or no network): nothing was uploaded."""


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _is_s3t(model: Any) -> bool:
    return type(model).__name__ == "S3TModel" and hasattr(model, "export_active_adapter")


def _write_model(model: Any, folder: Path, merge: bool, shard: int | None) -> tuple[str, str | None]:
    """Write the model's weights into ``folder``; returns ``(save_format, in-memory weights hash or None)``."""
    if _is_s3t(model):
        model.export_active_adapter(folder, shard=shard)
        return "peft_adapter", None
    if _is_peft(model):
        if merge:
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(folder)
            return "full", weights_hash(merged)
        model.save_pretrained(folder)
        return "peft_adapter", weights_hash(model)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
        return "full", weights_hash(model)
    raise TypeError(f"cannot save a {type(model).__name__}: expected a transformers model, a PeftModel or an S3TModel")


def unlearned_metadata(result: Any, save_format: str, **extra: Any) -> dict[str, Any]:
    """The ``hf_unlearn.json`` content of a result (JSON-able, numbers and ids only)."""
    from hf_unlearn.certificate import _numbers_only
    from hf_unlearn.config import _jsonable
    from hf_unlearn.model_card import library_versions, summarize_evaluation

    metrics = dict(result.metrics or {})
    gold = metrics.pop("gold", None)
    try:
        from hf_unlearn.registry import get_method

        exact = get_method(result.method).exact
    except ValueError:
        exact = False
    cfg = result.config.to_dict() if hasattr(result.config, "to_dict") else _jsonable(result.config)
    return {
        "format_version": META_VERSION,
        "method": result.method,
        "exact": exact,
        "config": cfg,
        "save_format": save_format,
        "base_model": result.base_model_name,
        "forget_set": {"size": len(result.forget_uids), "uids_sha256": uids_digest(result.forget_uids)},
        "metrics": summarize_evaluation(metrics),
        "gold_metrics": summarize_evaluation(gold),
        "timings": _jsonable(result.timings),
        "details": _numbers_only(_jsonable(result.details or {})),
        "versions": library_versions(),
        **extra,
    }


def warn_if_local_tokenizer(tokenizer: Any, where: str | os.PathLike) -> bool:
    """Log a warning when ``tokenizer`` was trained by hf_unlearn on local text (its vocabulary may hold words of a
    forget set it saw: unlearning changes the model, not the tokenizer). Returns whether it warned.

    Example:
        >>> warn_if_local_tokenizer(object(), "out")
        False
    """
    from hf_unlearn.models import LOCAL_TOKENIZER_MARK

    if not (getattr(tokenizer, "init_kwargs", None) or {}).get(LOCAL_TOKENIZER_MARK):
        return False
    logging.getLogger("hf_unlearn").warning(
        "saving a tokenizer that hf_unlearn trained on local text to %s: if that text included the forget set, its "
        "vocabulary still holds forget-set words (unlearning changes the model, not the tokenizer). Train the "
        "tokenizer on text without any data that may be forgotten, or ship the base model's tokenizer; see "
        "docs/privacy.md",
        where,
    )
    return True


def save_unlearned(
    result: Any,
    save_directory: str | os.PathLike,
    card: bool = True,
    *,
    tokenizer: Any = None,
    merge: bool = False,
    shard: int | None = None,
    metrics: dict[str, Any] | None = None,
    gold_metrics: dict[str, Any] | None = None,
    repo_id: str | None = None,
    card_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Save an :class:`~hf_unlearn.UnlearnResult` as a standard folder, atomically (old or new, never a mix).

    Args:
        result: what :func:`hf_unlearn.unlearn` returned.
        save_directory: the folder to (re)write.
        card: write ``README.md`` (the model card).
        tokenizer: the tokenizer to save (default ``result.tokenizer``).
        merge: for a PeftModel, merge the adapter and save a full model instead of the adapter.
        shard: for an S3T ensemble with several live shards, which shard's served adapter to export.
        metrics, gold_metrics: evaluation of this model / of the gold model for the card (default: from
            ``result.metrics``).
        repo_id: the Hub repo the card's loading snippet should name.
        card_kwargs: more :func:`hf_unlearn.model_card.render_model_card` arguments (``date``, ``versions``...).

    Returns:
        The folder path. ``transformers.AutoModelForCausalLM.from_pretrained`` (full) or
        ``peft.PeftModel.from_pretrained(base, folder)`` (adapter) loads it without hf_unlearn.
    """
    from hf_unlearn.model_card import model_card_from_result

    target = Path(save_directory)
    tok = tokenizer if tokenizer is not None else getattr(result, "tokenizer", None)
    with atomic_folder(target) as tmp:
        save_format, model_hash = _write_model(result.model, tmp, merge, shard)
        if tok is not None:
            tok.save_pretrained(tmp)
            warn_if_local_tokenizer(tok, target)
        meta = unlearned_metadata(
            result, save_format, model_sha256=model_hash, weights_sha256=folder_weights_hash(tmp)
        )
        if metrics is not None:
            from hf_unlearn.model_card import summarize_evaluation

            meta["metrics"] = summarize_evaluation(metrics)
        if gold_metrics is not None:
            from hf_unlearn.model_card import summarize_evaluation

            meta["gold_metrics"] = summarize_evaluation(gold_metrics)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if card:
            model_card = model_card_from_result(
                result,
                metrics=metrics,
                gold_metrics=gold_metrics,
                save_format=save_format,
                repo_id=repo_id,
                **(card_kwargs or {}),
            )
            model_card.save(str(tmp / "README.md"))
    return target


def saved_model_hash(folder: str | os.PathLike) -> str:
    """The hash identifying the model a folder holds: the in-memory weights hash recorded in ``hf_unlearn.json``
    (comparable with :func:`~hf_unlearn.utils.hashing.weights_hash` of the live model), else the hash of the
    folder's safetensors."""
    meta = Path(folder) / META_FILE
    if meta.exists():
        recorded = json.loads(meta.read_text()).get("model_sha256")
        if recorded:
            return recorded
    return folder_weights_hash(folder)


def upload_file_list(folder: str | os.PathLike) -> list[str]:
    """The files ``huggingface_hub.upload_folder`` would upload from ``folder`` (relative POSIX paths, sorted)."""
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    from huggingface_hub.utils import filter_repo_objects

    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    rel = sorted(p.relative_to(root).as_posix() for p in root.glob("**/*") if p.is_file())
    return list(filter_repo_objects(rel, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS)))


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import is_offline_mode

        return bool(is_offline_mode())
    except ImportError:  # pragma: no cover
        return False


def check_hub_reachable(endpoint: str | None = None, timeout: float = 5.0) -> None:
    """Raise :class:`HubUnavailableError` at once when offline mode is on or the Hub's host does not answer.

    Avoids huggingface_hub's retries (tens of seconds) before failing without network.
    """
    if _offline():
        raise HubUnavailableError(
            "HF_HUB_OFFLINE is set: cannot push to the Hugging Face Hub. Unset it (and check the network), or use "
            "dry_run=True to list the files that would be uploaded. Nothing was uploaded; local files are untouched."
        )
    from huggingface_hub import constants

    url = urlparse(endpoint or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise HubUnavailableError(
            f"cannot reach the Hugging Face Hub at {host}:{port} ({err}). Nothing was uploaded; local files are "
            "untouched. Retry with network access, or use dry_run=True to list the files."
        ) from err


def push_to_hub(
    result_or_dir: Any,
    repo_id: str,
    private: bool = True,
    dry_run: bool = False,
    token: str | None = None,
    *,
    commit_message: str | None = None,
    quiet: bool = False,
    **save_kwargs: Any,
) -> list[str] | str:
    """Upload an unlearned model to the Hub (``create_repo`` + ``upload_folder``).

    Args:
        result_or_dir: an :class:`~hf_unlearn.UnlearnResult` (saved with :func:`save_unlearned` into a temporary
            folder first) or a folder written by :func:`save_unlearned`.
        repo_id: ``"user/name"``.
        private: create the repo private (default).
        dry_run: upload nothing; print and return the list of files that would be uploaded.
        token: a Hub token (default: the logged-in one).
        commit_message: the commit message.
        quiet: do not print the dry-run list.
        **save_kwargs: :func:`save_unlearned` options when a result is given.

    Returns:
        The file list (dry run) or the URL of the commit.

    Raises:
        HubUnavailableError: offline mode or no network (fails fast; nothing is changed locally).
        FileNotFoundError: the folder does not exist.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}")
    scratch = None
    if isinstance(result_or_dir, (str, os.PathLike)):
        folder = Path(result_or_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"no such folder to push: {folder}")
    else:
        scratch = tempfile.TemporaryDirectory(prefix="hf_unlearn_push_")
        folder = save_unlearned(result_or_dir, Path(scratch.name) / "model", repo_id=repo_id, **save_kwargs)
    try:
        files = upload_file_list(folder)
        if dry_run:
            if not quiet:
                print(f"dry run: would upload {len(files)} file(s) from {folder} to {repo_id} (private={private}):")
                for f in files:
                    print(f"  {f}")
            return files
        check_hub_reachable()
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message or "Upload unlearned model (hf_unlearn)",
            repo_type="model",
        )
        return str(getattr(info, "commit_url", info))
    finally:
        if scratch is not None:
            scratch.cleanup()
