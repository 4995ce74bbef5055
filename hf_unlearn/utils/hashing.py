"""Stable hashes of model weights and of uid sets (for ledgers, certificates and model cards).

Example:
    >>> import torch
    >>> from hf_unlearn.utils.hashing import weights_hash, uid_hash, uids_digest
    >>> a, b = torch.ones(1), torch.zeros(2)
    >>> weights_hash({"b": b, "a": a}) == weights_hash({"a": a, "b": b})
    True
    >>> uids_digest(["b", "a"]) == uids_digest(["a", "b"])
    True
    >>> len(uid_hash("u001"))
    64
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch


def _state_dict(model_or_state_dict: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(model_or_state_dict, Mapping):
        return model_or_state_dict
    if hasattr(model_or_state_dict, "state_dict"):
        return model_or_state_dict.state_dict()
    raise TypeError(
        f"weights_hash takes a torch module or a state dict (name -> tensor), got {type(model_or_state_dict).__name__}"
    )


def weights_hash(model_or_state_dict: Any) -> str:
    """sha256 (hex) over the sorted parameter names, each tensor's dtype and shape, and its raw bytes.

    Two models hash equal exactly when every named tensor is bit-identical. Tied tensors appear under each of
    their names (as in ``state_dict()``), so the hash depends only on the names and values, not on storage.

    Args:
        model_or_state_dict: a ``torch.nn.Module`` (its ``state_dict()``; a PeftModel includes base and adapters)
            or a mapping of name -> tensor (e.g. ``safetensors.torch.load_file(...)``).

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> weights_hash(m) == weights_hash(m.state_dict())
        True
    """
    sd = _state_dict(model_or_state_dict)
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode("utf-8"))
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        # view as bytes: works for every dtype (bf16 has no numpy equivalent)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def folder_weights_hash(folder: Any) -> str:
    """:func:`weights_hash` of the safetensors weights saved in a folder (all ``*.safetensors`` files merged).

    Use it to check which model version a folder holds without loading the model class.

    Raises:
        FileNotFoundError: when the folder holds no ``.safetensors`` file.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    merged: dict[str, torch.Tensor] = {}
    for f in files:
        merged.update(load_file(str(f)))
    return weights_hash(merged)


def uid_hash(uid: str) -> str:
    """sha256 hex of one uid (the uid's UTF-8 bytes)."""
    return hashlib.sha256(str(uid).encode("utf-8")).hexdigest()


def uids_digest(uids: Iterable[str]) -> str:
    """sha256 hex of the sorted, de-duplicated uids joined by newlines: a name for a forget set."""
    return hashlib.sha256("\n".join(sorted({str(u) for u in uids})).encode("utf-8")).hexdigest()


def base_fingerprint(model: Any) -> str:
    """Fingerprint of a model's base weights: :func:`weights_hash` of its state dict without LoRA tensors (peft's
    ``.base_layer.`` names mapped back to the plain ones) and without tied copies (a tensor sharing another's
    storage, e.g. GPT-2's ``lm_head.weight``). Equal for a plain model and for the same model wrapped by peft.

    Args:
        model: a plain transformers model, or the base model under a peft wrapper (``get_base_model()``).

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> base_fingerprint(lin) == weights_hash(lin.state_dict())
        True
    """
    sd = model.state_dict()
    clean = {k.replace(".base_layer.", "."): v for k, v in sd.items() if "lora_" not in k}
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    drop = {k for k, src in (tied.items() if isinstance(tied, dict) else []) if k in clean and src in clean
            and clean[k].data_ptr() == clean[src].data_ptr()}  # fmt: skip
    return weights_hash({k: v for k, v in clean.items() if k not in drop})
