"""S3T persistence: save and load an S3T model (standard peft adapter folders plus a JSON inventory), merge the
folders of shards trained in parallel, and export one shard's served model as a single plain peft adapter.

Layout of a saved folder::

    s3t_inventory.json        the inventory (see :mod:`hf_unlearn.methods.s3t.bookkeeping`), rewritten atomically
    adapters/<name>/          one standard peft adapter folder per live stage
    tokenizer/                the tokenizer

Example:
    >>> # s3t.save_pretrained("s3t-model"); S3TModel.from_pretrained("s3t-model", base_model)
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_unlearn.methods.s3t.bookkeeping import FORMAT_VERSION, merge_inventories
from hf_unlearn.methods.s3t.config import S3TConfig
from hf_unlearn.models import decoder_layers
from hf_unlearn.utils.hashing import base_fingerprint

if TYPE_CHECKING:
    from hf_unlearn.methods.s3t.model import S3TModel

INVENTORY = "s3t_inventory.json"
ADAPTERS = "adapters"


class PersistenceMixin:
    """The persistence half of :class:`S3TModel`: save, load, merge parts, export one shard."""

    def _write_inventory(self, path: Path) -> None:
        """Crash-safe rewrite: write a temp file, fsync it, atomically replace the inventory, fsync the folder."""
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (INVENTORY + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(self.state, sort_keys=True, separators=(",", ":")))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / INVENTORY)
        if hasattr(os, "O_DIRECTORY"):
            fd = os.open(path, os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write every live stage adapter as a standard peft folder ``adapters/<name>/`` plus the inventory.

        The folder is then bound: later :meth:`delete` calls rewrite the inventory and remove dropped adapters.
        """
        path = Path(save_directory)
        (path / ADAPTERS).mkdir(parents=True, exist_ok=True)
        names = set(self.state["adapters"])
        for name in sorted(names):
            if not (path / ADAPTERS / name / "adapter_config.json").exists():
                self.peft_model.save_pretrained(str(path / ADAPTERS), selected_adapters=[name])
        for stale in (path / ADAPTERS).iterdir():
            if stale.is_dir() and stale.name not in names:
                shutil.rmtree(stale, ignore_errors=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(path / "tokenizer"))
        # the base these adapters were trained on: from_pretrained refuses another one
        with self._lock:  # the background cleanup frees adapters under this lock
            self.state["base_fingerprint"] = base_fingerprint(self.get_base_model())
        self._write_inventory(path)
        self.path = path

    @classmethod
    def from_pretrained(
        cls, load_directory: str | os.PathLike, base_model: nn.Module, tokenizer: Any = None
    ) -> S3TModel:
        """Load a saved S3T model onto ``base_model`` (the same base it was trained on); serves the same model.

        Args:
            load_directory: a folder written by :meth:`save_pretrained`.
            base_model: the base causal LM (wrapped in place by peft).
            tokenizer: default: the tokenizer saved in the folder.
        """
        from peft import PeftModel

        path = Path(load_directory)
        state = json.loads((path / INVENTORY).read_text())
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} holds S3T format {state.get('format_version')}, expected {FORMAT_VERSION}")
        if len(decoder_layers(base_model)) != state["n_blocks"]:
            raise ValueError(f"base_model has {len(decoder_layers(base_model))} blocks, saved {state['n_blocks']}")
        recorded = state.get("base_fingerprint")
        if recorded and base_fingerprint(base_model) != recorded:
            raise ValueError(
                f"S3T folder {str(path)!r} was trained on another base model (recorded base fingerprint "
                f"{recorded[:16]}..., the base_model passed has {base_fingerprint(base_model)[:16]}...): load it onto "
                "the base it was trained on"
            )
        cfg_dict = dict(state["config"])
        config = S3TConfig.from_dict(cfg_dict)
        if tokenizer is None and (path / "tokenizer").exists():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
        names = sorted(state["adapters"])
        peft_model = None
        for name in names:
            folder = str(path / ADAPTERS / name)
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(base_model, folder, adapter_name=name)
            else:
                peft_model.load_adapter(folder, adapter_name=name)
        if peft_model is None:
            raise ValueError(f"{path} holds no adapters")
        for p in peft_model.parameters():
            p.requires_grad_(False)
        peft_model.eval()
        self = cls(peft_model, tokenizer, config, state)
        self.path = path
        return self

    @staticmethod
    def merge_saved(parts: list[str | os.PathLike], save_directory: str | os.PathLike) -> Path:
        """Join S3T folders that each trained a disjoint set of shards (parallel training) into one folder.

        Every part must come from the same config and data (same assignment); shard j is taken from the part
        that trained it. Stages are pure functions of (base, shard, prefix, data), so the result equals training
        every shard in one process.
        """
        out = Path(save_directory)
        (out / ADAPTERS).mkdir(parents=True, exist_ok=True)
        folders = [Path(part) for part in parts]
        merged, taken = merge_inventories([(part, json.loads((part / INVENTORY).read_text())) for part in folders])
        for part, name in taken:
            shutil.copytree(part / ADAPTERS / name, out / ADAPTERS / name, dirs_exist_ok=True)
        for part in folders:
            if (part / "tokenizer").exists() and not (out / "tokenizer").exists():
                shutil.copytree(part / "tokenizer", out / "tokenizer")
        tmp = out / (INVENTORY + ".tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, out / INVENTORY)
        return out

    def export_active_adapter(self, save_directory: str | os.PathLike, shard: int | None = None) -> None:
        """Write the served model of one shard as ONE plain peft adapter folder (loadable without hf_unlearn).

        The stage adapters touch disjoint blocks with the same LoRA settings, so the union of their tensors with
        ``layers_to_transform`` = the union of their blocks is exactly the sum peft computes with all of them
        active.

        Args:
            save_directory: the output folder (``PeftModel.from_pretrained(base, save_directory)`` loads it).
            shard: which shard (default: the only live one; required when several are live).
        """
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        served = self.served()
        if not served:
            raise RuntimeError("every S3T shard is dead: nothing to export")
        if shard is None:
            if len(served) > 1:
                raise ValueError(f"{len(served)} shards are live ({sorted(served)}): pass shard= to pick one")
            shard = next(iter(served))
        if shard not in served:
            raise ValueError(f"shard {shard} is not live; live shards: {sorted(served)}")
        chain = served[shard]
        merged: dict[str, torch.Tensor] = {}
        blocks: list[int] = []
        for name in chain:
            merged.update(get_peft_model_state_dict(self.peft_model, adapter_name=name))
            blocks += self.state["adapters"][name]["blocks"]
        cfg = copy.deepcopy(self.peft_model.peft_config[chain[0]])
        cfg.layers_to_transform = sorted(blocks)
        cfg.inference_mode = True
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_pretrained(str(out))
        save_file({k: v.contiguous() for k, v in merged.items()}, str(out / "adapter_model.safetensors"))
