"""S3T stage training: the block-range hooks, the per-stage RNG, the stage Trainer, and the training half of
:class:`~hf_unlearn.methods.s3t.model.S3TModel` (adding, initialising, training and caching stage adapters).

A stage ``t`` of a sequence trains ONLY its own adapter (blocks :func:`stage_blocks`), with adapters 1..t-1 of the
same prefix active and frozen, on the (cumulative) slices of the prefix, with a fresh Trainer/optimizer seeded from
a hash of (seed, shard, prefix) and every random draw taken from its own generators (:class:`_StageRNG`). A stage
is therefore a pure function of (base weights, prefix, its data). With ``cache_hidden_states`` the base hidden
states entering each stage group are computed once per shard and the forward/backward starts at the stage's lowest
block (:func:`_from_block`).

Example:
    >>> from hf_unlearn.methods.s3t.stages import S3TStageTrainer
    >>> S3TStageTrainer.__mro__[1].__name__
    'UidTrainer'
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_unlearn.data import UID, collator_for, tokenize_any
from hf_unlearn.methods.s3t.bookkeeping import prefix_uids, stage_blocks, stage_rows, stage_seed
from hf_unlearn.models import block_index, decoder_layers, unwrap
from hf_unlearn.training.trainer import UidTrainer

if TYPE_CHECKING:
    from hf_unlearn.methods.s3t.model import S3TModel


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


# ------------------------------------------------------------------------------------------------ the stage Trainer
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


# ------------------------------------------------------------------------------------------------ stage training
class StageTrainingMixin:
    """The stage-training half of :class:`S3TModel`: build every missing stage of every shard's sequences."""

    def _stage_data(self, ds, shard: int, prefix: list[int], excluded: set[str]) -> list[int]:
        """Indices of the stage's examples, sorted by uid (data order never depends on the dataset's order)."""
        return stage_rows(ds[UID], self.state["assignment"], shard, prefix, excluded, self.config_s3t.cumulative)

    def _uids_of(self, shard: int, prefix: list[int]) -> set[str]:
        """Uids a stage depends on (see :func:`~hf_unlearn.methods.s3t.bookkeeping.prefix_uids`)."""
        return prefix_uids(self.state["assignment"], shard, prefix)

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
                # the whole S3TConfig is the stage's TrainingArguments: only the seed is per stage
                args = c.training_arguments(os.path.join(scratch, name), seed=seed, data_seed=seed)
                trainer = S3TStageTrainer(
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
    def _fill_missing_stages(target: S3TModel, ds, shards: list[int] | None = None) -> list[str]:
        """Train every stage that has no valid adapter (each distinct prefix once) into ``target``; with ``shards``,
        only those of these shards.

        With ``cache_hidden_states`` the hidden states entering every stage group are computed once per example
        of a shard before its first missing stage, shared by all its sequences' stages, and freed after the shard.
        """
        trained = []
        valid = target._validity()
        c = target.config_s3t
        n_blocks, k = target.state["n_blocks"], target.state["layers_per_slice"]
        for j_str, sh in target.state["shards"].items():
            j = int(j_str)
            if shards is not None and j not in shards:
                continue
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
