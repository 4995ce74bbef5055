"""The NLL rows of the protocol report: token-mean answer NLL on the forget, retain and holdout splits."""

from __future__ import annotations

from typing import Any

import torch

from hf_unlearn.protocol.context import Context, autocast_for


@torch.no_grad()
def mean_answer_nll(model: Any, tokenizer: Any, ds: Any, max_length: int = 128, batch_size: int = 32) -> float:
    """Token-mean NLL of the answers of a QA split (lower = better known)."""
    from hf_unlearn.data import collator_for, tokenize_qa
    from hf_unlearn.training.losses import token_logprobs
    from hf_unlearn.training.trainer import model_inputs

    tok = tokenize_qa(ds, tokenizer, max_length=max_length)
    coll = collator_for(tokenizer)
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(tok), batch_size):
        batch = coll([tok[i] for i in range(start, min(len(tok), start + batch_size))])
        batch.pop("uid")
        batch = {k: v.to(device) for k, v in batch.items()}
        logp, mask = token_logprobs(model(**model_inputs(batch)).logits, batch["labels"])
        total += float(-logp.sum())
        count += int(mask.sum())
    return total / max(count, 1)


def nll_row(model: Any, ctx: Context) -> dict[str, float]:
    with autocast_for(ctx, model):
        s = ctx.setting
        return {
            "forget_nll": mean_answer_nll(model, ctx.tokenizer, ctx.forget, s.max_length),
            "retain_nll": mean_answer_nll(model, ctx.tokenizer, ctx.retain, s.max_length),
            "holdout_nll": mean_answer_nll(model, ctx.tokenizer, ctx.holdout, s.max_length),
        }
