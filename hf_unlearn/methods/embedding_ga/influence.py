"""Influence of training examples on a request: activation dot products and LiSSA (Hessian-vector products).

Two scores, both reconstructions of what the abstract of Zagardo (arXiv 2406.09391) names:

* **activation score**: ``<a(request), a(x)>`` with ``a`` the mean-pooled hidden state (over attended tokens) of a
  chosen layer; the request's vector is the mean over its examples.
* **LiSSA influence** over the embedding parameters ``theta`` (token table, plus a learned position table):
  ``s(x) = g_req^T H^{-1} g_x`` with ``g = d mean-NLL / d theta`` and ``H`` the Hessian of the training loss,
  estimated with the LiSSA recursion (Agarwal et al. 2017, as used by Koh & Liang 2017)::

      h_0 = v;   h_j = v + (1 - damping) h_{j-1} - (H_j h_{j-1}) / scale;   H^{-1} v ~ h_J / scale

  where ``H_j h`` is an exact Hessian-vector product (double back-propagation, ``torch.autograd.grad``) on the
  ``j``-th training mini-batch. A positive ``s(x)`` means training on ``x`` lowered the request's loss (removing
  ``x`` would raise it): Koh & Liang's up-weighting influence on the loss is ``-s(x)``.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1? Answer: A1."] * 4, num_layers=1, vocab_size=300)
    >>> activation_scores(model, tok, "Q1? A1.", data).shape
    torch.Size([4])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from datasets import Dataset
from torch.nn.attention import SDPBackend, sdpa_kernel

from hf_unlearn.data import load_examples, model_batches
from hf_unlearn.models import embedding_modules
from hf_unlearn.training.losses import sequence_nll
from hf_unlearn.training.trainer import model_inputs


def as_dataset(x: Any) -> Dataset:
    """A Dataset from a Dataset, a string, a list of strings (a ``text`` column) or a list of dicts."""
    if isinstance(x, str):
        x = [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(s, str) for s in x):
        return load_examples({"text": list(x)})
    return load_examples(x)


def embedding_params(model: Any, positions: bool = True) -> list[torch.nn.Parameter]:
    """The token-embedding weight, plus the learned position table when ``positions`` and the model has one."""
    mods = embedding_modules(model)
    params = [mods["token"].weight]
    if positions and mods["position"] is not None:
        params.append(mods["position"].weight)
    return params


@contextlib.contextmanager
def only_grad_for(model: Any, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Temporarily make ``params`` the only parameters that require grad (restored on exit)."""
    keep = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _batches(model: Any, tok: Any, ds: Dataset, batch_size: int, max_length: int, template: str):
    """The tensors of :func:`hf_unlearn.data.model_batches` (uids dropped)."""
    for _, batch in model_batches(model, tok, ds, batch_size=batch_size, max_length=max_length, template=template):
        yield batch


@torch.no_grad()
def pooled_activations(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    layer: int = -1,
    batch_size: int = 16,
    max_length: int = 128,
    template: str = "plain",
) -> torch.Tensor:
    """Mean-pooled hidden states ``[N, H]`` of ``dataset`` at ``layer`` (0: embeddings, -1: last)."""
    was_training = model.training
    model.eval()
    out = []
    for batch in _batches(model, tokenizer, as_dataset(dataset), batch_size, max_length, template):
        hs = model(**model_inputs(batch), output_hidden_states=True).hidden_states[layer]  # [B, T, H]
        mask = batch["attention_mask"].unsqueeze(-1).to(hs.dtype)  # [B, T, 1]
        out.append(((hs * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def activation_scores(model: Any, tokenizer: Any, request: Any, candidates: Any, **kwargs: Any) -> torch.Tensor:
    """Dot product ``[N]`` between the request's mean pooled activation and each candidate's.

    Args:
        model, tokenizer: the LM.
        request: a string, list of strings or dataset (its activations are averaged).
        candidates: the training examples to score.
        **kwargs: ``layer``, ``batch_size``, ``max_length``, ``template`` of :func:`pooled_activations`.
    """
    req = pooled_activations(model, tokenizer, request, **kwargs).mean(0)  # [H]
    return pooled_activations(model, tokenizer, candidates, **kwargs) @ req  # [N]


def _mean_nll(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return sequence_nll(model(**model_inputs(batch)).logits, batch["labels"]).mean()


def _grad(model: Any, batch: dict[str, torch.Tensor], params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [g.detach() for g in torch.autograd.grad(_mean_nll(model, batch), params)]


def hvp(model: Any, batch: dict[str, torch.Tensor], params: list, vec: list[torch.Tensor]) -> list[torch.Tensor]:
    """Exact Hessian-vector product of the batch's mean NLL w.r.t. ``params`` (double back-propagation)."""
    # the math SDPA kernel: the fused (flash / memory-efficient) kernels have no double backward
    with sdpa_kernel(SDPBackend.MATH):
        grads = torch.autograd.grad(_mean_nll(model, batch), params, create_graph=True)
        return [h.detach() for h in torch.autograd.grad(grads, params, grad_outputs=vec)]


def lissa_inverse_hvp(
    model: Any,
    hessian_batches: list[dict[str, torch.Tensor]],
    vec: list[torch.Tensor],
    params: list[torch.nn.Parameter],
    *,
    damping: float = 0.01,
    scale: float = 25.0,
    iterations: int = 20,
) -> list[torch.Tensor]:
    """LiSSA estimate of ``H^{-1} vec`` over ``params``; batch ``j`` is ``hessian_batches[j % len]``."""
    h = [v.clone() for v in vec]
    for j in range(iterations):
        hv = hvp(model, hessian_batches[j % len(hessian_batches)], params, h)
        h = [v + (1 - damping) * hj - hvj / scale for v, hj, hvj in zip(vec, h, hv)]
    return [hj / scale for hj in h]


def lissa_scores(
    model: Any,
    tokenizer: Any,
    request: Any,
    candidates: Any,
    train: Any,
    *,
    damping: float = 0.01,
    scale: float = 25.0,
    iterations: int = 20,
    batch_size: int = 8,
    positions: bool = True,
    max_length: int = 128,
    template: str = "plain",
    seed: int = 0,
) -> torch.Tensor:
    """LiSSA influence ``[N]`` of each candidate on the request's loss over the embedding parameters.

    Args:
        model, tokenizer: the LM (put in eval mode for the computation).
        request: string(s) or dataset whose mean NLL is the test loss.
        candidates: training examples to score.
        train: examples whose loss defines the Hessian (shuffled with ``seed`` into batches of ``batch_size``).
        damping, scale, iterations: LiSSA parameters (``scale`` must exceed the top Hessian eigenvalue).
        positions: include a learned position table in the parameters.

    Returns:
        ``s [N]`` with ``s_i = g_request^T H^{-1} g_i`` (positive: ``x_i`` helped the request).
    """
    was_training = model.training
    model.eval()
    params = embedding_params(model, positions)
    train_ds = as_dataset(train).shuffle(seed=seed)
    with only_grad_for(model, params):
        hess = list(_batches(model, tokenizer, train_ds, batch_size, max_length, template))
        req_grad = None
        n_req = 0
        for batch in _batches(model, tokenizer, as_dataset(request), batch_size, max_length, template):
            g = _grad(model, batch, params)
            b = batch["input_ids"].shape[0]
            req_grad = [x * b for x in g] if req_grad is None else [a + x * b for a, x in zip(req_grad, g)]
            n_req += b
        req_grad = [g / n_req for g in req_grad]
        ihvp = lissa_inverse_hvp(
            model, hess, req_grad, params, damping=damping, scale=scale, iterations=iterations
        )  # H^{-1} g_req
        scores = []
        for batch in _batches(model, tokenizer, as_dataset(candidates), 1, max_length, template):
            g = _grad(model, batch, params)
            scores.append(sum(float((a * b).sum()) for a, b in zip(ihvp, g)))
    model.train(was_training)
    return torch.tensor(scores)
