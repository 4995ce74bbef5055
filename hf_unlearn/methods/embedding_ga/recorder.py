"""Training-time recorder of per-example gradients through the input-embedding path, and the store that reads them.

Reconstruction of the recording step of Zagardo (arXiv 2406.09391, from the abstract): during fine-tuning, keep for
every example of the FIRST epoch its gradient w.r.t. the input embeddings, so that the example can later be
"un-learned" by adding that gradient back (ascent) to the embedding rows.

What is stored, per example and epoch (sparse by construction: only the example's own tokens):

* ``token_ids``  ``[n]`` int32: the example's (non-padding) input ids;
* ``position_ids`` ``[n]`` int32: their positions (rows of a learned position table such as GPT-2's ``wpe``);
* ``grads`` ``[n, H]`` fp16: d(mean NLL of THIS example) / d(embedding output) at each of those positions.

Scatter-adding ``grads`` by ``token_ids`` gives the example's gradient on the token-embedding rows through the input
path; scatter-adding by ``position_ids`` gives its gradient on a learned position table (the sum ``wte + wpe`` makes
the two gradients the same per-position vectors). With tied input/output embeddings (GPT-2, SmolLM2) the shared
matrix's gradient has two parts: the INPUT path (above; the default ``tied_gradient="input"`` records only it) and the
OUTPUT path through ``lm_head``, ``sum_t dlogits_t^T h_t`` (dense: every vocabulary row, ``V x H`` per example).
``tied_gradient="input_and_output"`` also stores that output part (``out_grads`` ``[V, H]`` fp16 per example), so
that input + output is the full per-example gradient of the tied parameter.

Per-example gradients from batch gradients: within a batch examples do not interact, so the rows of example ``i`` in
the batch gradient are ``c * d S_i / d e_i`` where ``S_i`` is example ``i``'s summed token NLL and ``c`` the
Trainer's normalisation (1 / label tokens of the micro-batch times 1 / gradient-accumulation steps for the classic
loss, or 1 / label tokens of the whole accumulated step when the model takes ``num_items_in_batch``). Rather than
re-deriving which path the Trainer took, ``c`` is measured on each micro-batch as ``loss / sum_i S_i`` (the loss
``training_step`` back-propagated, the ``S_i`` recomputed from the logits), then example ``i``'s gradient of its OWN
mean loss is ``rows_i / (c * n_i)`` with ``n_i`` its label tokens. Mixed-precision loss scaling is divided out.
This is exact for the standard token-mean (or token-sum) causal-LM loss; label smoothing or extra loss terms would
break it.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> from hf_unlearn.training import finetune
    >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    >>> model, tok = tiny_causal_lm("gpt2", texts=["Question: Q1? Answer: A1."] * 4, num_layers=1, vocab_size=300)
    >>> rec = EmbeddingGradientRecorder("/tmp/egrads")
    >>> _ = finetune(model, tok, data, num_epochs=2, batch_size=2, callbacks=[rec])
    >>> sorted(EmbeddingGradientStore("/tmp/egrads").uids(epoch=1))
    ['u0', 'u1', 'u2', 'u3']
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import TrainerCallback

from hf_unlearn.data.tokenization import IGNORE_INDEX
from hf_unlearn.models import embedding_modules, unwrap
from hf_unlearn.training.losses import sequence_nll
from hf_unlearn.utils.background import BackgroundWriter

INDEX_FILE = "index.json"
MODEL_ATTR = "hf_unlearn_embedding_recording"  # set on the (unwrapped) model after recording: the store's folder
TIED_GRADIENTS = ("input", "input_and_output")


def _to_host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    """Copy to CPU; from a GPU into pinned memory without blocking (synchronise on an event before reading)."""
    if not pin:
        return t.detach().cpu()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    return out


class MissingRecordingError(ValueError):
    """The model has no recorded embedding gradients (record them during fine-tuning)."""


class EmbeddingGradientRecorder(TrainerCallback):
    """Record per-example input-embedding gradients during ``hf_unlearn.finetune`` (epoch 1 by default).

    Args:
        output_dir: folder of the recording (safetensors shards + ``index.json``); created, and emptied when
            ``overwrite``.
        epochs: 1-based epochs to record, e.g. ``(1,)`` (default) or ``(1, 2, 3)``; ``"all"`` records every epoch.
        shard_size: examples per safetensors shard.
        record_positions: also keep position ids (for a learned position table such as GPT-2's ``wpe``).
        overwrite: remove an existing recording in ``output_dir`` first.
        tied_gradient: ``"input"`` (default: the input-embedding path only) or ``"input_and_output"`` (tied
            embeddings only: also the dense output-layer part of the shared matrix's gradient, ``V x H`` values per
            example and epoch).

    After training, ``stats()`` reports the stored bytes per example and the time spent recording, and the
    unwrapped model carries ``hf_unlearn_embedding_recording = output_dir`` so ``embedding_ga`` finds it.

    Example:
        >>> rec = EmbeddingGradientRecorder("runs/egrads", epochs=(1, 2))
        >>> # finetune(model, tok, data, callbacks=[rec]); rec.stats()["bytes_per_example"]
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        epochs: Sequence[int] | str = (1,),
        shard_size: int = 1024,
        record_positions: bool = True,
        overwrite: bool = True,
        tied_gradient: str = "input",
    ):
        if tied_gradient not in TIED_GRADIENTS:
            raise ValueError(f"tied_gradient must be one of {list(TIED_GRADIENTS)}, got {tied_gradient!r}")
        self.tied_gradient = tied_gradient
        if epochs != "all":
            if isinstance(epochs, int):
                epochs = (epochs,)
            if not epochs or any(not isinstance(e, int) or e < 1 for e in epochs):
                raise ValueError(f"epochs must be 'all' or a non-empty sequence of 1-based ints, got {epochs!r}")
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
        self.output_dir = Path(output_dir)
        self.epochs = epochs if epochs == "all" else tuple(sorted(set(epochs)))
        self.shard_size = shard_size
        self.record_positions = record_positions
        if overwrite and self.output_dir.exists() and int(os.environ.get("RANK", "0") or 0) == 0:
            shutil.rmtree(self.output_dir)  # under a multi-process launch only rank 0 clears the folder
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._writer = BackgroundWriter()
        self._rank = 0
        self._world = 1
        self._epoch = 0
        self._buffer: list[tuple[str, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self._index: dict[str, dict[str, list]] = {}
        self._n_shards = 0
        self._handles: list[Any] = []
        self._captured: dict[str, Any] = {}
        self._meta: dict[str, Any] = {}
        self.record_seconds = 0.0
        self.bytes_written = 0
        self.examples_recorded = 0

    # ---------------------------------------------------------------- standard events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._rank = int(getattr(args, "process_index", 0) or 0)
        self._world = int(getattr(args, "world_size", 1) or 1)
        mods = embedding_modules(model)
        inner = unwrap(model)
        cfg = getattr(inner, "config", None)
        out = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        tied = out is not None and out.weight is mods["token"].weight
        if self.tied_gradient == "input_and_output" and not tied:
            raise ValueError(
                "tied_gradient='input_and_output' records the output-layer part of a TIED embedding matrix, but this "
                "model's input and output embeddings are separate parameters; use tied_gradient='input'"
            )
        self._meta = {
            "hidden_size": int(mods["token"].weight.shape[1]),
            "vocab_size": int(mods["token"].weight.shape[0]),
            "has_positions": mods["position"] is not None and self.record_positions,
            "num_positions": int(mods["position"].weight.shape[0]) if mods["position"] is not None else 0,
            "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
            "model": getattr(cfg, "name_or_path", None),
            "path": self.tied_gradient,
            "dtype": "float16",
        }

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch += 1

    def on_train_end(self, args, state, control, model=None, **kwargs):
        t0 = time.perf_counter()
        self._writer.submit(self._flush)
        self._writer.join()
        if self._world > 1:
            self._merge_ranks()
        else:
            self._write_index()
        self.record_seconds += time.perf_counter() - t0
        if model is not None:
            setattr(unwrap(model), MODEL_ATTR, str(self.output_dir))

    # ---------------------------------------------------------------- UidTrainer hook points
    def _active(self) -> bool:
        return self.epochs == "all" or self._epoch in self.epochs

    def on_batch_begin(self, trainer, model, inputs, uids):
        if not self._active():
            return
        if uids is None:
            raise ValueError("EmbeddingGradientRecorder needs uid-carrying batches: train with hf_unlearn.finetune")
        t0 = time.perf_counter()
        model = extract_model_from_parallel(model)  # under DDP the Trainer hands the DistributedDataParallel wrapper
        mods = embedding_modules(model)
        cap = self._captured = {}

        def on_token_embeddings(module, args, output):
            if not output.requires_grad and torch.is_grad_enabled() and output.grad_fn is None:
                # frozen embeddings (a LoRA fine-tune): make their output a leaf that asks for its gradient, so
                # dL/d(inputs_embeds) is still computed (backward already runs down to the lowest adapter)
                output.requires_grad_(True)
            if output.requires_grad:

                def keep(grad):
                    cap["grad"] = grad.detach()

                output.register_hook(keep)

        def on_positions(module, args, output):
            cap["position_ids"] = args[0].detach()

        def on_model_output(module, args, kwargs, output):
            logits = output.logits if hasattr(output, "logits") else output[0]
            cap["seq_sum"] = sequence_nll(logits.detach(), cap["labels"], reduction="sum")  # [B]

        def on_output_layer(module, args, output):  # tied_gradient="input_and_output": h and dL/dlogits
            if output.requires_grad:
                cap["hidden"] = args[0].detach()

                def keep(grad):
                    cap["dlogits"] = grad.detach()

                output.register_hook(keep)

        labels = inputs["labels"]
        cap["labels"] = labels.to(next(model.parameters()).device)
        self._handles = [mods["token"].register_forward_hook(on_token_embeddings)]
        if self.tied_gradient == "input_and_output":
            self._handles.append(unwrap(model).get_output_embeddings().register_forward_hook(on_output_layer))
        self._handles.append(model.register_forward_hook(on_model_output, with_kwargs=True))
        if mods["position"] is not None and self.record_positions:
            self._handles.append(mods["position"].register_forward_hook(on_positions))
        cap["input_ids"] = inputs["input_ids"].detach()
        mask = inputs.get("attention_mask")
        cap["mask"] = (mask if mask is not None else torch.ones_like(inputs["input_ids"])).bool()
        self.record_seconds += time.perf_counter() - t0

    def on_batch_end(self, trainer, model, inputs, uids, loss):
        if not self._active():
            return
        t0 = time.perf_counter()
        for h in self._handles:
            h.remove()
        self._handles = []
        cap = self._captured
        if "grad" not in cap:
            raise RuntimeError("no gradient reached the input embeddings: are the embeddings frozen or detached?")
        grad = cap["grad"].float()  # [B, T, H], on the model's device: everything below is batched, sync-free
        dlogits = cap["dlogits"].float() if "dlogits" in cap else None  # [B, T, V]
        if self.tied_gradient == "input_and_output" and dlogits is None:
            raise RuntimeError("no gradient reached the output layer: is lm_head frozen or detached?")
        scaler = getattr(getattr(trainer, "accelerator", None), "scaler", None)
        inv_scale = 1.0 / float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        seq_sum = cap["seq_sum"].float()  # [B] summed token NLL per example
        n_tok = cap["labels"][:, 1:].ne(IGNORE_INDEX).sum(dim=1).to(grad.device)  # [B] label tokens per example
        # c: the factor the Trainer put in front of sum_i S_i (token-mean, GA scaling or num_items_in_batch), a
        # device tensor (no host sync). Example i's gradient of its OWN mean loss is rows_i / (c * n_i).
        c = loss.detach().float().to(grad.device) / seq_sum.sum()
        denom = c * n_tok
        ok = torch.isfinite(denom) & (denom > 0)
        factor = torch.where(ok, inv_scale / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom))
        # Scaled, fp16, still padded: boolean-mask selection would synchronise a GPU, so it runs on the writer.
        grads = (grad * factor[:, None, None]).to(torch.float16)  # [B, T, H]
        pos = cap.get("position_ids")
        out = None
        if dlogits is not None:  # output path of the tied matrix: sum_t dlogits_t^T h_t  -> [B, V, H]
            out = (torch.einsum("btv,bth->bvh", dlogits, cap["hidden"].float()) * factor[:, None, None]).to(
                torch.float16
            )
        pin = grad.is_cuda
        host = [
            _to_host(t, pin) if t is not None else None for t in (cap["input_ids"], cap["mask"], pos, grads, out)
        ]
        event = None
        if pin:
            event = torch.cuda.Event()
            event.record()
        self._writer.submit(self._add_batch, [str(u) for u in uids], self._epoch, host, event)
        self.examples_recorded += len(uids)
        self._captured = {}
        self.record_seconds += time.perf_counter() - t0

    def _add_batch(self, uids: list[str], epoch: int, host: list[Any], event: Any) -> None:
        """Writer thread: split one batch's host tensors per example and flush full shards."""
        if event is not None:
            event.synchronize()
        ids, mask, pos, grads, out = host
        if pos is not None:
            pos = pos.expand_as(mask)  # [1, T] -> [B, T] when shared
        for i, uid in enumerate(uids):
            keep = mask[i]
            p = pos[i][keep] if pos is not None else torch.arange(int(keep.sum()))
            row = (uid, epoch, ids[i][keep].to(torch.int32), p.to(torch.int32), grads[i][keep], None)
            self._buffer.append(row if out is None else (*row[:5], out[i]))
        if len(self._buffer) >= self.shard_size:
            self._flush()

    # ---------------------------------------------------------------- storage
    def _flush(self) -> None:
        if not self._buffer:
            return
        t0 = time.perf_counter()
        rank = f"r{self._rank}-" if self._world > 1 else ""  # ranks write their own shards (merged index at the end)
        name = f"shard-{rank}{self._n_shards:05d}.safetensors"
        ids = torch.cat([b[2] for b in self._buffer])
        pos = torch.cat([b[3] for b in self._buffer])
        grads = torch.cat([b[4] for b in self._buffer])
        start = 0
        for j, (uid, epoch, t, _, _, out) in enumerate(self._buffer):
            entry = [name, start, start + len(t)] + ([j] if out is not None else [])  # j: row of out_grads
            self._index.setdefault(uid, {}).setdefault(str(epoch), []).append(entry)
            start += len(t)
        tensors = {"token_ids": ids.contiguous(), "grads": grads.contiguous()}
        if self._buffer[0][5] is not None:
            tensors["out_grads"] = torch.stack([b[5] for b in self._buffer]).contiguous()  # [k, V, H]
        if self._meta.get("has_positions"):
            tensors["position_ids"] = pos.contiguous()
        save_file(tensors, str(self.output_dir / name))
        self.bytes_written += sum(t.numel() * t.element_size() for t in tensors.values())
        self._n_shards += 1
        self._buffer = []
        self.record_seconds += time.perf_counter() - t0

    def _merge_ranks(self) -> None:
        """Gather every rank's index; the main process writes the union. An example that the sampler padded a
        last batch with (accelerate's ``even_batches``) was recorded on two ranks with the same per-example value:
        the lower rank's record is kept, so every example is filed exactly once per epoch."""
        from accelerate import PartialState
        from accelerate.utils import gather_object

        parts = gather_object([(self._index, self.bytes_written, self.examples_recorded)])
        if self._rank == 0:
            merged: dict[str, dict[str, list]] = {}
            for index, _, _ in parts:
                for uid, epochs in index.items():
                    for epoch, entries in epochs.items():
                        merged.setdefault(uid, {}).setdefault(epoch, entries)
            self._index = merged
            self.bytes_written = sum(p[1] for p in parts)
            self._write_index()
        PartialState().wait_for_everyone()  # nobody reads the recording before the index is written

    def _write_index(self) -> None:
        meta = {**self._meta, "epochs_recorded": sorted({int(e) for v in self._index.values() for e in v})}
        meta["bytes"] = self.bytes_written
        meta["records"] = sum(len(r) for v in self._index.values() for r in v.values())
        with open(self.output_dir / INDEX_FILE, "w") as f:
            json.dump({"meta": meta, "index": self._index}, f)

    def stats(self) -> dict[str, Any]:
        """Stored bytes (total and per recorded example-epoch) and seconds spent recording."""
        n = max(self.examples_recorded, 1)
        return {
            "examples_recorded": self.examples_recorded,
            "bytes": self.bytes_written,
            "bytes_per_example": self.bytes_written / n,
            "record_seconds": self.record_seconds,
            "epochs": self.epochs if self.epochs == "all" else list(self.epochs),
            "output_dir": str(self.output_dir),
        }


class EmbeddingGradientStore:
    """Read a recording written by :class:`EmbeddingGradientRecorder`.

    Args:
        path: the recording folder.

    Raises:
        MissingRecordingError: the folder has no ``index.json``.

    Example:
        >>> store = EmbeddingGradientStore("runs/egrads")  # doctest: +SKIP
        >>> tok_ids, tok_grad, pos_ids, pos_grad = store.row_gradients(["u0"], epochs=(1,))  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index_file = self.path / INDEX_FILE
        if not index_file.exists():
            raise MissingRecordingError(
                f"no embedding-gradient recording in {str(self.path)!r} (missing {INDEX_FILE}): record one during "
                "fine-tuning with hf_unlearn.finetune(..., callbacks=[EmbeddingGradientRecorder(dir)])"
            )
        with open(index_file) as f:
            data = json.load(f)
        self.meta: dict[str, Any] = data["meta"]
        self.index: dict[str, dict[str, list]] = data["index"]

    @property
    def has_output_path(self) -> bool:
        """Whether the recording also holds the output-layer part of a tied matrix's gradient."""
        return self.meta.get("path") == "input_and_output"

    def load_output(self, uid: str, epoch: int = 1) -> torch.Tensor:
        """The output-layer (``lm_head``) part of a tied matrix's gradient, ``[V, H]`` fp32, of one example.

        Raises:
            ValueError: the recording was made with ``tied_gradient="input"``.
            KeyError: ``uid`` was never recorded, or not in ``epoch``.
        """
        if not self.has_output_path:
            raise ValueError(
                f"the recording in {str(self.path)!r} holds the input path only "
                f"(tied_gradient={self.meta.get('path')!r}); record with "
                "EmbeddingGradientRecorder(..., tied_gradient='input_and_output')"
            )
        self.load(uid, epoch)  # same KeyErrors as load
        total = None
        for shard, _, _, j in self.index[uid][str(epoch)]:
            with safe_open(str(self.path / shard), framework="pt") as f:
                g = f.get_slice("out_grads")[j : j + 1][0].float()
            total = g if total is None else total + g
        return total

    def uids(self, epoch: int | None = None) -> list[str]:
        """Recorded uids (of one epoch, or any)."""
        return [u for u, v in self.index.items() if epoch is None or str(epoch) in v]

    @property
    def epochs(self) -> list[int]:
        return list(self.meta.get("epochs_recorded", []))

    def load(self, uid: str, epoch: int = 1) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(token_ids [n], position_ids [n] or None, grads [n, H] fp32)`` of one example and epoch.

        Raises:
            KeyError: ``uid`` was never recorded, or not in ``epoch``.
        """
        if uid not in self.index:
            known = sorted(self.index)[:5]
            raise KeyError(f"uid {uid!r} has no recorded embedding gradient (recorded uids include {known})")
        per_epoch = self.index[uid]
        if str(epoch) not in per_epoch:
            raise KeyError(f"uid {uid!r} was not recorded in epoch {epoch}; recorded epochs: {sorted(per_epoch)}")
        ids, pos, grads = [], [], []
        for shard, start, end, *_ in per_epoch[str(epoch)]:
            with safe_open(str(self.path / shard), framework="pt") as f:
                ids.append(f.get_slice("token_ids")[start:end])
                grads.append(f.get_slice("grads")[start:end])
                if self.meta.get("has_positions"):
                    pos.append(f.get_slice("position_ids")[start:end])
        return (
            torch.cat(ids).long(),
            torch.cat(pos).long() if pos else None,
            torch.cat(grads).float(),
        )

    def row_gradients(
        self, uids: Iterable[str], epochs: Iterable[int] = (1,), include_output: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Summed recorded gradients of ``uids`` over ``epochs``, on the embedding rows they touch.

        Args:
            uids, epochs: the examples and the recorded epochs summed.
            include_output: also add the output-layer part of a tied matrix's gradient (a recording made with
                ``tied_gradient="input_and_output"``); the token rows are then every vocabulary row.

        Returns:
            ``(token_rows [U], token_grad [U, H], position_rows [P] or None, position_grad [P, H] or None)``:
            the unique token ids (position ids) and the scatter-added gradient on each row.

        Raises:
            KeyError: an unknown uid, or one not recorded in a requested epoch.
        """
        uids = list(uids)
        epochs = list(epochs)
        missing = [u for u in uids if u not in self.index]
        if missing:
            raise KeyError(
                f"{len(missing)} uid(s) have no recorded embedding gradient, e.g. {missing[:5]}; recorded uids "
                f"include {sorted(self.index)[:5]}"
            )
        all_ids, all_pos, all_g = [], [], []
        for u in uids:
            for e in epochs:
                ids, pos, g = self.load(u, e)
                all_ids.append(ids)
                all_g.append(g)
                if pos is not None:
                    all_pos.append(pos)
        ids = torch.cat(all_ids)
        g = torch.cat(all_g)  # [N, H]
        if include_output:
            out = sum(self.load_output(u, e) for u in uids for e in epochs)  # [V, H]
            rows = torch.arange(out.shape[0])
            tok_grad = out.index_add_(0, ids, g)  # input path scattered by token id onto the output part
        else:
            rows, inv = torch.unique(ids, return_inverse=True)
            tok_grad = torch.zeros(len(rows), g.shape[1]).index_add_(0, inv, g)  # scatter-add by token id
        if not all_pos:
            return rows, tok_grad, None, None
        prow, pinv = torch.unique(torch.cat(all_pos), return_inverse=True)
        pos_grad = torch.zeros(len(prow), g.shape[1]).index_add_(0, pinv, g)  # same vectors, by position
        return rows, tok_grad, prow, pos_grad
