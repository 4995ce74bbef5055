"""Amnesiac recording: every optimizer step's parameter update, layer-wise pruned, keyed by the uids of its batch.

Reconstruction of the recording side of partial amnesiac unlearning (Gogineni et al., arXiv 2403.07611; the full text
is public but only its abstract could be read here; classic amnesiac unlearning is Graves et al., arXiv 2010.10981):

* per optimizer step, ``delta = theta_after - theta_before`` of every trainable tensor (after clipping, the
  optimizer, weight decay: everything the step did). With a PeftModel only the adapter is trainable, so only
  adapter updates are recorded;
* layer-wise pruning: per tensor only the ``ceil(kappa * numel)`` entries of largest ``|delta|`` are kept
  (default ``kappa = 0.1``; ties: lower flat index first). ``kappa = 1`` stores the dense update (classic
  amnesiac);
* storage: one safetensors file per step (flat int32/int64 indices + fp16 values, or dense values when
  ``kappa = 1``), flushed at every step (memory stays bounded by one copy of the trainable parameters), and a
  ``steps.jsonl`` line per step with the uids of its batch (all gradient-accumulation micro-batches);
  ``meta.json`` holds the settings, the tensor shapes and, after training, the ``uid -> steps`` index.

:func:`isolate_sensitive` orders a dataset so that examples flagged sensitive in advance never share an optimizer
step with other data; subtracting their steps then removes nothing else.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> from hf_unlearn.training import finetune
    >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1? Answer: A1."] * 4, num_layers=1, vocab_size=300)
    >>> rec = AmnesiacRecorder("/tmp/amnesiac_doc", kappa=0.1)
    >>> _ = finetune(model, tok, data, num_epochs=1, batch_size=2, callbacks=[rec])
    >>> AmnesiacRecording("/tmp/amnesiac_doc").steps_for(["u0"]) != []
    True
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from safetensors.numpy import save_file as save_numpy_file
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from hf_unlearn.data import UID, load_examples
from hf_unlearn.methods.partial.masks import (
    top_fraction_count,
    topk_flat_indices,
    topk_flat_indices_numpy,
    trainable_parameters,
)
from hf_unlearn.models import unwrap
from hf_unlearn.utils.atomic import atomic_write_text
from hf_unlearn.utils.background import BackgroundWriter

META_FILE = "meta.json"
STEPS_FILE = "steps.jsonl"
MODEL_ATTR = "hf_unlearn_amnesiac_recording"  # set on the (unwrapped) model after recording: the folder
COPY_MARK = "#copy"  # isolate_sensitive's fill copies are "<uid>#copy<k>"; the recorder files them under "<uid>"
VALUE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
NUMPY_VALUE_DTYPES = {"float16": np.float16, "float32": np.float32}  # bfloat16 has no numpy dtype


def _launch_rank() -> int:
    """Global rank of this process under torchrun / accelerate launch (0 when not launched multi-process)."""
    return int(os.environ.get("RANK", "0") or 0)


def _flat(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """All tensors flattened and concatenated (one copy; in their dtype when they share one, else fp32)."""
    params = [p.detach().reshape(-1) for p in params]
    if len({p.dtype for p in params}) > 1:
        params = [p.float() for p in params]
    return torch.cat(params)


def _to_host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    """Copy to CPU; from a GPU into pinned memory without blocking (synchronise on an event before reading)."""
    if not pin:
        return t.cpu()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    return out


def canonical_uid(uid: str) -> str:
    """The original uid of an :func:`isolate_sensitive` fill copy (``"u3#copy2"`` -> ``"u3"``); others unchanged."""
    base, mark, k = uid.rpartition(COPY_MARK)
    return base if mark and k.isdigit() else uid


class MissingRecordingError(ValueError):
    """No amnesiac recording was found (train with an AmnesiacRecorder callback, or pass recording_dir)."""


class AmnesiacRecorder(TrainerCallback):
    """Record every optimizer step's (top-kappa pruned) parameter update with the uids of its batch.

    Pass it to :func:`hf_unlearn.training.finetune` (``callbacks=[rec]``); the batches must carry uids (they do
    with ``finetune``).

    Args:
        output_dir: folder of the recording (created; emptied first when ``overwrite``).
        kappa: fraction of entries kept per tensor and step, in (0, 1]; 1 stores dense updates (classic amnesiac).
        value_dtype: ``"float16"`` (default), ``"bfloat16"`` or ``"float32"`` (exact, for tests).
        overwrite: remove an existing recording in ``output_dir`` first; else refuse to write into a non-empty one.

    Several ``finetune`` runs with the same recorder append to the same recording (steps keep counting).
    After training, the unwrapped model carries ``hf_unlearn_amnesiac_recording = output_dir`` so
    ``partial_amnesiac`` finds it, and :meth:`stats` reports the storage and the recording time.

    Example:
        >>> rec = AmnesiacRecorder("runs/amnesiac", kappa=0.1)
        >>> # finetune(model, tok, data, callbacks=[rec]); rec.stats()["bytes"]
    """

    def __init__(
        self, output_dir: str | os.PathLike, kappa: float = 0.1, value_dtype: str = "float16", overwrite: bool = True
    ):
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 < kappa <= 1:
            raise ValueError(f"kappa must be a number in (0, 1], got {kappa!r}")
        if value_dtype not in VALUE_DTYPES:
            raise ValueError(f"value_dtype must be one of {list(VALUE_DTYPES)}, got {value_dtype!r}")
        self.output_dir = Path(output_dir)
        self.kappa = float(kappa)
        self.value_dtype = value_dtype
        if _launch_rank() == 0 and self.output_dir.exists() and any(self.output_dir.iterdir()):
            if not overwrite:  # under a multi-process launch only rank 0 clears (the others write no tensor)
                raise FileExistsError(f"{self.output_dir} is not empty; pass overwrite=True to replace it")
            shutil.rmtree(self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._writer = BackgroundWriter()
        self._world = 1
        self._main = True
        self._local_steps: list[tuple[int, list[str], dict[str, Any]]] = []  # (step, local uids, line) under DDP
        self._params: dict[str, torch.nn.Parameter] = {}
        self._shapes: dict[str, list[int]] | None = None
        self._before: dict[str, torch.Tensor] = {}
        self._uids: list[str] = []
        self._step = 0
        self._index: dict[str, list[int]] = {}
        self.bytes_written = 0
        self.entries_written = 0
        self.record_seconds = 0.0

    # ------------------------------------------------------------------ standard events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # Under DDP every rank holds the same parameters and applies the same (all-reduced) update, so only the
        # main process snapshots and writes the updates; every rank notes the uids of ITS micro-batches per step
        # and the main process files the union under each step at the end of training (see on_train_end).
        self._world = int(getattr(args, "world_size", 1) or 1)
        self._main = int(getattr(args, "process_index", 0) or 0) == 0
        self._params = trainable_parameters(model)
        if not self._params:
            raise ValueError("AmnesiacRecorder: the model has no trainable parameter")
        shapes = {n: list(p.shape) for n, p in self._params.items()}
        if self._shapes is not None and shapes != self._shapes:
            raise ValueError("AmnesiacRecorder: the trainable parameters changed between runs of the same recording")
        self._shapes = shapes
        if self._main:
            self._write_meta(finished=False)

    @torch.no_grad()
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # weights are unchanged since the step began (clipping touches only grads): snapshot right before the update,
        # as ONE flat copy (a single kernel per dtype instead of one clone per tensor)
        if not self._main:
            return
        t0 = time.perf_counter()
        self._before = {"flat": _flat(self._params.values())}
        self.record_seconds += time.perf_counter() - t0

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._step += 1
        uids = list(dict.fromkeys(self._uids))  # unique, in batch order
        self._uids = []
        line = {
            "step": self._step,
            "file": f"step_{self._step:07d}.safetensors",
            "uids": uids,
            "global_step": int(state.global_step),
            "epoch": float(state.epoch or 0.0),
        }
        if not self._main:
            self._local_steps.append((self._step, uids, line))
            return
        if not self._before:
            raise RuntimeError("AmnesiacRecorder: on_step_end without a pre-optimizer snapshot")
        t0 = time.perf_counter()
        delta = _flat(self._params.values()) - self._before["flat"]  # one kernel; the rest is off the step
        self._before = {}
        if delta.is_cuda:  # select on device (async kernels), copy to pinned host memory without a sync
            tensors, entries = self._select(delta)
            event = torch.cuda.Event()
            event.record()
            self._writer.submit(self._write_step, tensors, entries, line, event)
        else:  # on CPU the selection itself runs on the writer thread (numpy there: see _select_host)
            self._writer.submit(self._write_delta, delta, line)
        self.record_seconds += time.perf_counter() - t0

    def on_train_end(self, args, state, control, model=None, **kwargs):
        t0 = time.perf_counter()
        self._writer.join()
        if self._world > 1:
            self._merge_ranks()
        elif self._main:
            self._write_meta(finished=True)
        self.record_seconds += time.perf_counter() - t0
        if model is not None:
            setattr(unwrap(model), MODEL_ATTR, str(self.output_dir))

    # ------------------------------------------------------------------ off-step work (writer thread)
    def _select(self, delta: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
        """Top-kappa (or dense) entries of every tensor's slice of the flat update, as host tensors."""
        vdtype = VALUE_DTYPES[self.value_dtype]
        pin = delta.is_cuda
        tensors: dict[str, torch.Tensor] = {}
        entries = 0
        start = 0
        for name, p in self._params.items():
            n = p.numel()
            d = delta[start : start + n]
            start += n
            if self.kappa >= 1.0:
                tensors[f"{name}::dense"] = _to_host(d.to(vdtype), pin)
                entries += n
                continue
            idx = topk_flat_indices(d.abs(), top_fraction_count(self.kappa, n))
            idx_dtype = torch.int32 if n < 2**31 else torch.int64
            tensors[f"{name}::idx"] = _to_host(idx.to(idx_dtype), pin)
            tensors[f"{name}::val"] = _to_host(d[idx].to(vdtype), pin)
            entries += idx.numel()
        return tensors, entries

    def _select_host(self, delta: torch.Tensor) -> tuple[dict[str, np.ndarray], int] | None:
        """:meth:`_select` of a CPU float32 update with numpy: the same indices and values, bit for bit.

        Runs on the writer thread. Torch ops there would start a second OpenMP team next to the training thread's
        (on a machine whose cores training already fills, the two teams wait on each other at every parallel
        region); numpy works on the calling thread only and releases the GIL. Magnitudes are compared as the int32
        bit patterns of ``|delta|`` (the same order as the floats; one pass, no float ``abs`` copy), and the values
        are cast with numpy's round-to-nearest-even float16 conversion, the same as torch's.

        Returns:
            ``(name -> array, entries)``, or None where the torch path must decide: another update dtype,
            bfloat16 values, or a NaN in the update (whose order torch.topk defines).
        """
        if delta.dtype != torch.float32 or delta.device.type != "cpu" or self.value_dtype not in NUMPY_VALUE_DTYPES:
            return None
        flat = delta.numpy()
        if self.kappa >= 1.0:
            return self._dense_host(flat), flat.size
        mag = flat.view(np.int32) & np.int32(0x7FFFFFFF)  # the sign bit cleared: |delta|'s bits, -0.0 -> 0
        if mag.size and int(mag.max()) > 0x7F800000:  # above +inf's bit pattern: a NaN
            return None
        vdtype = NUMPY_VALUE_DTYPES[self.value_dtype]
        tensors: dict[str, np.ndarray] = {}
        entries = 0
        start = 0
        for name, p in self._params.items():
            n = p.numel()
            idx = topk_flat_indices_numpy(mag[start : start + n], top_fraction_count(self.kappa, n))
            tensors[f"{name}::idx"] = idx.astype(np.int32 if n < 2**31 else np.int64)
            with np.errstate(over="ignore"):  # |value| > 65504 becomes inf in float16, silently as in torch
                tensors[f"{name}::val"] = flat[start : start + n][idx].astype(vdtype)
            entries += idx.size
            start += n
        return tensors, entries

    def _dense_host(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """kappa = 1: every tensor's whole slice of the update, in the value dtype."""
        vdtype = NUMPY_VALUE_DTYPES[self.value_dtype]
        tensors: dict[str, np.ndarray] = {}
        start = 0
        for name, p in self._params.items():
            n = p.numel()
            with np.errstate(over="ignore"):
                tensors[f"{name}::dense"] = flat[start : start + n].astype(vdtype, copy=False)
            start += n
        return tensors

    def _write_delta(self, delta: torch.Tensor, line: dict[str, Any]) -> None:
        selected = self._select_host(delta)
        tensors, entries = selected if selected is not None else self._select(delta)
        self._write_step(tensors, entries, line, None)

    def _write_step(
        self, tensors: dict[str, torch.Tensor] | dict[str, np.ndarray], entries: int, line: dict[str, Any], event: Any
    ) -> None:
        if event is not None:
            event.synchronize()  # the device-to-host copies of this step are done (waits on this thread only)
        path = str(self.output_dir / line["file"])
        if all(isinstance(t, np.ndarray) for t in tensors.values()):
            save_numpy_file(tensors, path)  # the same bytes as safetensors.torch.save_file of the same tensors
            nbytes = sum(t.nbytes for t in tensors.values())
        else:
            save_file(tensors, path)
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        line = {**line, "entries": entries, "bytes": nbytes}
        self.bytes_written += nbytes
        self.entries_written += entries
        if self._world > 1:  # the uids of the other ranks are known only at the end of training
            self._local_steps.append((line["step"], line["uids"], line))
            return
        with open(self.output_dir / STEPS_FILE, "a") as fh:
            fh.write(json.dumps(line) + "\n")
        for u in line["uids"]:
            self._index.setdefault(u, []).append(line["step"])

    def _merge_ranks(self) -> None:
        """Gather every rank's per-step uids; the main process files their union under each (global) step."""
        from accelerate import PartialState
        from accelerate.utils import gather_object

        parts = gather_object([[(s, u) for s, u, _ in self._local_steps]])  # one list per rank, rank order
        if self._main:
            lines = {s: line for s, _, line in self._local_steps}
            with open(self.output_dir / STEPS_FILE, "a") as fh:
                for step in sorted(lines):
                    uids = list(dict.fromkeys(u for part in parts for s, us in part if s == step for u in us))
                    line = {**lines[step], "uids": uids}
                    fh.write(json.dumps(line) + "\n")
                    for u in uids:
                        self._index.setdefault(u, []).append(step)
            self._write_meta(finished=True)
        self._local_steps = []
        PartialState().wait_for_everyone()  # nobody reads the recording before the main process wrote it

    # ------------------------------------------------------------------ UidTrainer hook point
    def on_batch_begin(self, trainer, model, inputs, uids):
        if uids is None:
            raise ValueError("AmnesiacRecorder needs uid-carrying batches: train with hf_unlearn.training.finetune")
        self._uids.extend(canonical_uid(str(u)) for u in uids)

    # ------------------------------------------------------------------ helpers
    def _write_meta(self, finished: bool) -> None:
        meta = {
            "format": "hf_unlearn.amnesiac.v1",
            "kappa": self.kappa,
            "value_dtype": self.value_dtype,
            "params": self._shapes or {},
            "steps": self._step,
            "finished": finished,
            "bytes": self.bytes_written,
            "entries": self.entries_written,
            "uid_to_steps": self._index,
        }
        atomic_write_text(self.output_dir / META_FILE, json.dumps(meta))

    def stats(self) -> dict[str, Any]:
        """Steps recorded, stored bytes/entries, dense-equivalent bytes (fp32) and recording seconds."""
        numel = sum(int(torch.Size(s).numel()) for s in (self._shapes or {}).values())
        return {
            "steps": self._step,
            "kappa": self.kappa,
            "bytes": self.bytes_written,
            "entries": self.entries_written,
            "dense_fp32_bytes": 4 * numel * self._step,
            "record_seconds": self.record_seconds,
        }


class AmnesiacRecording:
    """Read an amnesiac recording and subtract (or add back) the updates of chosen steps.

    Args:
        path: the recorder's ``output_dir``.

    Example:
        >>> rec = AmnesiacRecording("runs/amnesiac")  # doctest: +SKIP
        >>> rec.apply(model, rec.steps_for(["u3"]))  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not meta_path.is_file():
            raise MissingRecordingError(
                f"no amnesiac recording in {self.path} (no {META_FILE}): fine-tune with "
                "callbacks=[AmnesiacRecorder(dir)] first"
            )
        self.meta = json.loads(meta_path.read_text())
        self.steps: list[dict[str, Any]] = []
        steps_path = self.path / STEPS_FILE
        if steps_path.is_file():
            with open(steps_path) as fh:
                self.steps = [json.loads(line) for line in fh if line.strip()]
        if not self.steps:
            raise MissingRecordingError(f"the amnesiac recording in {self.path} holds no step")
        self._by_step = {s["step"]: s for s in self.steps}
        self.uid_to_steps: dict[str, list[int]] = {}
        for s in self.steps:
            for u in s["uids"]:
                self.uid_to_steps.setdefault(u, []).append(s["step"])

    @property
    def kappa(self) -> float:
        return float(self.meta["kappa"])

    @property
    def storage_bytes(self) -> int:
        """Bytes of the stored tensors (indices + values; the step files add a small header each)."""
        return sum(int(s["bytes"]) for s in self.steps)

    def uids(self) -> list[str]:
        return sorted(self.uid_to_steps)

    def steps_for(self, uids: Iterable[str], on_unknown: str = "error") -> list[int]:
        """Sorted steps whose batch held any of ``uids``.

        Raises:
            KeyError: a uid never seen during recording (``on_unknown="error"``), naming it and a few known ones.
        """
        if on_unknown not in ("error", "ignore"):
            raise ValueError(f"on_unknown must be one of ['error', 'ignore'], got {on_unknown!r}")
        uids = [str(u) for u in uids]
        unknown = [u for u in uids if u not in self.uid_to_steps]
        if unknown and on_unknown == "error":
            raise KeyError(
                f"{len(unknown)} uid(s) never seen in the amnesiac recording {self.path}, e.g. {unknown[:5]}; "
                f"recorded uids include {self.uids()[:5]} (pass on_unknown='ignore' to skip them)"
            )
        return sorted({s for u in uids for s in self.uid_to_steps.get(u, [])})

    def load_step(self, step: int) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
        """``name -> (flat indices or None for dense, values)`` of one recorded step."""
        if step not in self._by_step:
            raise KeyError(f"step {step} is not in the recording (1..{len(self.steps)})")
        raw = load_file(str(self.path / self._by_step[step]["file"]))
        out: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}
        for key, t in raw.items():
            name, kind = key.rsplit("::", 1)
            if kind == "dense":
                out[name] = (None, t)
            elif kind == "val":
                out[name] = (raw[f"{name}::idx"].long(), t)
        return out

    @torch.no_grad()
    def apply(
        self, model: Any, steps: Sequence[int], sign: float = -1.0, compute_dtype: torch.dtype = torch.float32
    ) -> int:
        """Add ``sign`` times the stored updates of ``steps`` to the model's parameters (default: subtract).

        The updates are summed in ``compute_dtype`` per tensor and applied once. Parameters are matched by name
        (the names of the trained model: a PeftModel's adapter names when LoRA was recorded).

        Returns:
            the number of stored entries applied.
        """
        params = dict(model.named_parameters())
        missing = sorted(set(self.meta["params"]) - set(params))
        if missing:
            raise KeyError(
                f"the model lacks {len(missing)} recorded parameter(s), e.g. {missing[:3]}: unlearn the model that "
                "was trained with the recorder (same peft wrapping)"
            )
        acc: dict[str, torch.Tensor] = {}
        entries = 0
        for step in steps:
            for name, (idx, val) in self.load_step(step).items():
                p = params[name]
                buf = acc.get(name)
                if buf is None:
                    buf = acc[name] = torch.zeros(p.numel(), dtype=compute_dtype, device=p.device)
                val = val.to(device=p.device, dtype=compute_dtype)
                if idx is None:
                    buf += val
                else:
                    buf.index_add_(0, idx.to(p.device), val)
                entries += val.numel()
        for name, buf in acc.items():
            p = params[name]
            p.data.copy_((p.data.to(compute_dtype) + sign * buf.view_as(p)).to(p.dtype))
        return entries


def isolate_sensitive(
    dataset: Any,
    sensitive_uids: Iterable[str],
    batch_size: int,
    *,
    mode: str = "group",
    seed: int = 0,
    shuffle: bool = True,
) -> Dataset:
    """Order ``dataset`` so that sensitive examples never share an optimizer step with other examples.

    Train on the result with SEQUENTIAL sampling, e.g. ``finetune(model, tok, ordered, batch_size=b,
    train_sampling_strategy="sequential")`` (the Trainer's default random sampler would reshuffle it). The
    sequential sampler replays the same order every epoch.

    Args:
        dataset: examples with a ``uid`` column (anything ``load_examples`` accepts).
        sensitive_uids: uids flagged in advance.
        batch_size: examples per OPTIMIZER step: per-device batch size x gradient accumulation steps (x devices).
        mode: ``"group"``: sensitive examples are batched together, never with other data; ``"single"``: each
            sensitive example fills a whole batch with copies of itself (same gradient as the example alone under
            the token-mean loss), so subtracting one example's steps removes no other example at all.
        seed: seed of the block order.
        shuffle: shuffle examples and blocks (deterministic given ``seed``); False keeps the dataset order.

    Returns:
        the reordered Dataset. Sensitive rows may be repeated to fill their blocks; since uids must stay unique,
        a repeated row gets the uid ``"<uid>#copy<k>"``, which :class:`AmnesiacRecorder` files under ``"<uid>"``.
        Every block has exactly ``batch_size`` rows except at most one non-sensitive block, placed last.

    Raises:
        KeyError: a sensitive uid not in the dataset. ValueError: bad ``mode`` / ``batch_size``.

    Example:
        >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(5)]
        >>> ordered = isolate_sensitive(data, ["u1"], batch_size=2, mode="single", shuffle=False)
        >>> list(ordered["uid"])
        ['u1', 'u1#copy1', 'u0', 'u2', 'u3', 'u4']
    """
    if mode not in ("group", "single"):
        raise ValueError(f"mode must be one of ['group', 'single'], got {mode!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    ds = load_examples(dataset)
    all_uids = list(ds[UID])
    pos = {u: i for i, u in enumerate(all_uids)}
    sens = list(dict.fromkeys(str(u) for u in sensitive_uids))
    unknown = [u for u in sens if u not in pos]
    if unknown:
        raise KeyError(f"{len(unknown)} sensitive uid(s) not in the dataset, e.g. {unknown[:5]}")
    sens_set = set(sens)
    rng = random.Random(seed)
    rest = [i for i, u in enumerate(all_uids) if u not in sens_set]
    sens_idx = [pos[u] for u in sens]
    if shuffle:
        rng.shuffle(rest)
        rng.shuffle(sens_idx)
    blocks: list[list[int]] = []
    if mode == "single":
        blocks += [[i] * batch_size for i in sens_idx]
    else:
        for s in range(0, len(sens_idx), batch_size):
            block = sens_idx[s : s + batch_size]
            block += [block[j % len(block)] for j in range(batch_size - len(block))]  # fill with its own members
            blocks.append(block)
    full = len(rest) // batch_size * batch_size
    blocks += [rest[s : s + batch_size] for s in range(0, full, batch_size)]
    if shuffle:
        rng.shuffle(blocks)
    if full < len(rest):
        blocks.append(rest[full:])  # the only short block goes last, so batch boundaries stay aligned
    order = [i for b in blocks for i in b]
    seen: dict[int, int] = {}
    new_uids = []
    for i in order:
        k = seen.get(i, 0)
        seen[i] = k + 1
        new_uids.append(all_uids[i] if k == 0 else f"{all_uids[i]}{COPY_MARK}{k}")
    out = ds.select(order)
    return out.remove_columns(UID).add_column(UID, new_uids)
