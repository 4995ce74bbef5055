"""S3TModel: a frozen base with one peft LoRA adapter per (shard, sequence prefix, stage), exact deletion.

Layout (arXiv 2406.16257, see ``shared/METHODS.md`` section 1):

* every training uid goes to a (shard, slice) by a sha256 of ``"{seed}:{uid}"`` (independent of the other uids,
  so a dataset without some uids keeps everyone else's place);
* the N transformer blocks form L groups of k blocks, group 1 the TOP-most: stage t owns blocks
  ``[N - t*k, N - (t-1)*k)``; its adapter ``s{shard}_q{seq}_t{stage}`` has ``layers_to_transform`` = those indices;
* stage t of a sequence trains ONLY its own adapter, with adapters 1..t-1 of the same prefix active and frozen, on
  the (cumulative) slices of the prefix, with a fresh Trainer/optimizer seeded from a hash of (seed, shard,
  prefix). A stage is therefore a pure function of (base weights, prefix, its data): retraining it later without
  deleted uids reproduces bitwise what training from scratch without them gives;
* each distinct prefix is trained once (prefix tree); sequences sharing it share its adapter.

Deletion is bookkeeping: the adapters whose data held a deleted uid are dropped; each shard serves its sequence
with the longest prefix of valid adapters; a shard without one is dead. ``retrain()`` rebuilds the missing stages.

The class is assembled from one file per job: ``bookkeeping.py`` (uid assignment, validity, deletion; no torch),
``stages.py`` (hooks, the stage Trainer, stage training), ``serving.py`` (forward, generate) and ``persistence.py``
(save, load, merge, export). This file holds the lifecycle: construction, deletion, freeing, retraining.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> from hf_unlearn.methods.s3t import S3TConfig, S3TModel
    >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(12)]
    >>> base, tok = tiny_causal_lm("llama", texts=["Question: Q1?\\nAnswer: A1."] * 4, num_layers=2, vocab_size=300)
    >>> s3t = S3TModel.from_training(base, tok, data, S3TConfig(n_slices=2, num_epochs=1, learning_rate=1e-3))
    >>> report = s3t.delete(["u3"])
    >>> s3t.served_prefix_lengths()[0] <= 2
    True
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from hf_unlearn.data import UID, load_examples
from hf_unlearn.methods.s3t.bookkeeping import (
    FORMAT_VERSION,
    apply_deletion,
    assign_all,
    assign_uid,
    new_state,
    placement_keys,
    served_chains,
    stage_blocks,
    stage_seed,
    valid_prefix_length,
    validity,
)
from hf_unlearn.methods.s3t.config import S3TConfig
from hf_unlearn.methods.s3t.persistence import ADAPTERS, INVENTORY, PersistenceMixin
from hf_unlearn.methods.s3t.serving import S3TEnsembleForCausalLM, ServingMixin
from hf_unlearn.methods.s3t.stages import StageTrainingMixin
from hf_unlearn.models import check_causal_lm, decoder_layers, unwrap

__all__ = [
    "ADAPTERS",
    "FORMAT_VERSION",
    "INVENTORY",
    "S3TEnsembleForCausalLM",
    "S3TModel",
    "assign_uid",
    "stage_blocks",
    "stage_seed",
]


# Cleanup threads alive in this process. At interpreter exit every one is woken, finishes what is pending (dropped
# adapters' weights, and their folders on disk: they hold what deleted data trained) and is joined, so no daemon
# thread is still inside torch while the interpreter tears down (which can abort the process).
_CLEANERS: list[tuple[threading.Thread, threading.Event]] = []
_EXITING = threading.Event()


def _finish_cleanups(timeout: float = 60.0) -> None:
    _EXITING.set()
    for _thread, event in list(_CLEANERS):
        event.set()
    for thread, _ in list(_CLEANERS):
        thread.join(timeout)


atexit.register(_finish_cleanups)


class S3TModel(StageTrainingMixin, ServingMixin, PersistenceMixin, nn.Module):
    """An S3T ensemble: ``m`` shards, each serving the longest valid prefix of its trained sequences.

    Build with :meth:`from_training` (or :meth:`from_pretrained`); ``forward`` averages the live shards;
    ``generate`` works for one or several live shards; :meth:`delete` is instant and exact; :meth:`retrain`
    rebuilds cut stages.
    """

    def __init__(self, peft_model: nn.Module, tokenizer: Any, config: S3TConfig, state: dict[str, Any]):
        super().__init__()
        self.peft_model = peft_model
        self.tokenizer = tokenizer
        self.config_s3t = config
        self.state = state  # JSON-able inventory (see _new_state)
        self.dataset = None  # the training examples (for retrain); not persisted
        self.path: Path | None = None  # folder the inventory is persisted to on every delete
        self.trainings: list[dict[str, Any]] = []  # one record per trained stage (this process)
        self._lock = threading.RLock()
        self._retrain_lock = threading.Lock()
        self._valid_cache: dict[str, bool] | None = None
        self._init_cleanup()

    @property
    def _active_key(self) -> tuple | None:
        """(chain, inference_mode, trainable adapter) last set up by stage training, None once anything else touched
        the active adapters. Kept on the peft model itself, so every view of it (retrain's work view) agrees."""
        return None if self.peft_model is None else self.peft_model.__dict__.get("_s3t_active_key")

    @_active_key.setter
    def _active_key(self, value: tuple | None) -> None:
        if self.peft_model is not None:
            self.peft_model.__dict__["_s3t_active_key"] = value

    def _init_cleanup(self, names: set[str] | None = None) -> None:
        """Deferred freeing of dropped adapters (weights in memory, folders on disk): off the deletion request path."""
        self._pending_names: set[str] = set(names or ())  # dropped from the inventory, still in the peft model
        self._pending_dirs: list[Path] = []  # adapter folders of dropped stages, still on disk
        self._pending_lock = threading.Lock()  # guards the two lists above
        self._cleanup_lock = threading.Lock()  # one cleanup at a time (flush_deletions waits for a running one)
        self._cleaner: threading.Thread | None = None
        self._cleanup_event = threading.Event()

    def __deepcopy__(self, memo: dict) -> S3TModel:
        """Deep copy (a fresh lock; the training dataset is shared, not copied)."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        skip = {
            "_pending_names",
            "_pending_dirs",
            "_pending_lock",
            "_cleanup_lock",
            "_cleaner",
            "_cleanup_event",
            "_layer_index",
        }
        with self._lock:  # the background cleanup frees adapters under this lock: never copy a half-freed model
            for k, v in list(self.__dict__.items()):
                if k == "_lock":
                    new.__dict__[k] = threading.RLock()
                elif k == "_retrain_lock":
                    new.__dict__[k] = threading.Lock()
                elif k == "dataset":
                    new.__dict__[k] = v
                elif k not in skip:
                    new.__dict__[k] = copy.deepcopy(v, memo)
        with self._pending_lock:  # the copy frees its own copies of the not-yet-freed adapters; files stay ours
            new._init_cleanup(self._pending_names)
        return new

    # ------------------------------------------------------------------------------------------------ training
    @classmethod
    def from_training(
        cls,
        base_model: nn.Module,
        tokenizer: Any,
        dataset: Any,
        config: S3TConfig | None = None,
        shards: list[int] | None = None,
        **kwargs: Any,
    ) -> S3TModel:
        """Train every stage of every shard's sequences (each distinct prefix once) on a frozen ``base_model``.

        Args:
            base_model: a transformers causal LM (no peft adapters); it is wrapped in place by peft.
            tokenizer: its tokenizer.
            dataset: training examples with a ``uid`` column (anything :func:`hf_unlearn.data.load_examples` reads).
            config: :class:`S3TConfig` (or pass its fields as keyword arguments).
            shards: train only these shards (for parallel training: each process trains its share, then
                :meth:`merge_saved` joins the saved parts); the others are left dead in this model.

        Returns:
            The trained :class:`S3TModel`.

        Example:
            >>> # s3t = S3TModel.from_training(base, tok, data, S3TConfig(n_shards=2, n_slices=3, budget=3))
        """
        check_causal_lm(base_model)
        if hasattr(base_model, "peft_config"):
            raise ValueError("base_model already carries peft adapters: pass the plain base model")
        if config is None:
            config = S3TConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        if shards is not None and not set(shards) <= set(range(config.n_shards)):
            raise ValueError(f"shards must be a subset of range({config.n_shards}), got {shards}")
        n_blocks = len(decoder_layers(base_model))
        k = config.layers_per_slice or n_blocks // config.n_slices
        if k < 1 or k * config.n_slices > n_blocks:
            raise ValueError(
                f"layers_per_slice k={k} with n_slices L={config.n_slices} needs k*L <= N={n_blocks} blocks"
            )
        ds = load_examples(dataset)
        if config.group_column is not None and config.group_column not in ds.column_names:
            raise KeyError(f"group_column {config.group_column!r} not in the dataset's columns {ds.column_names}")
        groups = ds[config.group_column] if config.group_column else None
        keys = placement_keys(ds[UID], groups, config.ungrouped_values)
        assignment = assign_all(ds[UID], keys, config.n_shards, config.n_slices, config.seed)
        sequences = {
            j: config.sequences_for(j, config.seed) if shards is None or j in shards else []
            for j in range(config.n_shards)
        }
        state = new_state(assignment, sequences, n_blocks=n_blocks, layers_per_slice=k, config=config.to_dict())
        self = cls(base_model, tokenizer, config, state)  # peft wrapping happens on the first stage
        self.dataset = ds
        self.peft_model = None
        self.__dict__["_base"] = base_model  # not a registered submodule
        self._fill_missing_stages(self, ds)
        self.peft_model.eval()
        return self

    def train(self: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``s3t_model.train(mode=True)``: nn.Module's (train/eval mode of the whole model).

        Deprecated spelling: ``S3TModel.train(base_model, tokenizer, dataset, config)`` (called on the class, with a
        base model in place of ``self``) warns with a DeprecationWarning and returns
        :meth:`from_training` ``(base_model, tokenizer, dataset, config)``.

        Example:
            >>> # s3t = S3TModel.from_training(base, tok, data, cfg)   # not S3TModel.train(base, tok, data, cfg)
        """
        if isinstance(self, S3TModel):
            with self._tree_lock():
                return nn.Module.train(self, *args, **kwargs)
        warnings.warn("S3TModel.train(...) is deprecated: use S3TModel.from_training(...)", DeprecationWarning, 2)
        return S3TModel.from_training(*((self,) if self is not None else ()), *args, **kwargs)

    # --------------------------------------------------------------------- traversal vs the background cleanup
    # delete() frees the dropped adapters' weights in a background thread, under the model lock. Every nn.Module
    # walk over the module tree that user code can start (parameters(), eval(), to(), state_dict(), apply(), ...)
    # therefore runs under that lock too, or walks a snapshot taken under it: otherwise the walk can race with the
    # freeing and fail with "dictionary changed size during iteration" (seen while evaluating right after a delete).
    def _tree_lock(self) -> Any:
        lock = self.__dict__.get("_lock")
        return lock if lock is not None else contextlib.nullcontext()

    def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True):
        with self._tree_lock():
            snapshot = list(super().named_modules(memo, prefix, remove_duplicate))
        yield from snapshot

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> S3TModel:
        with self._tree_lock():
            return super()._apply(fn, *args, **kwargs)

    def apply(self, fn: Any) -> S3TModel:
        with self._tree_lock():
            return super().apply(fn)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with self._tree_lock():
            return super().state_dict(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------ deletion
    def _validity(self) -> dict[str, bool]:
        """Adapter -> whether nothing it depends on holds a deleted uid (cached until the inventory changes)."""
        if self._valid_cache is None:
            self._valid_cache = validity(self.state)
        return self._valid_cache

    def _valid_len(self, chain: list[str | None]) -> int:
        return valid_prefix_length(chain, self._validity())

    def served(self) -> dict[int, list[str]]:
        """Live shard -> adapter chain it serves (its sequence with the longest valid prefix; ties: lowest index)."""
        return served_chains(self.state, self._validity())

    def served_prefix_lengths(self) -> dict[int, int]:
        """Shard -> length of the prefix it serves (0 = dead)."""
        live = self.served()
        return {int(j): len(live.get(int(j), [])) for j in self.state["shards"]}

    def delete(self, uids: Any, persist: bool = True) -> dict[str, Any]:
        """Forget training examples by bookkeeping: cut every sequence prefix whose data held one of ``uids``.

        Under the model lock (so it waits for a forward already running, which finishes on the old chain), the
        inventory drops every adapter trained on a deleted uid and every shard's served chain is switched to its
        longest valid prefix, in one step: every forward that starts after ``delete`` returns uses the new chains,
        and no chain that contains a dropped adapter can be activated again. When the model is bound to a folder,
        the inventory is rewritten (atomic replace, fsynced) before returning, so a restart never loads a dropped
        adapter. Freeing the dropped adapters' weights (peft ``delete_adapter``) and removing their folders happen
        afterwards in a background thread (:meth:`flush_deletions` waits for it). No training happens.

        Args:
            uids: a uid or an iterable of uids (or a Dataset with a ``uid`` column).
            persist: rewrite the inventory in the folder this model was saved to / loaded from.

        Returns:
            A report: ``deleted`` (newly deleted uids), ``already_deleted`` (no-ops), ``shards_hit``, ``cuts`` (per
            shard and sequence: prefix length ``from``/``to`` and ``stages_cut``), ``adapters_removed``,
            ``live_shards``, ``dead_shards``, ``served_prefix_lengths``, ``seconds`` (the whole call),
            ``persist_seconds`` (of that, writing the inventory; 0 when not bound or nothing changed) and
            ``cleanup_pending`` (adapters whose weights/folders are being freed in the background).

        Raises:
            KeyError: naming unknown uids (nothing is changed then).

        Example:
            >>> # report = s3t.delete(["u3"]); report["adapters_removed"]
        """
        t0 = time.perf_counter()
        if isinstance(uids, str):
            uids = [uids]
        elif hasattr(uids, "column_names"):
            uids = list(uids[UID])
        uids = [str(u) for u in uids]
        with self._lock:
            report, removed = apply_deletion(self.state, uids, self._validity())
            self._valid_cache = None
            t_persist = time.perf_counter()
            dirs = []
            if persist and self.path is not None and (report["deleted"] or removed):
                self._write_inventory(self.path)
                dirs = [self.path / ADAPTERS / name for name in removed]
            report["persist_seconds"] = time.perf_counter() - t_persist
            if removed:
                self._schedule_cleanup(removed, dirs)
            report["cleanup_pending"] = list(removed)
            report["seconds"] = time.perf_counter() - t0
            return report

    def _schedule_cleanup(self, names: list[str], dirs: list[Path]) -> None:
        """Queue freeing for the cleanup thread (started once, then kept while requests keep coming: starting a
        thread waits for it to be scheduled, which costs milliseconds on a loaded machine)."""
        import weakref

        with self._pending_lock:
            self._pending_names.update(names)
            self._pending_dirs.extend(dirs)
            self._cleanup_event.set()
            if self._cleaner is None:
                self._cleaner = threading.Thread(
                    target=S3TModel._cleanup_loop,
                    args=(weakref.ref(self), self._cleanup_event),
                    daemon=True,
                    name="s3t-cleanup",
                )
                _CLEANERS.append((self._cleaner, self._cleanup_event))
                self._cleaner.start()

    @staticmethod
    def _cleanup_loop(ref, event: threading.Event, idle_seconds: float = 30.0) -> None:
        """Free pending adapters whenever asked; exit after ``idle_seconds`` without work or once the model is gone
        (the thread holds only a weak reference to it)."""
        try:
            while True:
                woke = event.wait(idle_seconds)
                model = ref()
                if model is None:
                    return
                with model._pending_lock:
                    if not woke and not model._pending_names and not model._pending_dirs:
                        model._cleaner = None
                        return
                    event.clear()
                model.flush_deletions()
                del model
                if _EXITING.is_set():  # the interpreter is exiting: what was pending is done
                    return
        finally:
            me = threading.current_thread()
            _CLEANERS[:] = [(t, e) for t, e in _CLEANERS if t is not me]

    def flush_deletions(self) -> None:
        """Free now the weights and folders of adapters dropped by :meth:`delete` (normally a background thread
        does it); returns when nothing is pending. Must not be called while holding the model lock.

        Example:
            >>> # s3t.delete(["u3"]); s3t.flush_deletions()  # the dropped adapters are gone from memory and disk
        """
        with self._cleanup_lock:
            with self._pending_lock:
                names, dirs = set(self._pending_names), list(self._pending_dirs)
                self._pending_names.clear()
                self._pending_dirs.clear()
            for name in sorted(names):
                with self._lock:  # one adapter per lock hold: a request waits for at most one adapter's freeing
                    if name not in self.state["adapters"]:  # never free a live adapter
                        self._free_adapter(name)
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)

    def _lora_layers_of(self, name: str) -> list[nn.Module]:
        """The LoRA layers holding adapter ``name`` (an index built by one walk over the model, then kept)."""
        from peft.tuners.lora import LoraLayer

        index = self.__dict__.get("_layer_index")
        if index is None:
            index = {}
            for module in self.peft_model.modules():
                if isinstance(module, LoraLayer):
                    for key in module.lora_A:
                        index.setdefault(key, []).append(module)
            self.__dict__["_layer_index"] = index
        return index.get(name, [])

    def _free_adapter(self, name: str) -> None:
        """Remove adapter ``name``'s weights from the peft model (it must be in no served chain).

        Equivalent to peft's ``delete_adapter`` for S3T's stage adapters (LoRA layers only, never merged, no
        ``modules_to_save``), but it visits only the layers of the adapter's own blocks instead of walking the whole
        model three times: it runs under the model lock, so it must be short.
        """
        self._active_key = None
        if self.peft_model is None or name not in self.peft_model.peft_config:
            return
        if len(self.peft_model.peft_config) == 1:  # peft cannot delete its last adapter: zero it instead
            for n, p in self.peft_model.named_parameters():
                if f".{name}." in n:
                    p.data.zero_()
            return
        layers = self._lora_layers_of(name)
        del self.peft_model.peft_config[name]
        for module in layers:
            module.delete_adapter(name)
        self.__dict__["_layer_index"].pop(name, None)
        tuner = self.peft_model.base_model
        active = tuner.active_adapter if isinstance(tuner.active_adapter, list) else [tuner.active_adapter]
        if name in active:  # keep the model-level names live (the next forward activates a served chain anyway)
            rest = [a for a in active if a != name] or [next(iter(self.peft_model.peft_config))]
            tuner.active_adapter = rest
            self.peft_model.active_adapter = rest[-1]
        elif self.peft_model.active_adapter == name:
            self.peft_model.active_adapter = active[-1]

    def _drop_adapter(self, name: str, state: dict | None = None) -> None:
        (self.state if state is None else state)["adapters"].pop(name, None)
        self._free_adapter(name)

    # ------------------------------------------------------------------------------------------------ retrain
    def retrain(self, dataset: Any = None, background: bool = False, shards: list[int] | None = None):
        """Rebuild the stages cut by deletions, on their slices minus the deleted uids (exact).

        The new stages are trained as NEW adapters of the same peft model (the frozen base is shared, adapters are
        tiny): the served model keeps answering with its current prefix models, every training micro-batch holds
        the model lock (so serving calls interleave between micro-batches), and the new chains are swapped in
        atomically at the end. ``S3TConfig.retrain_copy=True`` trains on a private deep copy instead (2x memory).

        Args:
            dataset: the training examples (default: the dataset given to :meth:`from_training`; required after
                :meth:`from_pretrained`). It must hold every non-deleted uid of the slices to rebuild.
            background: run in a daemon thread and return it (``thread.join()`` waits); else block and return the
                list of new adapter names.
            shards: rebuild only these shards' cut stages (default: every shard). For multi-process retraining:
                each process retrains its share of a copy of the system, saves it, and :meth:`merge_saved` with
                ``shards=`` joins the copies (``recipes/s3t/train_s3t.py --retrain``).

        Raises:
            ValueError: no dataset, a dataset without some surviving uid of the shards to rebuild, or a shard index
                that is not one of the model's shards.

        Example:
            >>> # s3t.delete(["u3"]); s3t.retrain(shards=[0])   # shard 0 serves its full sequence again
        """
        valid_shards = sorted(int(j) for j in self.state["shards"])
        if shards is not None:
            if isinstance(shards, (int, str)):
                raise ValueError(f"shards must be a list of shard indices (valid: {valid_shards}), got {shards!r}")
            shards = list(shards)
            bad = [j for j in shards if not isinstance(j, int) or isinstance(j, bool) or j not in valid_shards]
            if bad:
                raise ValueError(f"unknown shard index(es) {bad}: valid shard indices are {valid_shards}")
        ds = load_examples(dataset) if dataset is not None else self.dataset
        if ds is None:
            raise ValueError("retrain needs the training examples: pass dataset= (they are not saved with the model)")
        if background:
            th = threading.Thread(target=self._retrain, args=(ds, shards), daemon=True)
            th.start()
            return th
        return self._retrain(ds, shards)

    def _work_view(self) -> S3TModel:
        """A second S3TModel on the SAME peft model and lock, with its own copy of the inventory (for retrain)."""
        work = self.__class__(self.peft_model, self.tokenizer, self.config_s3t, copy.deepcopy(self.state))
        work._lock = self._lock
        work.dataset = self.dataset
        work.trainings = list(self.trainings)
        work.__dict__["_base"] = unwrap(self.peft_model)
        return work

    def _retrain(self, ds, shards: list[int] | None = None) -> list[str]:
        if not self._retrain_lock.acquire(blocking=False):
            raise RuntimeError("a retrain() of this model is already running")
        try:
            self.flush_deletions()  # free the dropped adapters first (memory; and a deep copy would carry them)
            return self._retrain_locked(ds, shards)
        finally:
            self._retrain_lock.release()

    def _retrain_locked(self, ds, shards: list[int] | None = None) -> list[str]:
        by_copy = self.config_s3t.retrain_copy
        with self._lock:
            if by_copy:
                work = copy.deepcopy(self)  # private copy: serving continues on self meanwhile
                work.__dict__["_base"] = unwrap(work.peft_model)
            else:  # new adapters on the shared model; serving keeps using the old (valid) chains meanwhile
                work = self._work_view()
        have = set(ds[UID])
        deleted = set(work.state["deleted"])
        todo = None if shards is None else set(shards)
        missing = sorted(
            u
            for u, (j, _) in work.state["assignment"].items()
            if u not in deleted and u not in have and (todo is None or j in todo)
        )
        if missing:
            raise ValueError(f"the dataset lacks {len(missing)} surviving training uid(s), e.g. {missing[:3]}")
        work.state["generation"] += 1
        new: list[str] = []
        try:
            new = self._fill_missing_stages(work, ds, shards=shards)
            from peft import get_peft_model_state_dict, set_peft_model_state_dict

            with self._lock:
                if set(self.state["deleted"]) != deleted:
                    raise RuntimeError("uids were deleted during retraining: call retrain() again")
                if by_copy:
                    for name in new:
                        cfg = copy.deepcopy(work.peft_model.peft_config[name])
                        self.peft_model.add_adapter(name, cfg)
                        sd = get_peft_model_state_dict(work.peft_model, adapter_name=name)
                        set_peft_model_state_dict(self.peft_model, sd, adapter_name=name)
                for p in self.peft_model.parameters():
                    p.requires_grad_(False)
                self.state = work.state
                self.trainings.extend(work.trainings[len(self.trainings) :])
                self._valid_cache = None
                self.peft_model.eval()
                if self.path is not None:
                    self.save_pretrained(self.path)
        except BaseException:
            if not by_copy:  # drop the half-built adapters from the shared model
                with self._lock:
                    for name in set(work.state["adapters"]) - set(self.state["adapters"]):
                        self._drop_adapter(name, state=work.state)
            raise
        return new
