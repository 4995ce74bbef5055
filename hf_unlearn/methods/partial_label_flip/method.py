"""Label-flipping unlearning with layer-wise partial updates (arXiv 2403.07611, reconstructed from the abstract).

Train (gradient DESCENT) on the forget set with wrong targets, updating only the top-rho fraction of each tensor's
gradient entries per step (:class:`~hf_unlearn.methods.partial.TopRhoGradMask`; ``rho = 1``: naive label flipping).
Wrong targets (``flip``):

* ``"swap"``: each forget answer is replaced by the answer of ANOTHER forget example (a seeded derangement: a
  cyclic shift of a shuffled order, so no example keeps its own answer); needs QA data and >= 2 examples;
* ``"random"``: the answer tokens are replaced by uniformly random non-special tokens (same length; a final EOS
  is kept).

An optional retain NLL term (``alpha > 0``) is added to the loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset

from hf_unlearn.config import check_choice
from hf_unlearn.data import IGNORE_INDEX, tokenize_any
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.partial import PAPER, REFERENCE, PartialUpdateConfig, run_partial

FLIPS = ("swap", "random")


@dataclass
class PartialLabelFlipConfig(PartialUpdateConfig):
    """Label flipping with top-rho partial updates (every PartialUpdateConfig / UnlearnConfig field)."""

    flip: str = field(
        default="swap",
        metadata={"help": "'swap': answers deranged across forget examples; 'random': random answer tokens."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("flip", self.flip, FLIPS)


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point: ``perm[i] != i`` for every i (n >= 2).

    Example:
        >>> p = derangement(5, seed=0); sorted(p) == list(range(5)) and all(p[i] != i for i in range(5))
        True
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}: use flip='random' for one example")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    perm = [0] * n
    for k in range(n):
        perm[order[k]] = order[(k + 1) % n]
    return perm


def flip_labels(forget: Dataset, tokenizer: Any, flip: str, seed: int, max_length: int, template: str) -> Dataset:
    """The forget set, tokenized, with wrong targets (see the module docstring)."""
    check_choice("flip", flip, FLIPS)
    if flip == "swap":
        if not {"question", "answer"} <= set(forget.column_names):
            raise KeyError(
                f"flip='swap' needs question/answer columns, got {forget.column_names}; use flip='random' for text"
            )
        answers = list(forget["answer"])
        perm = derangement(len(answers), seed)
        swapped = forget.map(lambda row, i: {"answer": answers[perm[i]]}, with_indices=True)
        return tokenize_any(swapped, tokenizer, max_length=max_length, template=template)
    tok = tokenize_any(forget, tokenizer, max_length=max_length, template=template)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id

    def randomize(row: dict[str, Any]) -> dict[str, Any]:
        ids, labels = list(row["input_ids"]), list(row["labels"])
        pos = [j for j, lab in enumerate(labels) if lab != IGNORE_INDEX and lab != eos]
        new = vocab[torch.randint(len(vocab), (len(pos),), generator=gen)].tolist()
        for j, t in zip(pos, new):
            ids[j] = labels[j] = t
        return {"input_ids": ids, "labels": labels}

    return tok.map(randomize)


class PartialLabelFlip(UnlearningMethod):
    name = "partial_label_flip"
    config_cls = PartialLabelFlipConfig
    reference = REFERENCE
    description = (
        "Label-flipping unlearning with layer-wise partial updates: training on the forget set with wrong "
        "targets, updating only the largest-gradient fraction of each tensor. Approximate; reconstructed from the "
        "paper's abstract."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 2e-3, "batch_size": 8, "flip": "random"}
    paper = PAPER

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        c = self.config
        flipped = flip_labels(forget, tokenizer, c.flip, c.seed, c.max_length, c.template)
        model, info = run_partial(model, tokenizer, flipped, retain, c, forget_sign=1.0, eval_forget=forget)
        info.update(flip=c.flip, forget_examples=len(flipped))
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])
