"""Sequence-level losses shared by training, unlearning and evaluation.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)                      # uniform over 4 tokens
    >>> labels = torch.tensor([[-100, 2, 1]])
    >>> round(float(sequence_nll(logits, labels, reduction="mean")[0]), 4)  # log(4)
    1.3863
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from hf_unlearn.data.tokenization import IGNORE_INDEX


def shift_for_next_token(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The causal shift every per-token score starts from: ``logits[:, :-1]`` predicts ``labels[:, 1:]``.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` with -100 on ignored positions.

    Returns:
        ``(shift_logits [B, T-1, V] float32, targets [B, T-1], mask [B, T-1] bool)``; ``targets`` is 0 where the
        mask is False (a valid index to gather with).

    Example:
        >>> import torch
        >>> _, targets, mask = shift_for_next_token(torch.zeros(1, 3, 4), torch.tensor([[-100, 2, -100]]))
        >>> targets.tolist(), mask.tolist()
        ([[2, 0]], [[True, False]])
    """
    shift_logits = logits[:, :-1, :].float()  # [B, T-1, V]
    shift_labels = labels[:, 1:]  # [B, T-1]
    mask = shift_labels.ne(IGNORE_INDEX)
    return shift_logits, shift_labels.masked_fill(~mask, 0), mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log p(label) after the causal shift, and the mask of label positions.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` with -100 on ignored positions.

    Returns:
        ``(logp [B, T-1], mask [B, T-1] bool)``; ``logp`` is 0 where the mask is False.
    """
    shift_logits, safe, mask = shift_for_next_token(logits, labels)
    logp = -F.cross_entropy(shift_logits.transpose(1, 2), safe, reduction="none")  # [B, T-1]
    return logp.masked_fill(~mask, 0.0), mask


def token_distributions(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole next-token log-distribution at every position, and log p(label) read from it.

    For scores that need more than the label's log-probability (entropy, max confidence, distillation targets);
    :func:`token_logprobs` is the cheaper path when the label's log-probability is all that is needed.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` with -100 on ignored positions.

    Returns:
        ``(logp [B, T-1, V], token_logp [B, T-1], targets [B, T-1], mask [B, T-1] bool)``; at masked positions
        ``targets`` is 0 and ``token_logp`` is the log-probability of token 0 (multiply by the mask).

    Example:
        >>> import torch
        >>> logp, tok, _, mask = token_distributions(torch.zeros(1, 2, 4), torch.tensor([[-100, 3]]))
        >>> logp.shape, round(float(tok[0, 0]), 4), mask.tolist()  # log(1/4)
        (torch.Size([1, 1, 4]), -1.3863, [[True]])
    """
    shift_logits, targets, mask = shift_for_next_token(logits, labels)
    logp = F.log_softmax(shift_logits, dim=-1)  # [B, T-1, V]
    token_logp = logp.gather(-1, targets[..., None])[..., 0]  # [B, T-1]
    return logp, token_logp, targets, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-sequence NLL over label tokens: ``"sum"`` or ``"mean"`` (avgNLL, divided by the label count)."""
    logp, mask = token_logprobs(logits, labels)
    total = -logp.sum(dim=1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum(dim=1).clamp(min=1)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def batch_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean NLL over every label token of the batch (the usual causal-LM loss)."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum() / mask.sum().clamp(min=1)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over label positions of KL(p_ref || p_model) of the next-token distributions."""
    lp, _, _, mask = token_distributions(logits, labels)
    lq = F.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)
    kl = (lq.exp() * (lq - lp)).sum(-1)  # [B, T-1]
    return (kl * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def mean_nll(model: Any, batches: Iterable[dict[str, torch.Tensor]], per: str = "token") -> float:
    """Mean NLL of the label tokens of ``batches`` under ``model``, in the model's current mode.

    Args:
        model: a causal LM.
        batches: collated batches with ``input_ids``, ``attention_mask``, ``labels`` on the model's device (e.g.
            the batches of :func:`hf_unlearn.data.model_batches`).
        per: ``"token"``: the total NLL over the number of label tokens (the avgNLL of a split); ``"example"``: the
            mean over examples of each example's token-mean NLL.

    Example:
        >>> # mean_nll(model, (b for _, b in model_batches(model, tok, ds, batch_size=16)), per="example")
    """
    from hf_unlearn.training.trainer import model_inputs  # the trainer module imports this one

    if per not in ("token", "example"):
        raise ValueError(f"per must be 'token' or 'example', got {per!r}")
    total, count = 0.0, 0
    for batch in batches:
        logits = model(**model_inputs(batch)).logits
        if per == "token":
            logp, mask = token_logprobs(logits, batch["labels"])
            total += float(-logp.sum())
            count += int(mask.sum())
        else:
            nll = sequence_nll(logits, batch["labels"])  # [B]
            total += float(nll.sum())
            count += nll.shape[0]
    return total / max(count, 1)
