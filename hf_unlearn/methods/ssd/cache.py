"""The I_D cache: importance over the full training data, saved beside the model with the weights it belongs to.

One safetensors file per importance setting (target, mode, label-free, batch size, data, tokenization, name
filters), named by a hash of that setting. Its metadata records the sha256 of the model weights the maps were
computed on; a lookup compares it with the current weights and reports ``"hit"``, ``"miss"`` or ``"stale"``.

Beside it, a small lineage file (``ssd_importance_<key>.lineage.json``) lists the weights sha256 of every model
that SSD requests derived from those weights, with the number of requests since the maps were computed: the
``anchored``, ``reuse`` and ``refresh`` cache policies recognise a model dampened by earlier requests by its hash,
and nothing else (a fine-tuned or otherwise edited model is still "stale"). For ``anchored``, one anchor file per
descendant holds the original values of the entries dampened so far (flat indices + values), so the original
weights can be put back for the I_F pass.

Example:
    >>> import tempfile, torch
    >>> m = torch.nn.Linear(2, 2)
    >>> cache = ImportanceCache(tempfile.mkdtemp())
    >>> key = cache_key({"target": "full", "data": "abc"})
    >>> _ = cache.save(key, {"weight": torch.ones(2, 2)}, weights_sha256(m), {"target": "full"})
    >>> maps, status = cache.load(key, weights_sha256(m))
    >>> status, float(maps["weight"].sum())
    ('hit', 4.0)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from hf_unlearn.utils.atomic import atomic_write, atomic_write_text
from hf_unlearn.utils.hashing import weights_hash

CACHE_VERSION = "1"


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of every ``state_dict`` tensor (names, dtypes, shapes, bytes), via ``utils.hashing.weights_hash``.

    Two models hash equal exactly when every named tensor (base and adapter weights of a PeftModel) is bit-identical.
    """
    return weights_hash(model)


def data_fingerprint(uids: Iterable[str], **settings: Any) -> str:
    """sha256 of the ordered uid list and the tokenization settings (the order defines the mini-batches)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for u in uids:
        h.update(str(u).encode() + b"\x00")
    return h.hexdigest()


def cache_key(setting: dict[str, Any]) -> str:
    """Short hash naming the cache file of one importance setting."""
    return hashlib.sha256(json.dumps(setting, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ImportanceCache:
    """A folder of cached importance maps (``ssd_importance_<key>.safetensors``)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()

    def path(self, key: str) -> Path:
        return self.folder / f"ssd_importance_{key}.safetensors"

    def metadata(self, key: str) -> dict[str, str] | None:
        """The stored metadata, or None when there is no entry."""
        from safetensors import safe_open

        p = self.path(key)
        if not p.exists():
            return None
        with safe_open(str(p), framework="pt") as fh:
            return dict(fh.metadata() or {})

    def load(self, key: str, weights_hash: str, device: str | torch.device = "cpu") -> tuple[dict | None, str]:
        """``(maps, status)``: status ``"hit"`` (maps returned), ``"miss"`` (no entry, maps None) or ``"stale"``
        (an entry computed on other weights; its maps are returned so the caller may decide)."""
        from safetensors.torch import load_file

        meta = self.metadata(key)
        if meta is None:
            return None, "miss"
        maps = load_file(str(self.path(key)), device=str(device))
        return maps, ("hit" if meta.get("weights_sha256") == weights_hash else "stale")

    def lineage_path(self, key: str) -> Path:
        return self.folder / f"ssd_importance_{key}.lineage.json"

    def lineage(self, key: str) -> dict[str, int]:
        """``{weights sha256: requests since the maps were computed}`` of the models derived from the entry's
        weights by SSD requests (empty when there is none or the lineage belongs to an older entry)."""
        p, meta = self.lineage_path(key), self.metadata(key)
        if meta is None or not p.exists():
            return {}
        data = json.loads(p.read_text())
        if data.get("root") != meta.get("weights_sha256"):
            return {}
        return {str(k): int(v) for k, v in data.get("descendants", {}).items()}

    def add_descendant(self, key: str, weights_hash: str, depth: int) -> None:
        """Record that a model with ``weights_hash`` was derived by ``depth`` SSD requests from the entry's weights."""
        meta = self.metadata(key)
        if meta is None:
            raise KeyError(f"no cache entry {key!r} in {self.folder}")
        known = self.lineage(key)
        if weights_hash == meta.get("weights_sha256") or known.get(weights_hash, depth + 1) <= depth:
            return  # the entry's own weights (nothing dampened) or already known at this depth or less
        known[weights_hash] = int(depth)
        self._write_json(self.lineage_path(key), {"root": meta["weights_sha256"], "descendants": known})

    def anchor_path(self, key: str, weights_hash: str) -> Path:
        return self.folder / f"ssd_anchor_{key}_{weights_hash[:32]}.safetensors"

    def has_anchor(self, key: str, weights_hash: str) -> bool:
        return self.anchor_path(key, weights_hash).exists()

    def save_anchor(self, key: str, weights_hash: str, anchor: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Path:
        """Save ``{name: (flat indices, original values)}``: how to restore the entry's weights from the model with
        ``weights_hash`` (the ``anchored`` policy)."""
        from safetensors.torch import save_file

        tensors = {}
        for name, (idx, val) in anchor.items():
            tensors[name + "::idx"] = idx.to(torch.int64).contiguous()
            tensors[name + "::val"] = val.contiguous()
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"root": (self.metadata(key) or {}).get("weights_sha256", "")}
        return atomic_write(
            self.anchor_path(key, weights_hash), lambda tmp: save_file(tensors, str(tmp), metadata=meta), unique=True
        )

    def load_anchor(self, key: str, weights_hash: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from safetensors.torch import load_file

        raw = load_file(str(self.anchor_path(key, weights_hash)))
        names = {k.rsplit("::", 1)[0] for k in raw}
        return {n: (raw[n + "::idx"], raw[n + "::val"]) for n in names}

    def _write_json(self, path: Path, obj: Any) -> None:
        atomic_write_text(path, json.dumps(obj), unique=True)

    def save(self, key: str, maps: dict[str, torch.Tensor], weights_hash: str, info: dict[str, Any]) -> Path:
        """Write the maps atomically (temp file + rename) with the weights hash and ``info`` as metadata."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {str(k): json.dumps(v) if not isinstance(v, str) else v for k, v in info.items()}
        meta.update({"weights_sha256": weights_hash, "format": "hf_unlearn.ssd", "cache_version": CACHE_VERSION})
        tensors = {n: t.detach().to("cpu", torch.float32).contiguous() for n, t in maps.items()}
        return atomic_write(self.path(key), lambda tmp: save_file(tensors, str(tmp), metadata=meta), unique=True)
