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

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_unlearn.data import UID, collator_for, load_examples, tokenize_any
from hf_unlearn.methods.s3t.config import S3TConfig
from hf_unlearn.models import block_index, check_causal_lm, decoder_layers, unwrap
from hf_unlearn.utils.hashing import base_fingerprint

INVENTORY = "s3t_inventory.json"
ADAPTERS = "adapters"
FORMAT_VERSION = 1


def assign_uid(uid: str, n_shards: int, n_slices: int, seed: int = 0) -> tuple[int, int]:
    """Deterministic ``(shard, slice)`` of a uid: sha256 of ``"{seed}:{uid}"``, independent of other uids.

    Example:
        >>> assign_uid("u1", 2, 3) == assign_uid("u1", 2, 3)
        True
    """
    h = int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:8], "big")
    return h % n_shards, (h // n_shards) % n_slices


def stage_seed(seed: int, shard: int, prefix: list[int] | tuple[int, ...]) -> int:
    """Seed of the stage that trains ``prefix`` of ``shard`` (the same prefix always gets the same seed)."""
    key = f"{seed}|{shard}|{','.join(map(str, prefix))}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def stage_blocks(stage: int, k: int, n_blocks: int) -> list[int]:
    """Block indices of stage ``stage`` (1-based): stage 1 is the top-most group of ``k`` blocks.

    Example:
        >>> stage_blocks(1, 2, 12), stage_blocks(2, 2, 12)
        ([10, 11], [8, 9])
    """
    hi = n_blocks - (stage - 1) * k
    return list(range(hi - k, hi))


# ------------------------------------------------------------------------------------------------ block-range helpers
class _StopForward(Exception):
    """Raised by a pre-hook once the hidden states it wanted are captured (the rest of the forward is skipped)."""


def _layers_slot(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """``(parent, attribute, ModuleList)`` of the decoder blocks of ``model`` (peft-wrapped or not).

    Found by one walk over the model, then remembered on it (every training micro-batch with the cache needs it).
    """
    slot = model.__dict__.get("_s3t_layers_slot")
    if slot is not None and slot[0]._modules.get(slot[1]) is slot[2]:
        return slot
    layers = decoder_layers(unwrap(model))
    for mod in model.modules():
        for name, child in mod.named_children():
            if child is layers:
                model.__dict__["_s3t_layers_slot"] = (mod, name, layers)
                return mod, name, layers
    raise RuntimeError("could not locate the decoder block list")


def _swap_hidden(hidden: torch.Tensor):
    def hook(module, args, kwargs):
        if args:
            return (hidden.to(args[0].dtype),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden.to(kwargs["hidden_states"].dtype)}

    return hook


@contextlib.contextmanager
def _from_block(model: nn.Module, start: int, hidden: torch.Tensor):
    """Within the context, a forward of ``model`` runs only blocks ``start..N-1``, fed ``hidden`` at block ``start``.

    The block list is temporarily cut to ``[start:]`` (the model's own forward still builds the attention mask,
    position ids and rotary/positional embeddings exactly as usual: only the token embeddings, whose output is
    replaced, are recomputed), and a forward pre-hook on block ``start`` swaps its input for ``hidden``. Blocks
    keep their identity, so gradients reach the same parameters as in the full forward.
    """
    parent, attr, layers = _layers_slot(model)
    handle = layers[start].register_forward_pre_hook(_swap_hidden(hidden), with_kwargs=True)
    parent._modules[attr] = nn.ModuleList(list(layers)[start:])
    try:
        yield
    finally:
        parent._modules[attr] = layers
        handle.remove()


def _hidden_inputs(model: nn.Module, starts: list[int], **inputs: Any) -> dict[int, torch.Tensor]:
    """Hidden states entering blocks ``starts`` in a forward of ``model`` (stopped after the highest one)."""
    layers = decoder_layers(unwrap(model))
    got: dict[int, torch.Tensor] = {}
    last = max(starts)

    def make(i):
        def hook(module, args, kwargs):
            got[i] = args[0] if args else kwargs["hidden_states"]
            if i == last:
                raise _StopForward

        return hook

    handles = [layers[i].register_forward_pre_hook(make(i), with_kwargs=True) for i in sorted(set(starts))]
    try:
        model(**inputs, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = set(starts) - set(got)
    if missing:
        raise RuntimeError(f"blocks {sorted(missing)} were never reached in the forward pass")
    return got


@contextlib.contextmanager
def _adapters_disabled(model: nn.Module):
    """Every LoRA layer computes its plain base output (no peft ``set_adapter`` side effects on requires_grad)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    before = [m._disable_adapters for m in layers]
    for m in layers:
        m._disable_adapters = True
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m._disable_adapters = b


def _lower_dropout(model: nn.Module, below: int) -> list[str]:
    """Names of dropout sources with p > 0 in blocks ``< below`` (caching would skip their randomness)."""
    bad = [
        f"{n} (p={m.p})"
        for n, m in unwrap(model).named_modules()
        if isinstance(m, nn.Dropout)
        and m.p > 0
        and (block_index(n) or 0) < below
        and block_index(n) is not None
        and "lora_dropout" not in n
    ]
    cfg = unwrap(model).config
    for key in ("attention_dropout", "attn_pdrop", "resid_pdrop", "hidden_dropout", "dropout"):
        if float(getattr(cfg, key, 0.0) or 0.0) > 0:
            bad.append(f"config.{key}={getattr(cfg, key)}")
    return bad


def _generator_dropout(module: nn.Dropout, generator: torch.Generator):
    """A ``forward`` for ``module`` that draws its mask from ``generator`` (not the global RNG)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not module.training or module.p == 0:
            return x
        if module.p == 1:
            return torch.zeros_like(x)
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1 - module.p, generator=generator)
        return x * keep / (1 - module.p)

    return forward


class _StageRNG:
    """The private random state of one stage: every draw of its training comes from here, never from the global RNG.

    * ``nn.Dropout`` modules (peft's ``lora_dropout`` and any module dropout of the base) get, for the duration of a
      micro-batch, a ``forward`` that draws its mask from this stage's own ``torch.Generator``;
    * anything else that draws on the global RNG inside a micro-batch (functional dropout such as
      ``attention_dropout``) runs on a forked global stream whose state is saved and restored around each
      micro-batch, so the global RNG of the rest of the process is neither read nor advanced by training.

    Draws made elsewhere between micro-batches (a concurrent ``generate(do_sample=True)``, ``torch.rand``) therefore
    cannot change what the stage learns. (A draw made by another thread *during* a micro-batch on the global RNG
    could still reach a functional dropout of the base; LoRA dropout is immune.)
    """

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.drops: list[nn.Dropout] | None = None  # found on the first micro-batch (one walk per stage)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        cpu = torch.Generator().manual_seed(seed ^ 0x5DEECE66)
        self.cpu_state = cpu.get_state()
        self.cuda_state = None
        if device.type == "cuda":
            self.cuda_state = torch.Generator(device=device).manual_seed(seed ^ 0x5DEECE66).get_state()

    @contextlib.contextmanager
    def active(self, model: nn.Module):
        if self.drops is None:
            self.drops = [m for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
        drops = self.drops
        for m in drops:
            m.forward = _generator_dropout(m, self.generator)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu_state)
            if devices:
                torch.cuda.set_rng_state(self.cuda_state, self.device)
            try:
                yield
            finally:
                self.cpu_state = torch.get_rng_state()
                if devices:
                    self.cuda_state = torch.cuda.get_rng_state(self.device)
                for m in drops:
                    del m.forward


def _make_stage_trainer():
    """The Trainer of one stage (a subclass of hf_unlearn's UidTrainer; built lazily to keep imports light)."""
    from hf_unlearn.training.trainer import UidTrainer

    class S3TStageTrainer(UidTrainer):
        """UidTrainer for one S3T stage on a (possibly concurrently serving) shared peft model.

        Every micro-batch runs forward+backward under the S3T model lock, after making the stage's chain active
        with only its own adapter trainable and the model in train mode. Serving calls activate their own chain
        (inference mode) and put the model in eval mode first, under the same lock, so they interleave between
        micro-batches safely.
        With a hidden-state cache the forward runs only from block ``start`` upwards, fed the cached states.
        """

        def __init__(
            self, *args: Any, s3t: S3TModel, chain: list[str], rng: _StageRNG, cache=None, start: int = 0, **kwargs
        ):
            self.s3t, self.chain, self.cache, self.start, self.rng = s3t, chain, cache, start, rng
            super().__init__(*args, **kwargs)
            if not hasattr(self.accelerator, "deepspeed_engine_wrapped"):
                # Trainer.train() starts with accelerator.free_memory(), i.e. a full gc.collect(): ~0.8 s per stage
                # in a loaded process, for a fresh accelerator that holds nothing yet. Same bookkeeping, no gc.
                self.accelerator.free_memory = self._free_memory_without_gc

        def _free_memory_without_gc(self, *objects: Any) -> list[None]:
            acc = self.accelerator
            acc._schedulers, acc._optimizers, acc._models, acc._dataloaders, acc.step = [], [], [], [], 0
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return [None] * len(objects)

        def _setup(self) -> None:
            # re-activating walks every module of the model: skip it while nothing else (a serving call, another
            # stage) touched the active adapters or the trainable flags since the previous micro-batch
            if self.s3t._active_key == (tuple(self.chain), False, self.chain[-1]):
                return
            self.s3t._activate(self.chain, inference_mode=False)
            self.s3t._freeze_all_but(self.chain[-1])
            self.s3t._active_key = (tuple(self.chain), False, self.chain[-1])

        def create_optimizer(self, *args: Any, **kwargs: Any):
            with self.s3t._lock:
                self._setup()
                return super().create_optimizer(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            with self.s3t._lock:
                self._setup()
                try:
                    with self.rng.active(self.s3t.peft_model):
                        if self.cache is None:
                            return super().training_step(model, inputs, num_items_in_batch)
                        hidden = self._cached_batch(inputs)
                        with _from_block(self.s3t.peft_model, self.start, hidden):
                            return super().training_step(model, inputs, num_items_in_batch)
                except BaseException:
                    self.s3t.peft_model.eval()
                    raise
                # no eval() here (a walk over every module per micro-batch): every serving path puts the model in
                # eval mode itself before running it, under the same lock

        def _cached_batch(self, inputs) -> torch.Tensor:
            uids = inputs[UID]
            mask = inputs["attention_mask"].bool()
            states = [self.cache[u][self.start] for u in uids]
            lengths = mask.sum(1).tolist()
            if [len(h) for h in states] != lengths:
                raise RuntimeError("cached hidden states do not match the batch's token counts")
            device = inputs["input_ids"].device
            out = torch.zeros(*mask.shape, states[0].shape[-1], dtype=states[0].dtype, device=device)
            out[mask.to(device)] = torch.cat(states).to(device)
            return out

    return S3TStageTrainer


class _TrainAccess:
    """``S3TModel.train(base, tok, data, cfg)``: deprecated alias of :meth:`S3TModel.from_training`;
    ``s3t_model.train(mode)`` on an instance is nn.Module's."""

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:

            @functools.wraps(cls.from_training)
            def train(*args: Any, **kwargs: Any) -> S3TModel:
                warnings.warn(
                    "S3TModel.train(...) is deprecated: use S3TModel.from_training(...)", DeprecationWarning, 2
                )
                return cls.from_training(*args, **kwargs)

            return train
        return functools.partial(S3TModel._locked_train, obj)


class S3TModel(nn.Module):
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
            config = S3TConfig(**{**config.__dict__, **kwargs})
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
        keys = list(ds[config.group_column] if config.group_column else ds[UID])
        assignment = {
            uid: list(assign_uid(str(key), config.n_shards, config.n_slices, config.seed))
            for uid, key in zip(ds[UID], keys)
        }
        state = {
            "format_version": FORMAT_VERSION,
            "n_blocks": n_blocks,
            "layers_per_slice": k,
            "config": config.to_dict(),
            "assignment": assignment,
            "deleted": [],
            "adapters": {},  # name -> {shard, prefix, blocks, excluded (deleted uids left out at training)}
            "shards": {
                str(j): {
                    "sequences": config.sequences_for(j, config.seed) if shards is None or j in shards else [],
                    "chains": [],
                }
                for j in range(config.n_shards)
            },
            "generation": 0,
        }
        for sh in state["shards"].values():
            sh["chains"] = [[None] * len(seq) for seq in sh["sequences"]]
        self = cls(base_model, tokenizer, config, state)  # peft wrapping happens on the first stage
        self.dataset = ds
        self.peft_model = None
        self.__dict__["_base"] = base_model  # not a registered submodule
        self._fill_missing_stages(self, ds)
        self.peft_model.eval()
        return self

    train = _TrainAccess()

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

    def _locked_train(self, mode: bool = True) -> S3TModel:
        with self._tree_lock():
            return nn.Module.train(self, mode)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> S3TModel:
        with self._tree_lock():
            return super()._apply(fn, *args, **kwargs)

    def apply(self, fn: Any) -> S3TModel:
        with self._tree_lock():
            return super().apply(fn)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with self._tree_lock():
            return super().state_dict(*args, **kwargs)

    def _stage_data(self, ds, shard: int, prefix: list[int], excluded: set[str]):
        """Indices of the stage's examples, sorted by uid (data order never depends on the dataset's order)."""
        c = self.config_s3t
        slices = set(prefix) if c.cumulative else {prefix[-1]}
        assignment = self.state["assignment"]
        rows = []
        for i, uid in enumerate(ds[UID]):
            if uid in excluded:
                continue
            if uid not in assignment:
                continue
            j, s = assignment[uid]
            if j == shard and s in slices:
                rows.append((uid, i))
        return [i for _, i in sorted(rows)]

    def _uids_of(self, shard: int, prefix: list[int]) -> set[str]:
        """Uids a stage depends on: every slice of its prefix (its own data, and its parents', which it builds on,
        also with ``cumulative=False``)."""
        slices = set(prefix)
        return {u for u, (j, s) in self.state["assignment"].items() if j == shard and s in slices}

    def _lora_config(self, blocks: list[int]):
        from hf_unlearn.training.lora import make_lora_config

        base = unwrap(self.peft_model) if self.peft_model is not None else self._base
        lora = self.config_s3t.lora
        if lora is None:
            lora = True
        elif not isinstance(lora, dict):
            lora = {k: v for k, v in lora.to_dict().items() if k not in ("layers_to_transform", "peft_type")}
        return make_lora_config(base, lora, layers_to_transform=list(blocks), inference_mode=False)

    def _add_adapter(self, name: str, blocks: list[int], seed: int) -> None:
        """Add a stage adapter targeting exactly ``blocks`` and initialise it from ``seed`` (creation-path free)."""
        from peft import get_peft_model
        from peft.tuners.lora import LoraLayer

        cfg = self._lora_config(blocks)
        self._active_key = None
        if self.peft_model is None:
            self.peft_model = get_peft_model(self._base, cfg, adapter_name=name)
        else:
            self.peft_model.add_adapter(name, cfg)
        # initialise from the stage's own generator (the global RNG is neither read nor advanced): peft's default
        # init (kaiming-uniform A, zero B) redrawn from `gen`; other init schemes run on a forked global stream
        gen = torch.Generator(device="cpu").manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _, module in sorted(self.peft_model.named_modules(), key=lambda kv: kv[0]):
                if isinstance(module, LoraLayer) and name in module.lora_A:
                    if self.__dict__.get("_layer_index") is not None:
                        self.__dict__["_layer_index"].setdefault(name, []).append(module)
                    module.reset_lora_parameters(name, cfg.init_lora_weights)
                    if cfg.init_lora_weights is True:
                        weight = module.lora_A[name].weight
                        fresh = torch.empty(weight.shape, dtype=weight.dtype)
                        nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=gen)
                        with torch.no_grad():
                            weight.copy_(fresh)
        bad = sorted({block_index(n) for n, _ in self.peft_model.named_parameters() if f".{name}." in n} - set(blocks))
        if bad:
            raise RuntimeError(f"adapter {name} reached blocks {bad} outside its group {blocks}")

    def _freeze_all_but(self, name: str) -> list[str]:
        trainable = []
        for n, p in self.peft_model.named_parameters():
            parts = n.split(".")
            ok = name in parts and ("lora_A" in parts or "lora_B" in parts)
            p.requires_grad_(ok)
            if ok:
                trainable.append(n)
        return trainable

    def _build_cache(self, ds, shard: int, starts: list[int]) -> dict[str, dict[int, torch.Tensor]]:
        """Base hidden states entering blocks ``starts`` for every non-deleted example of ``shard``.

        Examples of equal token length form one batch (no padding; at most ``cache_batch_size`` per forward), in
        uid order, over the shard's surviving examples: the cache is a pure function of the base weights and the
        surviving data, so retraining after a deletion rebuilds exactly the cache that training from scratch
        without the deleted uids builds (exactness of delete/retrain). Adapters are disabled for these forwards: the
        blocks below a stage's group are plain base blocks in every stage.
        """
        c = self.config_s3t
        rows = self._stage_data(ds, shard, list(range(c.n_slices)), set(self.state["deleted"]))
        if not rows:
            return {}
        # the transformers model itself (LoRA layers injected, disabled below): PeftModel.forward would insist on
        # a live active adapter name
        model = unwrap(self.peft_model) if self.peft_model is not None else self._base
        bad = _lower_dropout(model, max(starts))
        if bad:
            raise ValueError(f"cache_hidden_states needs a base without dropout below the trained groups: {bad[:3]}")
        tokenized = tokenize_any(ds.select(rows), self.tokenizer, max_length=c.max_length, template=c.template)
        dtype = getattr(torch, c.cache_dtype)
        device = next(model.parameters()).device
        cache: dict[str, dict[int, torch.Tensor]] = {}
        by_length: dict[int, list[tuple[str, list[int]]]] = {}
        for uid, ids in zip(tokenized[UID], tokenized["input_ids"]):
            by_length.setdefault(len(ids), []).append((uid, ids))
        size = max(1, c.batch_size)
        for length in sorted(by_length):
            group = by_length[length]
            for i in range(0, len(group), size):
                part = group[i : i + size]
                ids = torch.tensor([x for _, x in part], device=device)  # (b, length): equal lengths, no padding
                with self._lock, torch.no_grad():
                    was_training = model.training
                    model.eval()
                    ctx = _adapters_disabled(model) if self.peft_model is not None else contextlib.nullcontext()
                    with ctx:
                        got = _hidden_inputs(model, starts, input_ids=ids, attention_mask=torch.ones_like(ids))
                    model.train(was_training)
                    self._active_key = None
                for r, (uid, _) in enumerate(part):
                    cache[uid] = {b: h[r].detach().to(dtype=dtype).clone() for b, h in got.items()}
        return cache

    def _train_stage(
        self, ds, shard: int, seq_idx: int, prefix: list[int], parents: list[str], cache: dict | None = None
    ) -> str:
        """Train the adapter of ``prefix`` on top of the frozen ``parents`` (its stages 1..t-1).

        With ``cache`` (uid -> block -> hidden states entering that block), forward/backward start at the stage's
        lowest block. The model lock is held while the model is touched, so the model may serve meanwhile.
        """
        from hf_unlearn.training.finetune import training_arguments

        c = self.config_s3t
        t = len(prefix)
        gen = self.state["generation"]
        name = f"s{shard}_q{seq_idx}_t{t}" + (f"_g{gen}" if gen else "")
        blocks = stage_blocks(t, self.state["layers_per_slice"], self.state["n_blocks"])
        seed = stage_seed(c.seed, shard, prefix)
        deleted = set(self.state["deleted"])
        excluded = sorted(deleted & self._uids_of(shard, prefix))
        rows = self._stage_data(ds, shard, prefix, deleted)
        t0 = time.perf_counter()
        with self._lock:
            self._add_adapter(name, blocks, seed)
            self._activate(parents + [name], inference_mode=False)  # marks them all trainable: freeze below
            trainable = self._freeze_all_but(name)
            self.peft_model.eval()
        bad = [n for n in trainable if block_index(n) not in blocks]
        if bad:
            raise RuntimeError(f"stage {name} would train parameters outside blocks {blocks}: {bad[:3]}")
        steps = 0
        start = min(blocks)
        use_cache = cache is not None and start > 0
        if rows:
            tokenized = tokenize_any(ds.select(rows), self.tokenizer, max_length=c.max_length, template=c.template)
            scratch = c.output_dir or tempfile.mkdtemp(prefix="hf_unlearn_s3t_")
            try:
                args = training_arguments(
                    os.path.join(scratch, name),
                    num_epochs=c.num_epochs,
                    learning_rate=c.learning_rate,
                    batch_size=c.batch_size,
                    seed=seed,
                    max_steps=c.max_steps,
                    gradient_accumulation_steps=c.gradient_accumulation_steps,
                    weight_decay=c.weight_decay,
                    warmup_ratio=c.warmup_ratio,
                    lr_scheduler_type=c.lr_scheduler_type,
                    max_grad_norm=c.max_grad_norm,
                    logging_steps=c.logging_steps,
                    disable_tqdm=c.disable_tqdm,
                    bf16=c.bf16,
                )
                trainer = _make_stage_trainer()(
                    model=self.peft_model,
                    args=args,
                    train_dataset=tokenized,
                    data_collator=collator_for(self.tokenizer),
                    s3t=self,
                    chain=parents + [name],
                    cache=cache if use_cache else None,
                    start=start,
                    rng=_StageRNG(seed, next(self.peft_model.parameters()).device),
                )
                steps = int(trainer.train().global_step)
            finally:
                if c.output_dir is None:
                    shutil.rmtree(scratch, ignore_errors=True)
        with self._lock:
            self._active_key = None
            for n, p in self.peft_model.named_parameters():
                if f".{name}." in n:
                    p.requires_grad_(False)
            self.peft_model.eval()
        self.state["adapters"][name] = {
            "shard": shard,
            "prefix": list(prefix),
            "blocks": blocks,
            "excluded": excluded,
            "seed": seed,
            "n_examples": len(rows),
        }
        self.trainings.append(
            {
                "adapter": name,
                "shard": shard,
                "prefix": list(prefix),
                "n_examples": len(rows),
                "steps": steps,
                "seconds": time.perf_counter() - t0,
                "cached": use_cache,
            }
        )
        return name

    @staticmethod
    def _fill_missing_stages(target: S3TModel, ds) -> list[str]:
        """Train every stage that has no valid adapter (each distinct prefix once) into ``target``.

        With ``cache_hidden_states`` the hidden states entering every stage group are computed once per example
        of a shard before its first missing stage, shared by all its sequences' stages, and freed after the shard.
        """
        trained = []
        valid = target._validity()
        c = target.config_s3t
        n_blocks, k = target.state["n_blocks"], target.state["layers_per_slice"]
        for j_str, sh in target.state["shards"].items():
            j = int(j_str)
            built: dict[tuple[int, ...], str] = {}
            for q, chain in enumerate(sh["chains"]):
                for t, name in enumerate(chain):
                    if name is not None and valid.get(name, False):
                        built.setdefault(tuple(sh["sequences"][q][: t + 1]), name)
            cache = None
            for q, seq in enumerate(sh["sequences"]):
                chain = sh["chains"][q]
                for t in range(len(seq)):
                    prefix = tuple(seq[: t + 1])
                    if prefix not in built:
                        if c.cache_hidden_states and cache is None:
                            todo = {
                                len(s[:u])
                                for s in sh["sequences"]
                                for u in range(1, len(s) + 1)
                                if tuple(s[:u]) not in built
                            }
                            starts = sorted({n_blocks - u * k for u in todo} - {0})
                            cache = target._build_cache(ds, j, starts) if starts else {}
                        built[prefix] = target._train_stage(ds, j, q, list(prefix), chain[:t], cache=cache)
                        trained.append(built[prefix])
                        target._valid_cache = None
                    chain[t] = built[prefix]
            del cache  # freed after the shard
        target._valid_cache = None
        return trained

    # ------------------------------------------------------------------------------------------------ deletion
    def _validity(self) -> dict[str, bool]:
        """Adapter -> whether nothing it depends on holds a deleted uid.

        A stage depends on the slices of its whole prefix: its own training data, and (through the frozen parent
        stages it was trained on top of) its parents' data. With ``cumulative=False`` it trains on slice pi(t) only,
        but still on top of stages 1..t-1, so a deletion in any slice of the prefix invalidates it too.
        """
        if self._valid_cache is None:
            deleted = set(self.state["deleted"])
            by_shard_slice: dict[tuple[int, int], set[str]] = {}
            assignment = self.state["assignment"]
            for u in deleted:
                j, s = assignment[u]
                by_shard_slice.setdefault((j, s), set()).add(u)
            out = {}
            for name, a in self.state["adapters"].items():
                slices = a["prefix"]
                hit = set().union(*(by_shard_slice.get((a["shard"], s), set()) for s in slices))
                out[name] = hit <= set(a["excluded"])
            self._valid_cache = out
        return self._valid_cache

    def _valid_len(self, chain: list[str | None]) -> int:
        valid = self._validity()
        n = 0
        for name in chain:
            if name is None or not valid.get(name, False):
                break
            n += 1
        return n

    def served(self) -> dict[int, list[str]]:
        """Live shard -> adapter chain it serves (its sequence with the longest valid prefix; ties: lowest index)."""
        out = {}
        for j_str, sh in self.state["shards"].items():
            best: list[str] = []
            for chain in sh["chains"]:
                n = self._valid_len(chain)
                if n > len(best):
                    best = list(chain[:n])
            if best:
                out[int(j_str)] = best
        return out

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
            assignment = self.state["assignment"]
            unknown = sorted({u for u in uids if u not in assignment})
            if unknown:
                raise KeyError(f"unknown uid(s) {unknown[:10]} ({len(unknown)} in all): not in the training data")
            deleted = set(self.state["deleted"])
            new = list(dict.fromkeys(u for u in uids if u not in deleted))
            already = sorted({u for u in uids if u in deleted})
            before = {j: [self._valid_len(c) for c in sh["chains"]] for j, sh in self.state["shards"].items()}
            self.state["deleted"] = sorted(deleted | set(new))
            self._valid_cache = None
            valid = self._validity()
            removed = [n for n, ok in valid.items() if not ok]
            cuts = []
            for j, sh in self.state["shards"].items():
                for q, chain in enumerate(sh["chains"]):
                    n = self._valid_len(chain)
                    if n != before[j][q]:
                        cuts.append(
                            {
                                "shard": int(j),
                                "sequence": q,
                                "from": before[j][q],
                                "to": n,
                                "stages_cut": [c for c in chain[n : before[j][q]] if c is not None],
                            }
                        )
                    sh["chains"][q] = [c if c is not None and valid.get(c, False) else None for c in chain]
            for name in removed:  # out of the inventory now: no chain can name it; its weights are freed later
                self.state["adapters"].pop(name, None)
            self._valid_cache = None
            served = self.served()
            report = {
                "deleted": new,
                "already_deleted": already,
                "shards_hit": sorted({assignment[u][0] for u in new}),
                "cuts": cuts,
                "adapters_removed": removed,
                "live_shards": sorted(served),
                "dead_shards": sorted(int(j) for j in self.state["shards"] if int(j) not in served),
                "served_prefix_lengths": {j: len(c) for j, c in served.items()},
            }
            t_persist = time.perf_counter()
            dirs = []
            if persist and self.path is not None and (new or removed):
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
                self._cleaner.start()

    @staticmethod
    def _cleanup_loop(ref, event: threading.Event, idle_seconds: float = 30.0) -> None:
        """Free pending adapters whenever asked; exit after ``idle_seconds`` without work or once the model is gone
        (the thread holds only a weak reference to it)."""
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
    def retrain(self, dataset: Any = None, background: bool = False):
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
        """
        ds = load_examples(dataset) if dataset is not None else self.dataset
        if ds is None:
            raise ValueError("retrain needs the training examples: pass dataset= (they are not saved with the model)")
        if background:
            th = threading.Thread(target=self._retrain, args=(ds,), daemon=True)
            th.start()
            return th
        return self._retrain(ds)

    def _work_view(self) -> S3TModel:
        """A second S3TModel on the SAME peft model and lock, with its own copy of the inventory (for retrain)."""
        work = self.__class__(self.peft_model, self.tokenizer, self.config_s3t, copy.deepcopy(self.state))
        work._lock = self._lock
        work.dataset = self.dataset
        work.trainings = list(self.trainings)
        work.__dict__["_base"] = unwrap(self.peft_model)
        return work

    def _retrain(self, ds) -> list[str]:
        if not self._retrain_lock.acquire(blocking=False):
            raise RuntimeError("a retrain() of this model is already running")
        try:
            self.flush_deletions()  # free the dropped adapters first (memory; and a deep copy would carry them)
            return self._retrain_locked(ds)
        finally:
            self._retrain_lock.release()

    def _retrain_locked(self, ds) -> list[str]:
        by_copy = self.config_s3t.retrain_copy
        with self._lock:
            if by_copy:
                work = copy.deepcopy(self)  # private copy: serving continues on self meanwhile
                work.__dict__["_base"] = unwrap(work.peft_model)
            else:  # new adapters on the shared model; serving keeps using the old (valid) chains meanwhile
                work = self._work_view()
        have = set(ds[UID])
        deleted = set(work.state["deleted"])
        missing = sorted(u for u in work.state["assignment"] if u not in deleted and u not in have)
        if missing:
            raise ValueError(f"the dataset lacks {len(missing)} surviving training uid(s), e.g. {missing[:3]}")
        work.state["generation"] += 1
        new: list[str] = []
        try:
            new = self._fill_missing_stages(work, ds)
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

    # ------------------------------------------------------------------------------------------------ inference
    def _activate(self, chain: list[str], inference_mode: bool = True) -> None:
        """Make exactly ``chain`` active (peft sums them). PeftModel.set_adapter takes one name: use the LoraModel."""
        self._active_key = None
        self.peft_model.base_model.set_adapter(list(chain), inference_mode=inference_mode)
        self.peft_model.active_adapter = chain[-1]  # PeftModel's own (single) name must stay a live adapter

    def get_base_model(self) -> nn.Module:
        """The underlying transformers model (with the LoRA layers injected); lets ``check_causal_lm`` accept us."""
        return unwrap(self.peft_model)

    @property
    def device(self) -> torch.device:
        return next(self.peft_model.parameters()).device

    def shared_start(self, served: dict[int, list[str]] | None = None) -> int:
        """Lowest block index carrying an active adapter in any live chain (blocks below it are pure base).

        0 when a single shard is live (nothing to share) or some chain reaches block 0.
        """
        served = self.served() if served is None else served
        if len(served) < 2:
            return 0
        return min(
            min(b for name in chain for b in self.state["adapters"][name]["blocks"]) for chain in served.values()
        )

    def live_shards(self) -> list[int]:
        return sorted(self.served())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        ensemble: str | None = None,
        share: bool | None = None,
        **kwargs: Any,
    ):
        """Mean over live shards of the logits (or log-probs: ``ensemble="logprobs"``); loss when ``labels``.

        With several live shards and ``share`` (default: ``S3TConfig.shared_lower_blocks``), the base blocks
        below the lowest active stage group of all live chains run once and each shard branches from there
        (bitwise equal to ``share=False``, which runs every shard's full model).

        Raises:
            RuntimeError: when every shard is dead (all sequences cut to nothing): retrain first.
        """
        kwargs.pop("use_cache", None)  # the ensemble forward never caches (generation re-runs the prefix)
        mode = ensemble or self.config_s3t.ensemble
        with self._lock:
            served = self.served()
            if not served:
                raise RuntimeError(
                    "every S3T shard is dead (all training sequences were cut by deletions): call retrain()"
                )
            if self.peft_model.training:  # serving is always in eval mode (dropout off)
                self.peft_model.eval()
            total = None
            shards = sorted(served)
            start = self.shared_start(served) if share is None or share else 0
            if share is None and not self.config_s3t.shared_lower_blocks:
                start = 0
            hidden = None
            if start > 0:  # base blocks below every live chain: run them once
                self._activate(served[shards[0]])
                inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
                hidden = _hidden_inputs(self.peft_model, [start], **inputs)[start]
            for j in shards:
                self._activate(served[j])
                ctx = _from_block(self.peft_model, start, hidden) if hidden is not None else contextlib.nullcontext()
                with ctx:
                    out = self.peft_model(
                        input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs
                    )
                x = out.logits.float()
                if mode == "logprobs":
                    x = torch.log_softmax(x, dim=-1)
                total = x if total is None else total + x
            logits = total / len(served)
        loss = None
        if labels is not None:
            from hf_unlearn.training.losses import batch_nll

            loss = batch_nll(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def generate(self, *args: Any, **kwargs: Any):
        """``generate`` of the served model: the shard's own PeftModel when one shard is live, else the ensemble.

        With several live shards the ensemble runs without a KV cache (every step re-encodes the sequence).
        """
        with self._lock:
            served = self.served()
            if not served:
                raise RuntimeError("every S3T shard is dead: nothing to generate with; call retrain()")
            if len(served) == 1:
                self._activate(next(iter(served.values())))
                if self.peft_model.training:  # serving is always in eval mode (dropout off)
                    self.peft_model.eval()
                return self.peft_model.generate(*args, **kwargs)
            kwargs.setdefault("use_cache", False)
            return S3TEnsembleForCausalLM(self).generate(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------ save / load
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
        merged: dict[str, Any] | None = None
        for part in map(Path, parts):
            st = json.loads((part / INVENTORY).read_text())
            if merged is None:
                merged = copy.deepcopy(st)
                merged["adapters"] = {}
                for sh in merged["shards"].values():
                    sh["sequences"], sh["chains"] = [], []
            elif st["assignment"] != merged["assignment"] or st["config"] != merged["config"]:
                raise ValueError(f"{part} was trained with another config or dataset than {parts[0]}")
            for j, sh in st["shards"].items():
                if not sh["sequences"]:
                    continue
                if merged["shards"][j]["sequences"]:
                    raise ValueError(f"shard {j} was trained in two parts")
                merged["shards"][j] = sh
                for chain in sh["chains"]:
                    for name in chain:
                        if name is not None and name not in merged["adapters"]:
                            merged["adapters"][name] = st["adapters"][name]
                            shutil.copytree(part / ADAPTERS / name, out / ADAPTERS / name, dirs_exist_ok=True)
            if (part / "tokenizer").exists() and not (out / "tokenizer").exists():
                shutil.copytree(part / "tokenizer", out / "tokenizer")
        if merged is None:
            raise ValueError("merge_saved needs at least one part")
        merged["deleted"] = sorted(set(merged["deleted"]))
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


class S3TEnsembleForCausalLM(PreTrainedModel, GenerationMixin):
    """A thin causal-LM view of an S3T ensemble so ``generate`` works with several live shards.

    No KV cache: every decoding step re-encodes the whole sequence through each live shard.
    """

    base_model_prefix = "s3t"
    # attention runs inside the wrapped shards: accept whatever implementation their config names
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, s3t: S3TModel):
        base = unwrap(s3t.peft_model)
        super().__init__(base.config)
        self.s3t = s3t
        self.generation_config = copy.deepcopy(base.generation_config)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        out = self.s3t(input_ids=input_ids, attention_mask=attention_mask)
        return CausalLMOutputWithPast(logits=out.logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def get_output_embeddings(self):
        return unwrap(self.s3t.peft_model).get_output_embeddings()
