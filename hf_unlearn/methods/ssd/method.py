"""Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024, arXiv 2308.07707) for causal LMs.

The algorithm, top-down (faithful to the official ``ssd.py``):

1. ``I_D = compute_importance(model, loader over the whole training data D, unshuffled)`` and
   ``I_F = compute_importance(model, loader over the forget set F)``, same batch size: for every parameter, the mean
   over mini-batches of (gradient of the mini-batch MEAN loss)^2, in eval mode, fp32 accumulators.
2. ``dampen(model, I_D, I_F, alpha, lambda_)``: per tensor, ``selected = I_F > alpha * I_D`` (strict),
   ``beta = min(lambda_ * I_D / I_F, 1)``, ``theta[selected] *= beta[selected]``. No epsilon; a parameter with no
   gradient has I_F = 0 and is never selected.

Around it: ``target="adapter"`` (only the LoRA parameters of a PeftModel), the I_D cache (:mod:`.cache`),
per-tensor streaming of the squared gradients (a post-accumulate-grad hook folds each gradient into its map and
frees it, so a full set of gradients never lives at once), optional CPU offload of the maps, and the opt-in
variants: per-sample squared gradients, LFSSD (label-free) and automatic alpha.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets

from hf_unlearn.data import UID, collator_for, column, encode_examples, load_examples, tokenize_any
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.ssd.cache import ImportanceCache, cache_key, data_fingerprint, weights_sha256
from hf_unlearn.methods.ssd.config import SSDConfig, _check_positive_finite
from hf_unlearn.registry import Paper
from hf_unlearn.training.lora import is_peft_model
from hf_unlearn.training.losses import batch_nll
from hf_unlearn.utils.hashing import weights_hash

logger = logging.getLogger("hf_unlearn")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------------------------
# 1. Which parameters SSD looks at
# --------------------------------------------------------------------------------------------------------------
def target_parameters(
    model: torch.nn.Module,
    target: str = "full",
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> dict[str, torch.nn.Parameter]:
    """The parameters SSD computes importances for and may dampen, by name (``named_parameters`` names).

    Args:
        model: a causal LM, or a PeftModel for ``target="adapter"``.
        target: ``"full"`` (every parameter; tied weights appear once) or ``"adapter"`` (the LoRA parameters of the
            active adapter(s) of a PeftModel).
        include: regexes; when given, only names matching one of them (``re.search``) are kept.
        exclude: regexes; names matching one of them are dropped.

    Raises:
        ValueError: unknown target, ``"adapter"`` on a model without peft adapters, or nothing left to target.

    Example:
        >>> lin = torch.nn.Linear(2, 2)
        >>> sorted(target_parameters(lin, exclude=["bias"]))
        ['weight']
    """
    if target == "full":
        named = dict(model.named_parameters())
    elif target == "adapter":
        if not is_peft_model(model):
            raise ValueError(
                f"target='adapter' needs a peft PeftModel with LoRA adapters, got {type(model).__name__}; "
                "use target='full' for a plain model"
            )
        active = model.active_adapters if hasattr(model, "active_adapters") else [model.active_adapter]
        active = [active] if isinstance(active, str) else list(active)
        pat = re.compile(r"\.lora_[A-Za-z_]+\.(" + "|".join(re.escape(a) for a in active) + r")(\.|$)")
        named = {n: p for n, p in model.named_parameters() if pat.search(n)}
        if not named:
            raise ValueError(f"the PeftModel has no LoRA parameters for its active adapter(s) {active}")
    else:
        raise ValueError(f"target must be one of ['full', 'adapter'], got {target!r}")
    inc = [re.compile(p) for p in (include or [])]
    exc = [re.compile(p) for p in (exclude or [])]
    out = {
        n: p
        for n, p in named.items()
        if (not inc or any(r.search(n) for r in inc)) and not any(r.search(n) for r in exc)
    }
    if not out:
        raise ValueError(
            f"no parameter left to target (target={target!r}, include={list(include or [])}, "
            f"exclude={list(exclude or [])}); e.g. names: {list(named)[:5]}"
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# 2. The losses whose gradients define importance
# --------------------------------------------------------------------------------------------------------------
def label_free_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LFSSD's loss: mean over label positions of the squared L2 norm of the logits (no target token used).

    The positions are those the supervised loss scores: logits ``[:, t]`` where ``labels[:, t + 1] != -100``.
    """
    mask = labels[:, 1:].ne(-100)  # [B, T-1]
    sq = logits[:, :-1, :].float().pow(2).sum(-1)  # [B, T-1]
    return (sq * mask).sum() / mask.sum().clamp(min=1)


def _loss_fn(label_free: bool) -> LossFn:
    return label_free_loss if label_free else batch_nll  # batch_nll: token mean over the batch's label tokens


# --------------------------------------------------------------------------------------------------------------
# 3. Importance
# --------------------------------------------------------------------------------------------------------------
def compute_importance(
    model: torch.nn.Module,
    dataloader: Iterable[dict[str, Any]],
    target: str = "full",
    mode: str = "batch_sq",
    label_free: bool = False,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    offload: bool = False,
    per_sample_chunk: int = 8,
    distributed: bool | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal importance of each targeted parameter entry over a data loader.

    Under several processes (``accelerate launch`` / ``torchrun``; ``distributed=None`` detects it) every process
    iterates the SAME loader but runs the forward/backward of whole batches ``i`` with ``i % num_processes == rank``
    only; the per-process sums and counts are then all-reduced and divided by the global count. The batches are
    those of one process, so the result equals the single-process one up to float summation order, and every process
    returns the same maps. Every process must call this function (it is a collective).

    ``mode="batch_sq"`` (official): mean over mini-batches of (grad of the batch-mean loss)^2.
    ``mode="per_sample_sq"``: mean over examples of (grad of the example's loss)^2 (empirical Fisher).
    With ``label_free=True`` the loss is :func:`label_free_loss` and ``|grad|`` replaces ``grad^2`` (LFSSD).
    The model runs in eval mode; only the targeted parameters get gradients (``requires_grad`` and the train/eval
    mode are restored afterwards; their ``.grad`` is left None). Accumulators are fp32.

    Args:
        model: a causal LM (a PeftModel for ``target="adapter"``).
        dataloader: yields collated batches with ``input_ids``, ``attention_mask``, ``labels`` (-100 = ignored);
            extra keys (``uid``) are ignored.
        target: ``"full"`` or ``"adapter"`` (see :func:`target_parameters`).
        mode: ``"batch_sq"`` or ``"per_sample_sq"``.
        label_free: LFSSD loss and ``|grad|`` accumulation.
        include, exclude: parameter-name regexes (see :func:`target_parameters`).
        offload: keep the maps on CPU (each gradient is moved there as soon as it is ready).
        per_sample_chunk: examples per vmap call in ``"per_sample_sq"``.
        distributed: shard the batches over the processes of the accelerate process group (None: when there is
            more than one; False: every process computes everything itself).
        stats: a dict filled with ``batches_local`` (batches this process ran), ``batches_total``, ``count`` (the
            global denominator) and ``num_processes``.

    Returns:
        ``{parameter name: fp32 tensor of the parameter's shape}``.

    Raises:
        ValueError: an empty loader, an unknown mode/target.

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> m, tok = tiny_causal_lm("llama", texts=["a b c"] * 4, vocab_size=260, num_layers=1, hidden_size=16)
        >>> batch = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
        ...          "labels": torch.tensor([[-100, 6, 7]])}
        >>> imp = compute_importance(m, [batch])
        >>> imp["lm_head.weight"].shape == m.lm_head.weight.shape
        True
    """
    if mode not in ("batch_sq", "per_sample_sq"):
        raise ValueError(f"mode must be one of ['batch_sq', 'per_sample_sq'], got {mode!r}")
    named = target_parameters(model, target, include, exclude)
    state = process_state() if distributed is not False else None
    world, rank = (state.num_processes, state.process_index) if state is not None else (1, 0)
    if distributed and world == 1:
        logger.info("compute_importance(distributed=True) in a single process: nothing to shard")
    device = next(model.parameters()).device
    acc_device = torch.device("cpu") if offload else None
    maps = {n: torch.zeros(p.shape, dtype=torch.float32, device=acc_device or p.device) for n, p in named.items()}
    fold = torch.abs if label_free else torch.square  # LFSSD accumulates |grad|, SSD grad^2
    loss_fn = _loss_fn(label_free)

    was_training = model.training
    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    ids_of = {id(p): n for n, p in named.items()}
    handles = []
    count = 0
    local_batches = total_batches = 0
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(id(p) in ids_of)
            p.grad = None if id(p) in ids_of else p.grad

        # Streaming: fold each gradient into its map as soon as autograd has accumulated it, then free it.
        def _hook(p: torch.Tensor) -> None:
            g = fold(p.grad.float())
            maps[ids_of[id(p)]].add_(g.to(maps[ids_of[id(p)]].device))
            p.grad = None

        handles = [p.register_post_accumulate_grad_hook(_hook) for p in named.values()]
        use_vmap = True
        for i_batch, batch in enumerate(dataloader):
            total_batches += 1
            if i_batch % world != rank:
                continue  # another process's batch: whole batches are distributed, never split
            local_batches += 1
            batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels") if k in batch}
            if mode == "batch_sq":
                _forward_loss(model, batch, loss_fn).backward()  # the hooks fold the gradients
                count += 1
                continue
            n = batch["input_ids"].shape[0]
            for start in range(0, n, per_sample_chunk):
                chunk = {k: v[start : start + per_sample_chunk] for k, v in batch.items()}
                if use_vmap:
                    try:
                        _per_sample_vmap(model, named, chunk, loss_fn, fold, maps)
                    except Exception as err:  # noqa: BLE001 - model code vmap cannot trace: same math, one by one
                        use_vmap = False
                        logger.warning("per-sample gradients: vmap failed (%s); falling back to a loop", err)
                if not use_vmap:
                    for i in range(chunk["input_ids"].shape[0]):
                        one = {k: v[i : i + 1] for k, v in chunk.items()}
                        _forward_loss(model, one, loss_fn).backward()
            count += n
    finally:
        for h in handles:
            h.remove()
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
        for p in named.values():
            p.grad = None
        model.train(was_training)
    if world > 1:
        count = _all_reduce_sum(maps, count, state)
    if stats is not None:
        stats.update(batches_local=local_batches, batches_total=total_batches, count=count, num_processes=world)
    if count == 0:
        raise ValueError("the data loader is empty: importance needs at least one batch")
    for m in maps.values():
        m.div_(count)  # mean over mini-batches (batch_sq) or examples (per_sample_sq)
    return maps


class _SwappedIn:
    """Context manager: write ``{name: (flat indices, values)}`` into the parameters, restore the current values on
    exit (bit-exact)."""

    def __init__(self, model: torch.nn.Module, values: dict[str, tuple[torch.Tensor, torch.Tensor]] | None):
        self.model, self.values, self.saved = model, values or {}, {}

    def __enter__(self) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, (idx, val) in self.values.items():
                flat = params[name].data.view(-1)
                idx = idx.to(flat.device)
                self.saved[name] = (idx, flat[idx].clone())
                flat[idx] = val.to(flat.device, flat.dtype)

    def __exit__(self, *exc: Any) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, (idx, val) in self.saved.items():
                params[name].data.view(-1)[idx] = val


def _merge_anchor(
    old: dict[str, tuple[torch.Tensor, torch.Tensor]], new: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Union of two ``{name: (indices, original values)}`` records; ``old`` (earlier requests) wins on overlaps."""
    out = dict(old)
    for name, (idx, val) in new.items():
        if name in out:
            o_idx, o_val = out[name]
            fresh = ~torch.isin(idx, o_idx)
            out[name] = (torch.cat([o_idx, idx[fresh]]), torch.cat([o_val, val[fresh]]))
        else:
            out[name] = (idx, val)
    return out


def process_state() -> Any:
    """accelerate's ``PartialState``, created with ``cpu=True`` when there is no GPU (or ``ACCELERATE_USE_CPU`` is
    set): on CPU a plain ``PartialState()`` does not join the gloo process group that ``accelerate launch`` /
    ``torchrun`` prepared, and reports one process."""
    import os

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = multi and (parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    return PartialState(cpu=True) if cpu else PartialState()


def _all_reduce_sum(maps: dict[str, torch.Tensor], count: int, state: Any) -> int:
    """Sum every map and the count over the processes, in place (maps move to the process device for the
    collective when the backend needs it, e.g. nccl with offloaded maps). Returns the global count."""
    import torch.distributed as dist

    comm_device = state.device if "nccl" in str(dist.get_backend()) else torch.device("cpu")
    for m in maps.values():
        t = m if m.device == comm_device else m.to(comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if t is not m:
            m.copy_(t)
    c = torch.tensor([count], dtype=torch.float64, device=comm_device)
    dist.all_reduce(c, op=dist.ReduceOp.SUM)
    return int(c.item())


def _forward_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], loss_fn: LossFn) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
    return loss_fn(out.logits, batch["labels"])


def _per_sample_vmap(
    model: torch.nn.Module,
    named: dict[str, torch.nn.Parameter],
    chunk: dict[str, torch.Tensor],
    loss_fn: LossFn,
    fold: Callable[[torch.Tensor], torch.Tensor],
    maps: dict[str, torch.Tensor],
) -> None:
    """Add the per-example folded gradients of ``chunk`` to ``maps`` (torch.func: vmap over grad)."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in named.items()}

    mask = chunk.get("attention_mask")
    if mask is not None and bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("per-sample vmap needs right padding")  # caught: the caller falls back to a loop

    # No attention mask inside vmap (transformers builds it with data-dependent control flow vmap cannot trace).
    # With right padding this is exact: under causal attention the real tokens never see the padding after them,
    # their positions are 0..len-1 either way, and the padding carries no label.
    def example_loss(prm, ids, labels):  # one example: ids/labels [T] -> [1, T]
        out = functional_call(model, prm, args=(), kwargs={"input_ids": ids[None], "use_cache": False})
        return loss_fn(out.logits, labels[None])

    with warnings.catch_warnings():  # "no batching rule for sdpa on CPU": a speed note, not an error
        warnings.filterwarnings("ignore", message=".*performance drop.*")
        grads = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, chunk["input_ids"], chunk["labels"])
    for n, g in grads.items():  # g: [chunk, *param.shape]
        maps[n].add_(fold(g.float()).sum(0).to(maps[n].device))


# --------------------------------------------------------------------------------------------------------------
# 4. Dampening
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def dampen(
    model: torch.nn.Module,
    importance_full: dict[str, torch.Tensor],
    importance_forget: dict[str, torch.Tensor],
    alpha: float,
    lambda_: float,
    previous: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, int]:
    """Dampen, in place, the entries far more important to the forget set than to the whole data.

    Per tensor: ``selected = I_F > alpha * I_D`` (strict), ``beta = min(lambda_ * I_D / I_F, 1)``,
    ``theta[selected] *= beta[selected]``; every other entry stays bit-identical. No epsilon: entries with
    ``I_F = 0`` (no gradient) are never selected; ``I_D = 0 < I_F`` gives ``beta = 0``. Parameters missing from
    either map are not touched. One tensor at a time (maps may live on CPU; each is moved to its parameter's
    device for its turn).

    Args:
        model: the model to modify (names as in ``model.named_parameters()``).
        importance_full: I_D, name -> tensor of the parameter's shape.
        importance_forget: I_F, same keys and shapes.
        alpha: selection threshold (> 0).
        lambda_: dampening constant (> 0).
        previous: when given, filled with ``{name: (flat indices, values before dampening)}`` of the selected
            entries (what the ``anchored`` cache policy keeps to restore the original weights).

    Returns:
        ``{parameter name: number of dampened entries}`` for every parameter present in both maps.

    Raises:
        ValueError: alpha/lambda_ not finite and > 0, or a map whose shape differs from its parameter.
        KeyError: map names that are not parameters of ``model``.

    Example:
        >>> lin = torch.nn.Linear(2, 1, bias=False)
        >>> _ = lin.weight.data.copy_(torch.tensor([[2.0, 3.0]]))
        >>> dampen(lin, {"weight": torch.tensor([[1.0, 1.0]])}, {"weight": torch.tensor([[20.0, 5.0]])}, 10, 1)
        {'weight': 1}
        >>> lin.weight.data.tolist()  # 2 * min(1 * 1 / 20, 1) = 0.1; 3 is untouched (5 <= 10 * 1)
        [[0.10000000149011612, 3.0]]
    """
    _check_positive_finite("alpha", alpha)
    _check_positive_finite("lambda_", lambda_)
    params = dict(model.named_parameters())
    unknown = sorted((set(importance_full) | set(importance_forget)) - set(params))
    if unknown:
        raise KeyError(f"importance maps name tensors that are not parameters of the model: {unknown[:5]}")
    counts: dict[str, int] = {}
    for name, p in params.items():
        if name not in importance_full or name not in importance_forget:
            continue
        i_d = importance_full[name].to(p.device, torch.float32)
        i_f = importance_forget[name].to(p.device, torch.float32)
        if i_d.shape != p.shape or i_f.shape != p.shape:
            raise ValueError(
                f"importance of {name!r} has shape {tuple(i_d.shape)}/{tuple(i_f.shape)}, parameter {tuple(p.shape)}"
            )
        selected = i_f > alpha * i_d  # strict, as the official code
        n = int(selected.sum())
        counts[name] = n
        if n:
            beta = (lambda_ * i_d / i_f).clamp(max=1.0)  # inf/nan only where I_F = 0, which is never selected
            # torch.where keeps every unselected entry bit-identical (and is faster than boolean indexing)
            if previous is not None:
                idx = selected.reshape(-1).nonzero().squeeze(1)
                previous[name] = (idx.cpu(), p.detach().reshape(-1)[idx].cpu().clone())
            p.copy_(torch.where(selected, (p.float() * beta).to(p.dtype), p))
    return counts


def auto_alpha(
    importance_full: dict[str, torch.Tensor],
    importance_forget: dict[str, torch.Tensor],
    percentile: float,
    max_samples: int = 2**24,
    seed: int = 0,
) -> float:
    """alpha as the ``percentile``-th percentile of ``I_F / I_D`` over the entries with ``I_D > 0``.

    About ``100 - percentile`` percent of those entries then satisfy ``I_F > alpha * I_D``. Beyond ``max_samples``
    entries the percentile is estimated on a seeded uniform subsample (exact otherwise).

    Raises:
        ValueError: percentile outside (0, 100), or no entry with ``I_D > 0``.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    ratios = []
    for name, i_d in importance_full.items():
        if name in importance_forget:
            i_d = i_d.float().cpu()
            keep = i_d > 0
            ratios.append((importance_forget[name].float().cpu()[keep] / i_d[keep]).reshape(-1))
    r = torch.cat(ratios) if ratios else torch.empty(0)
    if r.numel() == 0:
        raise ValueError("auto_alpha: no parameter entry has I_D > 0")
    if r.numel() > max_samples:
        g = torch.Generator().manual_seed(seed)
        r = r[torch.randint(r.numel(), (max_samples,), generator=g)]
    value = float(torch.quantile(r.double(), percentile / 100.0))
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"auto_alpha: the {percentile}th percentile of I_F/I_D is {value}; pick a higher one")
    return value


# --------------------------------------------------------------------------------------------------------------
# 5. The method: data -> (cached) I_D, I_F -> dampen
# --------------------------------------------------------------------------------------------------------------
def _model_folder(model: Any) -> Path | None:
    for obj in (model, getattr(model, "base_model", None), getattr(getattr(model, "base_model", None), "model", None)):
        cfg = getattr(obj, "config", None)
        path = getattr(cfg, "_name_or_path", None) or getattr(cfg, "name_or_path", None)
        if isinstance(path, str) and path and Path(path).is_dir():
            return Path(path)
    return None


class SSD(UnlearningMethod):
    """Selective Synaptic Dampening: two importance passes and a multiplicative mask, no training.

    ``unlearn`` keyword arguments (besides the dispatcher's):
        full_dataset: the whole training data D (any form ``load_examples`` takes), in its training order.
        train_dataset: same meaning, an alias (direct calls).
        importance_full: a precomputed I_D map (skips the cache and the D pass).

    Without ``full_dataset``, D = retain ∪ forget sorted by uid (a canonical order, so the I_D cache still hits
    across requests); without a retain set either, SSD refuses (I_D over F alone would select nothing).
    """

    name = "ssd"
    config_cls = SSDConfig
    reference = Paper(
        title="Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening",
        authors="Jack Foster and Stefan Schoepf and Alexandra Brintrup",
        arxiv="2308.07707",
        year=2023,
        venue="AAAI 2024",
    )
    description = (
        "Selective Synaptic Dampening compares each parameter's importance (mean squared gradient) on the forget "
        "set with its importance on the whole training data, and shrinks the parameters that matter "
        "disproportionately to the forget set. Retrain-free and approximate."
    )
    unlearn_arguments = ("full_dataset", "train_dataset", "importance_full")
    exact = False
    paper = (
        "Foster, Schoepf & Brintrup, Fast Machine Unlearning Without Retraining Through Selective Synaptic "
        "Dampening (AAAI 2024, arXiv 2308.07707)"
    )
    needs_retain = False

    benchmark_defaults = {"alpha": 10.0, "lambda_": 1.0, "batch_size": 32}
    benchmark_bf16 = False  # retrain-free: runs fp32

    @classmethod
    def benchmark_inputs(cls, ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
        """D is the benchmark's ``full`` split (in its training order)."""
        return {"full_dataset": ctx.bench["full"]}

    def __init__(self, config: SSDConfig):
        super().__init__(config)

    # -- data ----------------------------------------------------------------------------------------------------
    def full_data(self, forget: Dataset, retain: Dataset | None, full_dataset: Any) -> tuple[Dataset, str]:
        """D and where it came from (``"full_dataset"`` or ``"retain+forget (sorted by uid)"``)."""
        if full_dataset is not None:
            d = load_examples(full_dataset)
            missing = set(column(forget, UID)) - set(column(d, UID))
            if missing:
                warnings.warn(
                    f"{len(missing)} forget example(s) are not in full_dataset (e.g. {sorted(missing)[:3]}); SSD "
                    "assumes F is part of the training data D",
                    stacklevel=3,
                )
            return d, "full_dataset"
        if retain is None or len(retain) == 0:
            raise ValueError(
                "SSD needs the whole training data D = retain ∪ forget for I_D: pass full_dataset= (the training "
                "set, in training order), or train_dataset=/retain= to the dispatcher"
            )
        cols = [c for c in forget.column_names if c in retain.column_names]
        d = concatenate_datasets([retain.select_columns(cols), forget.select_columns(cols)])
        uids = column(d, UID)
        first = {u: i for i, u in reversed(list(enumerate(uids)))}  # uid -> first row (dispatcher dedups anyway)
        order = [first[u] for u in sorted(first)]  # canonical order: the same D for every request
        return d.select(order), "retain+forget (sorted by uid)"

    def loader(self, ds: Dataset, tokenizer: Any, in_memory: bool = False) -> torch.utils.data.DataLoader:
        """Unshuffled loader of tokenized ``ds`` with the config's batch size.

        ``in_memory=True`` (the forget set, request-sized) tokenizes into a list of dicts with
        :func:`~hf_unlearn.data.encode_examples` instead of ``Dataset.map``: the same tokens without ``map``'s fixed
        per-call cost, which dominates a cached request on a small F. D stays an Arrow-backed dataset.
        """
        cfg = self.config
        if in_memory:
            rows: Any = encode_examples(ds, tokenizer, max_length=cfg.max_length, template=cfg.template)
        else:
            rows = tokenize_any(ds, tokenizer, max_length=cfg.max_length, template=cfg.template)
            rows = rows.select_columns(
                [c for c in ("input_ids", "attention_mask", "labels", UID) if c in rows.column_names]
            )
        collate = collator_for(tokenizer)
        return torch.utils.data.DataLoader(rows, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate)

    # -- the request ---------------------------------------------------------------------------------------------
    def unlearn(
        self,
        model: Any,
        tokenizer: Any,
        forget: Dataset,
        retain: Dataset | None = None,
        *,
        full_dataset: Any = None,
        train_dataset: Any = None,
        importance_full: dict[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> MethodOutput:
        if kwargs:
            raise TypeError(
                f"ssd got unexpected argument(s) {sorted(kwargs)}; it takes full_dataset=, train_dataset=, "
                "importance_full="
            )
        cfg: SSDConfig = self.config
        if forget is None or len(forget) == 0:
            raise ValueError("the forget set is empty: SSD needs at least one example to forget")
        target_parameters(model, cfg.target, cfg.include, cfg.exclude)  # fail early on a bad target
        imp_kw = dict(
            target=cfg.target,
            mode=cfg.importance,
            label_free=cfg.label_free,
            include=cfg.include,
            exclude=cfg.exclude,
            offload=cfg.offload,
            per_sample_chunk=cfg.per_sample_chunk,
        )
        timings: dict[str, float] = {}
        details: dict[str, Any] = {}
        tokens = 0

        # I_D: given, cached, or computed over D
        self._lineage = None  # (cache, key, weights hash, requests since I_D) when I_D came through the cache
        self._full_stats = None  # batch counts of the I_D pass, when it ran
        if importance_full is None:
            d, source = self.full_data(forget, retain, full_dataset if full_dataset is not None else train_dataset)
            details.update(full_data_source=source, n_full=len(d))
            importance_full, status, tok_d, t = self._importance_full(model, tokenizer, d, imp_kw)
            timings.update(t)
            tokens += tok_d
            details["cache"] = status
            if self._full_stats is not None:
                details["importance_full_batches"] = self._full_stats
        else:
            details.update(full_data_source="importance_full argument", cache="given")

        # I_F: one pass over the forget set (the per-request cost)
        t0 = time.perf_counter()
        f_loader = self.loader(forget, tokenizer, in_memory=True)
        timings["tokenize_forget"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        f_stats: dict[str, Any] = {}
        anchor = self._anchor()
        with _SwappedIn(model, anchor):  # 'anchored': I_F at the original weights, the ones I_D belongs to
            importance_forget = compute_importance(model, f_loader, stats=f_stats, **imp_kw)
        if anchor is not None:
            details["anchored_entries"] = sum(int(i.numel()) for i, _ in anchor.values())
        details["importance_forget_batches"] = f_stats
        timings["importance_forget"] = time.perf_counter() - t0
        tokens += sum(sum(r["attention_mask"]) for r in f_loader.dataset)
        total_signal = sum(float(v.sum()) for v in importance_forget.values())
        if total_signal == 0.0:
            warnings.warn(
                "the forget set gives no gradient signal (I_F is 0 everywhere: e.g. every label is -100, so no "
                "token is scored); nothing is dampened",
                stacklevel=2,
            )

        # alpha, then dampen
        alpha = cfg.alpha
        if cfg.auto_alpha is not None and total_signal > 0:
            alpha = auto_alpha(importance_full, importance_forget, cfg.auto_alpha, seed=cfg.seed)
        if "n_full" in details:
            # An entry whose gradient comes only from F, with F's batches also batches of D, has
            # I_F / I_D = batches(D) / batches(F): a larger alpha can select nothing (small data sets).
            bound = math.ceil(details["n_full"] / cfg.batch_size) / math.ceil(len(forget) / cfg.batch_size)
            details["alpha_bound"] = bound
            if alpha >= bound:
                logger.warning(
                    "alpha=%s >= batches(D)/batches(F)=%.3g: even entries used only by the forget set may not be "
                    "selected; lower alpha or the batch size for small data",
                    alpha,
                    bound,
                )
        t0 = time.perf_counter()
        keep_anchor = self._lineage is not None and cfg.cache_policy == "anchored"
        previous: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = {} if keep_anchor else None
        counts = (
            dampen(model, importance_full, importance_forget, alpha, cfg.lambda_, previous=previous)
            if total_signal > 0
            else {}
        )
        timings["dampen"] = time.perf_counter() - t0
        if self._lineage is not None and cfg.cache_policy != "strict" and counts and any(counts.values()):
            # record the dampened model as a descendant of the cached I_D's weights, for the next request
            cache, key, _, depth = self._lineage
            t0 = time.perf_counter()
            new_hash = self._weights_hash(model)
            state = process_state()
            if state.is_main_process:  # every process holds the same dampened weights; one writes
                if keep_anchor:  # the original values of every entry dampened so far (earlier requests' first)
                    cache.save_anchor(key, new_hash, _merge_anchor(anchor or {}, previous or {}))
                cache.add_descendant(key, new_hash, depth + 1)
            state.wait_for_everyone()
            timings["lineage"] = time.perf_counter() - t0
            details["requests_since_importance_full"] = depth + 1
        params = dict(model.named_parameters())
        n_targeted = sum(params[n].numel() for n in importance_forget)
        n_damp = sum(counts.values())
        details.update(
            alpha=alpha,
            lambda_=cfg.lambda_,
            target=cfg.target,
            importance=cfg.importance,
            label_free=cfg.label_free,
            n_forget=len(forget),
            dampened_per_tensor={n: c for n, c in counts.items() if c},
            dampened_total=n_damp,
            targeted_total=n_targeted,
            dampened_fraction=n_damp / max(n_targeted, 1),
            tensors_dampened=sum(1 for c in counts.values() if c),
            tensors_targeted=len(importance_forget),
        )
        if n_damp == 0 and total_signal > 0:
            logger.warning("SSD selected no parameter entry (alpha=%s); lower alpha to dampen more", alpha)
        return MethodOutput(model=model, details=details, timings=timings, tokens_processed=tokens)

    def _anchor(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """The original values of the entries earlier requests dampened (``anchored`` policy, lineage depth > 0)."""
        if self._lineage is None or self.config.cache_policy != "anchored" or self._lineage[3] == 0:
            return None
        cache, key, w_hash, _ = self._lineage
        return cache.load_anchor(key, w_hash)

    def _weights_hash(self, model: Any) -> str:
        cfg: SSDConfig = self.config
        if cfg.cache_hash == "targeted":  # only the targeted tensors: cheap, for a frozen base (adapter target)
            return weights_hash(target_parameters(model, cfg.target, cfg.include, cfg.exclude))
        return weights_sha256(model)

    def _importance_full(
        self, model: Any, tokenizer: Any, d: Dataset, imp_kw: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], str, int, dict[str, float]]:
        """I_D from the cache when its weights hash matches, else computed (and cached). Returns
        ``(maps, cache status, tokens processed, timings)``."""
        cfg: SSDConfig = self.config
        timings: dict[str, float] = {}
        if cfg.cache_dir:
            folder = Path(cfg.cache_dir)
        else:
            model_dir = _model_folder(model)
            folder = model_dir / "ssd_cache" if model_dir is not None else None
        cache = ImportanceCache(folder) if (folder is not None and cfg.use_cache) else None
        setting = {
            "target": cfg.target,
            "mode": cfg.importance,
            "label_free": cfg.label_free,
            "batch_size": cfg.batch_size,
            "include": cfg.include,
            "exclude": cfg.exclude,
            "hash_scope": cfg.cache_hash,
            "data_sha256": data_fingerprint(column(d, UID), max_length=cfg.max_length, template=cfg.template),
        }
        key = cache_key(setting)
        status = "off"
        w_hash = None
        if cache is not None:
            t0 = time.perf_counter()
            w_hash = self._weights_hash(model)
            timings["weights_hash"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            device = "cpu" if cfg.offload else next(model.parameters()).device
            maps, status = cache.load(key, w_hash, device=device)
            timings["cache_load"] = time.perf_counter() - t0
            if status == "hit":
                self._lineage = (cache, key, w_hash, 0)
                return maps, "hit", 0, timings
            depth = cache.lineage(key).get(w_hash) if status == "stale" and cfg.cache_policy != "strict" else None
            if depth is not None and cfg.cache_policy == "anchored" and not cache.has_anchor(key, w_hash):
                depth = None  # a descendant recorded without its anchor (another policy): not usable here
            if depth is not None and (cfg.cache_policy in ("reuse", "anchored") or depth < cfg.refresh_every):
                # a model SSD requests derived from the cached weights: reuse their I_D (the documented approximation)
                self._lineage = (cache, key, w_hash, depth)
                return maps, "lineage-hit", 0, timings
            if depth is not None:  # refresh: this I_D served refresh_every requests; redo it on the current weights
                status = "refresh"
            if status == "stale":
                msg = (
                    f"the cached I_D in {cache.path(key)} was computed on other weights (sha256 "
                    f"{(cache.metadata(key) or {}).get('weights_sha256', '?')[:12]}..., model now {w_hash[:12]}...)"
                )
                if cfg.on_stale == "error":
                    raise ValueError(msg + ": pass on_stale='recompute' to recompute it, or delete the file")
                if cfg.on_stale == "reuse":
                    warnings.warn(msg + "; reusing it as on_stale='reuse' asks (an approximation)", stacklevel=3)
                    return maps, "stale-reused", 0, timings
                logger.warning("%s; recomputing it", msg)
        t0 = time.perf_counter()
        loader = self.loader(d, tokenizer)
        timings["tokenize_full"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        d_stats: dict[str, Any] = {}
        maps = compute_importance(model, loader, stats=d_stats, **imp_kw)
        self._full_stats = d_stats
        timings["importance_full"] = time.perf_counter() - t0
        tokens = sum(int(sum(x)) for x in column(loader.dataset, "attention_mask"))
        if cache is not None:
            info = {**setting, "n_examples": len(d), "max_length": cfg.max_length, "template": cfg.template}
            state = process_state()
            if state.is_main_process:  # the maps are the same on every process (all-reduced); one writes
                cache.save(key, maps, w_hash, info)
            state.wait_for_everyone()
            status = {"stale": "stale-recomputed", "refresh": "refreshed"}.get(status, "miss")
            self._lineage = (cache, key, w_hash, 0)
        return maps, status, tokens, timings
