"""Cost timing: the forward+backward pass over the forget set that unlearning costs are expressed in."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch


def forward_backward_seconds(
    model: Any,
    tokenizer: Any,
    ds: Any,
    max_length: int = 128,
    batch_size: int = 8,
    reps: int = 1,
    train: bool = True,
) -> float:
    """Median wall time of one forward+backward pass over ``ds`` (any source ``load_examples`` takes): the unit
    unlearning costs are expressed in.

    Runs on a deep copy of ``model`` (``train`` or eval mode), over batches tokenized and collated beforehand, with
    the token-mean answer loss; gradients go to the copy's trainable parameters.
    """
    import statistics

    from hf_unlearn.data import collator_for, encode_examples, load_examples
    from hf_unlearn.training.losses import batch_nll
    from hf_unlearn.training.trainer import model_inputs

    m = copy.deepcopy(model).train(train)
    rows = encode_examples(load_examples(ds), tokenizer, max_length=max_length)
    coll = collator_for(tokenizer)
    device = next(m.parameters()).device
    batches = [
        {k: v.to(device) for k, v in coll(rows[i : i + batch_size]).items() if k != "uid"}
        for i in range(0, len(rows), batch_size)
    ]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for batch in batches:
            batch_nll(m(**model_inputs(batch)).logits, batch["labels"]).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        m.zero_grad(set_to_none=True)
    return statistics.median(times)
