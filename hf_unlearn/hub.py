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
import re
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hf_unlearn.utils.atomic import atomic_folder, atomic_write_text
from hf_unlearn.utils.hashing import folder_weights_hash, uids_digest, weights_hash

META_FILE = "hf_unlearn.json"
META_VERSION = 1
S3T_INVENTORY = "s3t_inventory.json"  # hf_unlearn.methods.s3t.model.INVENTORY (not imported: keeps this module light)
S3T_ADAPTERS = "adapters"
S3T_BASE_FILE = "hf_unlearn_s3t_base.json"  # fingerprint of the base an S3T folder was trained on (ledger sidecar)


class HubUnavailableError(ConnectionError):
    """The Hugging Face Hub cannot be reached (offline mode or no network): nothing was uploaded."""


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _is_s3t(model: Any) -> bool:
    """A model that serves LoRA adapters over a base and exports the served one (an S3T ensemble): it declares
    ``export_active_adapter`` and ``peft_model`` (duck typing, so this module needs no method import)."""
    return callable(getattr(model, "export_active_adapter", None)) and hasattr(model, "peft_model")


def model_weights_hash(model: Any) -> str:
    """:func:`~hf_unlearn.utils.hashing.weights_hash` of the tensors ``save_pretrained`` writes.

    Tied weights (GPT-2's or a tied Llama's ``lm_head.weight``, which shares the embedding's storage) are not saved
    by ``save_pretrained``, so they are left out here too: the hash of a live model equals
    :func:`~hf_unlearn.utils.hashing.folder_weights_hash` of its ``save_pretrained`` folder.

    Args:
        model: a transformers model (a PeftModel or a plain ``nn.Module`` / state dict is hashed whole).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> m, _ = tiny_causal_lm("gpt2", texts=["a b c"] * 4, num_layers=1, vocab_size=300)
        >>> model_weights_hash(m) == weights_hash(m)  # lm_head.weight is tied to the embedding: left out
        False
    """
    if _is_peft(model) or not hasattr(model, "state_dict"):
        return weights_hash(model)
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    sd = model.state_dict()
    if isinstance(tied, dict):
        drop = {
            k
            for k, src in tied.items()
            if k in sd and src in sd and sd[k].data_ptr() == sd[src].data_ptr() and sd[k].shape == sd[src].shape
        }
    else:  # older transformers: a list of names; drop those sharing storage with another tensor
        ptrs: dict[int, int] = {}
        for v in sd.values():
            ptrs[v.data_ptr()] = ptrs.get(v.data_ptr(), 0) + 1
        drop = {k for k in tied if k in sd and ptrs.get(sd[k].data_ptr(), 0) > 1}
    return weights_hash({k: v for k, v in sd.items() if k not in drop})


def _write_model(model: Any, folder: Path, merge: bool, shard: int | None) -> tuple[str, str | None]:
    """Write the model's weights into ``folder``; returns ``(save_format, in-memory weights hash or None)``."""
    if _is_s3t(model):
        model.export_active_adapter(folder, shard=shard)
        return "peft_adapter", None
    if _is_peft(model):
        if merge:
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(folder)
            return "full", model_weights_hash(merged)
        model.save_pretrained(folder)
        return "peft_adapter", weights_hash(model)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
        return "full", model_weights_hash(model)
    raise TypeError(f"cannot save a {type(model).__name__}: expected a transformers model, a PeftModel or an S3TModel")


def unlearned_metadata(result: Any, save_format: str, **extra: Any) -> dict[str, Any]:
    """The ``hf_unlearn.json`` content of a result (JSON-able, numbers and ids only)."""
    from hf_unlearn.model_card import library_versions, summarize_evaluation
    from hf_unlearn.utils.serialization import jsonable as _jsonable
    from hf_unlearn.utils.serialization import numbers_only as _numbers_only

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
    target = Path(save_directory)
    with atomic_folder(target) as tmp:
        write_unlearned(
            result,
            tmp,
            card,
            tokenizer=tokenizer,
            merge=merge,
            shard=shard,
            metrics=metrics,
            gold_metrics=gold_metrics,
            repo_id=repo_id,
            card_kwargs=card_kwargs,
        )
    return target


def write_unlearned(
    result: Any,
    folder: str | os.PathLike,
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
    """What :func:`save_unlearned` writes, into an existing (temporary) folder, NOT atomically.

    The ledger uses it to write into the temporary folder of an atomic swap, hash what was written, record that
    hash, and only then swap the folder in. Arguments as for :func:`save_unlearned`.
    """
    from hf_unlearn.model_card import model_card_from_result, summarize_evaluation

    tmp = Path(folder)
    tok = tokenizer if tokenizer is not None else getattr(result, "tokenizer", None)
    save_format, model_hash = _write_model(result.model, tmp, merge, shard)
    if tok is not None:
        tok.save_pretrained(tmp)
        warn_if_local_tokenizer(tok, tmp)
    meta = unlearned_metadata(result, save_format, model_sha256=model_hash, weights_sha256=folder_weights_hash(tmp))
    if metrics is not None:
        meta["metrics"] = summarize_evaluation(metrics)
    if gold_metrics is not None:
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
    return tmp


def saved_model_hash(folder: str | os.PathLike) -> str:
    """The hash identifying the model a folder holds.

    - an S3T folder (``s3t_inventory.json``): :func:`s3t_folder_hash`;
    - a folder written by :func:`save_unlearned`: the weights hash recorded in its ``hf_unlearn.json``
      (:func:`model_weights_hash` of the live model: the tensors that were saved);
    - else the hash of the folder's safetensors (equal to :func:`model_weights_hash` of the model that
      ``save_pretrained`` wrote, tied weights included).

    Raises:
        FileNotFoundError: naming the folder, when it does not exist or holds no weights.
        ValueError: naming the file, when ``hf_unlearn.json`` or the S3T inventory is not valid JSON.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    if (folder / S3T_INVENTORY).exists():
        return s3t_folder_hash(folder)
    meta = folder / META_FILE
    if meta.exists():
        try:
            recorded = json.loads(meta.read_text()).get("model_sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            raise ValueError(f"{str(meta)!r} is not valid hf_unlearn metadata JSON ({err})") from err
        if recorded:
            return recorded
    return folder_weights_hash(folder)


# ------------------------------------------------------------------------------------------------ S3T folders
def is_s3t_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` was written by ``S3TModel.save_pretrained`` (it holds ``s3t_inventory.json``)."""
    return (Path(folder) / S3T_INVENTORY).is_file()


def read_s3t_inventory(folder: str | os.PathLike) -> dict[str, Any]:
    """The S3T inventory of a folder, checked: valid JSON with the keys the ledger relies on, every listed adapter
    present with a readable ``adapter_model.safetensors``.

    Raises:
        FileNotFoundError: naming the missing inventory or adapter folder/file.
        ValueError: naming the file that is truncated, not JSON, or lacks a field.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "s3t_inventory.json").write_text('{"adapters": ')
        >>> try:
        ...     read_s3t_inventory(d)
        ... except ValueError as err:
        ...     print("corrupt" in str(err))
        True
    """
    from safetensors import safe_open

    path = Path(folder) / S3T_INVENTORY
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not an S3T folder: {S3T_INVENTORY} is missing")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"S3T inventory {str(path)!r} is corrupt or truncated (not valid JSON: {err})") from err
    missing = [k for k in ("adapters", "shards", "assignment", "deleted", "config") if k not in state]
    if not isinstance(state, dict) or missing:
        raise ValueError(f"S3T inventory {str(path)!r} is corrupt: missing field(s) {missing}")
    for name in sorted(state["adapters"]):
        weights = Path(folder) / S3T_ADAPTERS / name / "adapter_model.safetensors"
        if not (weights.parent / "adapter_config.json").is_file() or not weights.is_file():
            raise FileNotFoundError(
                f"S3T adapter {name!r} listed in {str(path)!r} is missing: {str(weights.parent)!r}"
            )
        try:
            with safe_open(str(weights), framework="pt") as f:
                list(f.keys())
            json.loads((weights.parent / "adapter_config.json").read_text())
        except Exception as err:  # safetensors raises its own error types for truncated headers
            raise ValueError(f"S3T adapter {name!r} is corrupt or truncated: {str(weights.parent)!r} ({err})") from err
    return state


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def s3t_state_hash(adapter_hashes: dict[str, str], deleted: list[str]) -> str:
    """Hash of an S3T model's state: the sha256 of each live adapter file, and the sorted deleted uids' hashes."""
    import hashlib

    from hf_unlearn.utils.hashing import uid_hash

    body = {"adapters": dict(sorted(adapter_hashes.items())), "deleted": sorted(uid_hash(u) for u in deleted)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def s3t_adapter_hashes(folder: str | os.PathLike, names: Any = None) -> dict[str, str]:
    """sha256 of ``adapters/<name>/adapter_model.safetensors`` for each live adapter (default: the inventory's)."""
    folder = Path(folder)
    if names is None:
        names = read_s3t_inventory(folder)["adapters"]
    return {n: _file_sha256(folder / S3T_ADAPTERS / n / "adapter_model.safetensors") for n in sorted(names)}


def s3t_folder_hash(folder: str | os.PathLike) -> str:
    """:func:`s3t_state_hash` of an S3T folder: which adapters it serves (by content) and which uids it deleted.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_s3t_inventory` (corrupt inventory or adapter).
    """
    state = read_s3t_inventory(folder)
    return s3t_state_hash(s3t_adapter_hashes(folder, state["adapters"]), state["deleted"])


def _plain_base(model: Any) -> Any:
    """The transformers model under peft / S3T wrappers."""
    if _is_s3t(model):
        model = model.peft_model
    if _is_peft(model):
        model = model.get_base_model()
    return model


def s3t_base_fingerprint(base_model: Any) -> str:
    """Fingerprint of the base weights an S3T model runs on: :func:`model_weights_hash` of the base without any
    LoRA tensors (names as in the plain model). Equal for a fresh base and for the same base wrapped by peft.

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> m, _ = tiny_causal_lm("llama", texts=["a b c"] * 4, num_layers=1, vocab_size=300)
        >>> len(s3t_base_fingerprint(m))
        64
    """
    from hf_unlearn.utils.hashing import base_fingerprint

    return base_fingerprint(_plain_base(base_model))


def recorded_s3t_base(folder: str | os.PathLike) -> str | None:
    """The base fingerprint recorded for an S3T folder: the inventory's ``base_fingerprint`` (written by
    ``S3TModel.save_pretrained`` when it supports it), else the ledger's sidecar ``hf_unlearn_s3t_base.json``."""
    folder = Path(folder)
    try:
        inv = json.loads((folder / S3T_INVENTORY).read_text())
        if isinstance(inv, dict) and inv.get("base_fingerprint"):
            return str(inv["base_fingerprint"])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        pass
    side = folder / S3T_BASE_FILE
    if side.is_file():
        try:
            return str(json.loads(side.read_text())["base_fingerprint"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{str(side)!r} is corrupt ({err})") from err
    return None


def record_s3t_base(folder: str | os.PathLike, base_model: Any) -> str:
    """Write the sidecar ``hf_unlearn_s3t_base.json`` (base fingerprint) into an S3T folder; returns the fingerprint.

    Call it right after ``S3TModel.save_pretrained`` with the base the model was trained on, so that loading it onto
    another base later is refused by :func:`check_s3t_base`.
    """
    fp = s3t_base_fingerprint(base_model)
    side = Path(folder) / S3T_BASE_FILE
    atomic_write_text(
        side, json.dumps({"base_fingerprint": fp, "algorithm": "hf_unlearn.hub.s3t_base_fingerprint"}) + "\n"
    )
    return fp


def check_s3t_base(folder: str | os.PathLike, base_model: Any) -> str | None:
    """Refuse to load an S3T folder onto a base other than the one it was trained on.

    Returns the recorded fingerprint (``None`` when the folder records none: nothing can be checked).

    Raises:
        ValueError: naming the folder and both fingerprints, when the base differs.

    Example:
        >>> # check_s3t_base("s3t_folder", base_model)  # before S3TModel.from_pretrained("s3t_folder", base_model)
    """
    recorded = recorded_s3t_base(folder)
    if recorded is None:
        return None
    actual = s3t_base_fingerprint(base_model)
    if actual != recorded:
        raise ValueError(
            f"S3T folder {str(folder)!r} was trained on another base model: its recorded base fingerprint is "
            f"{recorded[:16]}..., the base you passed has {actual[:16]}.... Load it onto the base it was trained on."
        )
    return recorded


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


_REPO_ID_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def check_repo_id(repo_id: Any) -> str:
    """Validate a Hub model repo id (``"user/name"`` or ``"name"``) before anything is uploaded.

    Raises:
        ValueError: naming the value and the rule it breaks.

    Example:
        >>> check_repo_id("me/unlearned-model")
        'me/unlearned-model'
    """
    rule = (
        "a repo id is 'user/name' (or 'name'): letters, digits, '-', '_' and '.', at most 96 characters each, "
        "not starting with '-' or '.', without '--' or '..', not ending in '.git'"
    )
    if not isinstance(repo_id, str) or not _REPO_ID_RE.match(repo_id):
        raise ValueError(f"invalid repo id {repo_id!r}: {rule}")
    if "--" in repo_id or ".." in repo_id or repo_id.endswith(".git") or repo_id.endswith("."):
        raise ValueError(f"invalid repo id {repo_id!r}: {rule}")
    return repo_id


def check_model_folder(folder: str | os.PathLike) -> str:
    """What kind of model a folder holds: ``"full"`` (``config.json`` + weights), ``"peft_adapter"`` or ``"s3t"``.

    Raises:
        ValueError: naming the folder and the files it holds, when it is none of these.
    """
    folder = Path(folder)
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    weights = any(n.endswith((".safetensors", ".bin")) or n.endswith(".safetensors.index.json") for n in names)
    if "adapter_config.json" in names and weights:
        return "peft_adapter"
    if "config.json" in names and weights:
        return "full"
    if S3T_INVENTORY in names:
        return "s3t"
    raise ValueError(
        f"{str(folder)!r} is not a model folder: expected config.json with weights (a full model), "
        f"adapter_config.json with adapter weights (a peft adapter) or {S3T_INVENTORY} (S3T); it holds "
        f"{sorted(names)[:12] or 'nothing'}"
    )


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
    check_repo_id(repo_id)
    scratch = None
    if isinstance(result_or_dir, (str, os.PathLike)):
        folder = Path(result_or_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"no such folder to push: {folder}")
        check_model_folder(folder)
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
