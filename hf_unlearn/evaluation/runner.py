"""The model-facing layer: (model, tokenizer, split) -> per-item arrays, and the TOFU-style unlearning report.

Everything runs in batched forward passes: one pass over the answers (mean NLL, token log-probs, Min-K%++ statistics,
teacher-forced argmax), one pass over the paraphrased and all perturbed answers flattened together, batched greedy
generation with left padding for ROUGE, and per-sample gradients for GradNorm. Items are sharded across processes
with accelerate (prepared DataLoader + ``gather_for_metrics``); every process ends up with the full arrays, in the
original item order. Sequences are sorted by length before batching (little padding, and the same batches whatever
the number of processes), and the pure metrics of :mod:`hf_unlearn.evaluation.metrics` turn the arrays into scores.

Example:
    >>> from datasets import Dataset, DatasetDict
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> rows = lambda p, n: [{"uid": f"{p}{i}", "question": f"Q{i}?", "answer": f"A {i}.", "paraphrased_answer":
    ...     f"It is {i}.", "perturbed_answers": [f"B {i}.", f"C {i}."]} for i in range(n)]
    >>> bench = DatasetDict({"forget10": Dataset.from_list(rows("f", 4)), "retain90": Dataset.from_list(rows("r", 4)),
    ...                      "holdout10": Dataset.from_list(rows("h", 4))})
    >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1?\\nAnswer: A 1."] * 4, num_layers=1, vocab_size=300)
    >>> res = evaluate_unlearning(model, tok, bench, skip_forget_quality=True, max_new_tokens=4, gradnorm=False)
    >>> sorted(res["splits"]["forget"]["per_item"]) == ["f0", "f1", "f2", "f3"]
    True
    >>> 0.0 <= res["mia"]["loss"]["auc"] <= 1.0
    True
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hf_unlearn.benchmarks.fictitious_authors import paired_splits
from hf_unlearn.data import IGNORE_INDEX, UnlearnCollator, encode_qa, encode_qa_many, ensure_uids
from hf_unlearn.evaluation import metrics as M

__all__ = [
    "answer_stats",
    "generate_answers",
    "grad_norms",
    "feature_stats",
    "generate_continuations",
    "evaluate_split",
    "evaluate_unlearning",
    "load_result",
    "MIA_ATTACKS",
]

MIA_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference")
DEFAULT_STOP_STRINGS = ("\nQuestion:",)
DEFAULT_MAX_LENGTH = 512  # OpenUnlearning's evaluation max_length (TOFU's own code: 500)
REPORT_VERSION = 2  # 2: OpenUnlearning-parity definitions by default, recorded in meta["definitions"]


# ------------------------------------------------------------------------------------------------ plumbing
def _accelerator(accelerator: Any = None) -> Any:
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    return Accelerator()


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _prepare_model(model: torch.nn.Module, accelerator: Any) -> torch.device:
    """Put a CPU model on the accelerator's device (multi-GPU: each process its own); leave dispatched models."""
    device = _model_device(model)
    if device.type == "cpu" and accelerator.device.type != "cpu" and not getattr(model, "hf_device_map", None):
        model.to(accelerator.device)
        device = accelerator.device
    return device


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
    return int(pad)


class _RowCollator:
    """Pads with :class:`UnlearnCollator` and adds the ``row`` index of every feature (to restore the order)."""

    def __init__(self, pad_token_id: int, padding_side: str):
        self.base = UnlearnCollator(pad_token_id=pad_token_id, padding_side=padding_side)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base([{k: f[k] for k in ("input_ids", "attention_mask", "labels") if k in f} for f in features])
        batch["row"] = torch.tensor([f["row"] for f in features], dtype=torch.long)
        return batch


def _sharded_loop(features: list[dict[str, Any]], collate: Any, batch_size: int, accelerator: Any, step: Any) -> dict:
    """Run ``step(batch) -> dict of [B, ...] tensors`` over ``features`` sharded across processes; gather in order.

    Features are batched longest first (little padding, identical batches for any process count). Returns numpy
    arrays indexed by the original feature position (each row written once: the duplicates accelerate adds to even
    out the last batch are dropped by ``gather_for_metrics`` and, as a second guard, by first-write-wins).
    """
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(features)
    order = sorted(range(n), key=lambda i: (-len(features[i]["input_ids"]), i))
    ordered = [dict(features[i], row=i) for i in order]
    loader = accelerator.prepare_data_loader(
        DataLoader(ordered, batch_size=batch_size, shuffle=False, collate_fn=collate), device_placement=False
    )
    out: dict[str, np.ndarray] = {}
    filled = np.zeros(n, dtype=bool)
    for batch in loader:
        values = step(batch)
        values["row"] = batch["row"]
        values = {k: v.to(accelerator.device) for k, v in values.items()}
        gathered = accelerator.gather_for_metrics(values)
        rows = gathered.pop("row").cpu().numpy()
        fresh = ~filled[rows]
        fresh &= ~_seen_twice(rows)
        for key, val in gathered.items():
            arr = val.cpu().numpy()
            if key not in out:
                out[key] = np.zeros((n, *arr.shape[1:]), dtype=arr.dtype)
            out[key][rows[fresh]] = arr[fresh]
        filled[rows[fresh]] = True
    if not filled.all():
        raise RuntimeError(f"{int((~filled).sum())} of {n} items were not evaluated (sharding/gather mismatch)")
    return out


def _seen_twice(rows: np.ndarray) -> np.ndarray:
    """True at every repeat (not the first occurrence) of a row index within one gathered batch."""
    _, first = np.unique(rows, return_index=True)
    dup = np.ones(len(rows), dtype=bool)
    dup[first] = False
    return dup


def _encode_pairs(
    tokenizer: Any, questions: Sequence[str], answers: Sequence[str], max_length: int, template: str
) -> list[dict[str, Any]]:
    return encode_qa_many(tokenizer, questions, answers, max_length=max_length, template=template)


_NO_LOGITS_TO_KEEP: set[type] = set()  # model classes whose forward rejected ``logits_to_keep``


def _scored_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the positions from the first one that predicts a scored label on, and the labels cropped alike.

    With right padding the prompt is the start of every row, and no statistic reads the logits that predict prompt
    tokens: ``logits_to_keep`` (transformers' causal LMs) skips the LM head (a [tokens, vocab] matmul, and the
    largest tensor of the pass) over the prompt positions that no row of the batch scores. A model that does not take
    ``logits_to_keep`` gets the full forward, cropped afterwards: the same values either way.
    """
    scored = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    first = int(scored[0]) if len(scored) else 0  # logits at position t predict label t + 1
    keep = input_ids.shape[1] - first
    kw = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if type(model) not in _NO_LOGITS_TO_KEEP:
        try:
            logits = model(**kw, logits_to_keep=keep).logits
        except TypeError:
            _NO_LOGITS_TO_KEEP.add(type(model))
            logits = model(**kw).logits
    else:
        logits = model(**kw).logits
    if logits.shape[1] != keep:  # the model returned every position
        logits = logits[:, first:]
    return logits, labels[:, first:]


# ------------------------------------------------------------------------------------------------ runner entry points
def answer_stats(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    token_stats: bool = True,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
    template: str = "plain",
    accelerator: Any = None,
) -> dict[str, np.ndarray]:
    """Teacher-forced statistics of each answer given its question, in batched forward passes.

    Args:
        model: a causal LM (optionally a PeftModel).
        tokenizer: its tokenizer.
        questions: one question per item.
        answers: one answer per item (labels cover the answer tokens and the closing EOS, as in training).
        token_stats: also return token-level arrays (for Min-K%, Min-K%++, exact memorization, extraction strength).
        batch_size: sequences per forward pass (per process).
        max_length: tokenization length limit (prompt + answer).
        template: prompt template of :func:`hf_unlearn.data.encode_qa`.
        accelerator: an ``accelerate.Accelerator`` (one is created when None).

    Returns:
        ``avg_nll [n]`` and ``n_tokens [n]``; with ``token_stats`` also ``[n, w]`` arrays over the answer positions,
        left-aligned (w = the longest answer): ``token_logprob``, ``mu``, ``sigma`` (Min-K%++), ``pred_ids`` (argmax),
        ``label_ids`` (-100 at padding) and ``mask``.

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> model, tok = tiny_causal_lm("gpt2", texts=["Question: Q?\\nAnswer: A."] * 4, num_layers=1, vocab_size=280)
        >>> out = answer_stats(model, tok, ["Q?", "Who?"], ["A.", "Ann"])
        >>> out["avg_nll"].shape, bool((out["n_tokens"] >= 2).all())
        ((2,), True)
    """
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
    if len(questions) == 0:
        raise ValueError("no items to evaluate")
    features = _encode_pairs(tokenizer, questions, answers, max_length, template)
    return feature_stats(
        model, tokenizer, features, token_stats=token_stats, batch_size=batch_size, accelerator=accelerator
    )


def feature_stats(
    model: torch.nn.Module,
    tokenizer: Any,
    features: Sequence[Mapping[str, Any]],
    *,
    token_stats: bool = True,
    batch_size: int = 16,
    accelerator: Any = None,
) -> dict[str, np.ndarray]:
    """The statistics of :func:`answer_stats` for already encoded sequences (``input_ids``, ``attention_mask``,
    ``labels`` with -100 where nothing is scored), e.g. whole texts of a MUSE corpus.

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> model, tok = tiny_causal_lm("gpt2", texts=["some text"] * 4, num_layers=1, vocab_size=270)
        >>> ids = tok("some text")["input_ids"]
        >>> out = feature_stats(model, tok, [{"input_ids": ids, "attention_mask": [1] * len(ids),
        ...                                   "labels": [-100] + ids[1:]}])
        >>> int(out["n_tokens"][0]) == len(ids) - 1
        True
    """
    if len(features) == 0:
        raise ValueError("no items to evaluate")
    acc = _accelerator(accelerator)
    device = _prepare_model(model, acc)
    features = [dict(f) for f in features]
    width = max(len(f["input_ids"]) for f in features)  # the same on every process: one gathered shape

    def step(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        input_ids = batch["input_ids"].to(device)
        labels = batch["labels"].to(device)
        with acc.autocast():
            logits, labels = _scored_logits(model, input_ids, batch["attention_mask"].to(device), labels)
        logits, labels = M.causal_shift(logits, labels)  # [B, T'-1, V], [B, T'-1]
        valid = labels != IGNORE_INDEX
        n_tok = valid.sum(1)
        rows, cols = valid.nonzero(as_tuple=True)  # the answer positions only: the prompt is never scored
        ans_logits = logits[rows, cols].float()  # [N, V]
        targets = labels[rows, cols]  # [N]
        if not token_stats:
            nll = F.cross_entropy(ans_logits, targets, reduction="none")  # [N]
            total = torch.zeros(labels.shape[0], device=nll.device).index_add_(0, rows, nll)
            return {"avg_nll": total / n_tok, "n_tokens": n_tok}
        logp = torch.log_softmax(ans_logits, dim=-1)  # [N, V]
        tok_lp = logp.gather(-1, targets[:, None])[:, 0]  # [N]
        p = logp.exp()
        mu = (p * logp).sum(-1)  # [N], as in M.min_k_plus_plus_stats
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-6).sqrt()
        slot = (valid.cumsum(1) - 1)[rows, cols]  # left-aligned answer position of each scored token

        def compact(x: torch.Tensor, fill: float) -> torch.Tensor:  # [N] -> [B, width]
            out = torch.full((labels.shape[0], width), fill, dtype=x.dtype, device=x.device)
            out[rows, slot] = x
            return out

        total = torch.zeros(labels.shape[0], device=tok_lp.device).index_add_(0, rows, tok_lp)
        return {
            "avg_nll": -total / n_tok,
            "n_tokens": n_tok,
            "token_logprob": compact(tok_lp, 0.0),
            "mu": compact(mu, 0.0),
            "sigma": compact(sigma, 1.0),
            "pred_ids": compact(ans_logits.argmax(-1), IGNORE_INDEX),
            "label_ids": compact(targets, IGNORE_INDEX),
        }

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = _sharded_loop(features, _RowCollator(_pad_id(tokenizer), "right"), batch_size, acc, step)
    finally:
        model.train(was_training)
    out["avg_nll"] = out["avg_nll"].astype(np.float64)
    if token_stats:
        w = int(out["n_tokens"].max())
        for key in ("token_logprob", "mu", "sigma", "pred_ids", "label_ids"):
            out[key] = out[key][:, :w]
        out["mask"] = out["label_ids"] != IGNORE_INDEX
    return out


def generate_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 200,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
    template: str = "plain",
    stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS,
    accelerator: Any = None,
) -> list[str]:
    """Greedy answers (do_sample False, left padding, batched), cut at EOS and at the first stop string.

    The prompt is exactly the prompt part of :func:`hf_unlearn.data.encode_qa` (the training prompt).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q?\\nAnswer: A."] * 4, num_layers=1, vocab_size=280)
        >>> outs = generate_answers(model, tok, ["Q?", "Who wrote it?"], max_new_tokens=3)
        >>> len(outs), all(isinstance(o, str) for o in outs)
        (2, True)
    """
    if len(questions) == 0:
        raise ValueError("no questions to answer")
    prompts = []
    for q in questions:  # the training prompt: everything encode_qa does not label
        enc = encode_qa(tokenizer, q, "x", max_length=max_length, template=template, add_eos=False)
        prompts.append([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE_INDEX])
    texts = generate_continuations(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop_strings=stop_strings,
        accelerator=accelerator,
    )
    cut = []
    for text in texts:
        for stop in stop_strings:
            if stop and stop in text:
                text = text[: text.index(stop)]
        cut.append(text.strip())
    return cut


def generate_continuations(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 200,
    batch_size: int = 16,
    clean_up_tokenization_spaces: bool | None = None,
    stop_strings: Sequence[str] = (),
    accelerator: Any = None,
) -> list[str]:
    """Greedy continuations of token-id prompts (do_sample False, left padding, KV cache, prompts batched by
    length), decoded with ``skip_special_tokens=True`` up to the first EOS; no stop-string cut and no stripping.

    Args:
        prompts: one list of token ids per item (include the BOS if the model expects one).
        max_new_tokens: generation budget.
        batch_size: prompts per ``generate`` call (per process).
        clean_up_tokenization_spaces: passed to ``batch_decode`` (None: the tokenizer's default; MUSE uses True).
        stop_strings: a sequence stops generating once its text ends with one of these (``GenerationConfig``'s
            ``stop_strings``), so a batch ends when all of its sequences have stopped. The text up to the stop string
            is the same as without it: the continuation is not cut here (:func:`generate_answers` cuts).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> model, tok = tiny_causal_lm("llama", texts=["once upon a time"] * 4, num_layers=1, vocab_size=280)
        >>> outs = generate_continuations(model, tok, [tok("once upon")["input_ids"]], max_new_tokens=3)
        >>> len(outs), isinstance(outs[0], str)
        (1, True)
    """
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if len(prompts) == 0:
        raise ValueError("no prompts to continue")
    acc = _accelerator(accelerator)
    device = _prepare_model(model, acc)
    pad = _pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    features = [{"input_ids": list(ids), "attention_mask": [1] * len(ids)} for ids in prompts]
    if any(not f["input_ids"] for f in features):
        raise ValueError("an empty prompt cannot be continued")
    stops = [x for x in stop_strings if x]
    gen_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos,
        use_cache=True,
        stop_strings=stops or None,
    )
    gen_kw = {"tokenizer": tokenizer} if stops else {}  # the stop-string criterion reads the vocabulary

    def step(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        input_ids = batch["input_ids"].to(device)
        with acc.autocast():
            seq = model.generate(
                input_ids=input_ids,
                attention_mask=batch["attention_mask"].to(device),
                generation_config=gen_config,
                **gen_kw,
            )
        new = seq[:, input_ids.shape[1] :]
        if eos is not None:  # everything from the first EOS on becomes padding
            after_eos = (new == eos).int().cumsum(1) > 0
            new = new.masked_fill(after_eos, pad)
        return {"tokens": F.pad(new, (0, max_new_tokens - new.shape[1]), value=pad)}

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = _sharded_loop(features, _RowCollator(pad, "left"), batch_size, acc, step)
    finally:
        model.train(was_training)
    kw = {} if clean_up_tokenization_spaces is None else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
    return tokenizer.batch_decode(out["tokens"].tolist(), skip_special_tokens=True, **kw)


def grad_norms(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    p: float = 2.0,
    max_length: int = DEFAULT_MAX_LENGTH,
    template: str = "plain",
    definition: str = M.DEFAULT_DEFINITION,
    accelerator: Any = None,
) -> np.ndarray:
    """GradNorm MIA score per sample: mean over parameter tensors of the p-norm of the gradient of its mean NLL.

    Gradients are taken w.r.t. the trainable parameters (all parameters when none is trainable) with
    ``torch.autograd.grad``, so the model's ``.grad`` fields are untouched. One sample at a time: per-sample
    gradients of an arbitrary HF model through ``torch.func.vmap`` break on in-place ops in some architectures, and
    this loop runs only over the forget and holdout splits.

    With ``definition="open_unlearning"`` (default) the model is in train mode (dropout active) and the last label
    token (the EOS) is left out of the mean NLL, as in OpenUnlearning (src/evals/metrics/mia/gradnorm.py); an item
    with a single label token keeps it (OpenUnlearning's mean over no token would be NaN). ``"paper"``: eval mode,
    every label token.

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> model, tok = tiny_causal_lm("gpt2", texts=["Question: Q?\\nAnswer: A."] * 4, num_layers=1, vocab_size=280)
        >>> g = grad_norms(model, tok, ["Q?", "Who?"], ["A.", "Ann"])
        >>> g.shape, bool((g > 0).all())
        ((2,), True)
    """
    M.check_definition(definition)
    acc = _accelerator(accelerator)
    device = _prepare_model(model, acc)
    features = _encode_pairs(tokenizer, questions, answers, max_length, template)
    if definition == "open_unlearning":
        for f in features:
            scored = [i for i, lab in enumerate(f["labels"]) if lab != IGNORE_INDEX]
            if len(scored) > 1:
                f["labels"] = list(f["labels"])
                f["labels"][scored[-1]] = IGNORE_INDEX
    params = [q for q in model.parameters() if q.requires_grad]
    frozen = not params
    if frozen:
        params = list(model.parameters())

    def step(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with acc.autocast():
            logits = model(input_ids=batch["input_ids"].to(device), use_cache=False).logits
        logits, labels = M.causal_shift(logits.float(), batch["labels"].to(device))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return {"gradnorm": torch.tensor([M.grad_norm(grads, p=p)], dtype=torch.float64)}

    was_training = model.training
    model.train(definition == "open_unlearning")
    if frozen:
        for q in params:
            q.requires_grad_(True)
    try:
        with torch.enable_grad():
            out = _sharded_loop(features, _RowCollator(_pad_id(tokenizer), "right"), 1, acc, step)
    finally:
        if frozen:
            for q in params:
                q.requires_grad_(False)
        model.train(was_training)
    return out["gradnorm"].astype(np.float64)


def _perturbed_matrix(perturbed: Sequence[Sequence[str]]) -> tuple[list[tuple[int, int]], int]:
    index = [(i, j) for i, answers in enumerate(perturbed) for j in range(len(answers))]
    width = max((len(a) for a in perturbed), default=0)
    return index, width


def evaluate_split(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: Any,
    *,
    kind: str = "retain",
    generation: bool = True,
    gradnorm: bool = False,
    max_new_tokens: int = 200,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
    template: str = "plain",
    stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS,
    definition: str = M.DEFAULT_DEFINITION,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Per-item arrays for one split of a TOFU-style dataset (uid, question, answer[, paraphrased_answer,
    perturbed_answers]).

    Args:
        kind: ``"forget"``, ``"retain"`` (the truth ratio's correct answer is the paraphrased answer, falling back to
            the answer when a split has none), ``"other"`` (world facts / real authors: the correct answer is the
            answer itself, as in TOFU's config/eval_everything.yaml and OpenUnlearning's ra/wf_Truth_Ratio) or
            ``"holdout"`` (answers only: MIA and perplexity).
        generation: generate answers for ROUGE (not for holdout).
        gradnorm: compute the GradNorm MIA score.
        definition: metric definition for GradNorm (see :func:`grad_norms`).
        Others: see :func:`answer_stats` / :func:`generate_answers`.

    Returns:
        dict with ``uid`` (list; derived from content when the split has none), ``answer`` (list), ``label_text``
        (the label tokens decoded with ``skip_special_tokens=True``, what ZLib compresses), answer statistics (see
        :func:`answer_stats`), and when available ``paraphrase_avg_nll [n]`` (the truth ratio's correct answer),
        ``perturbed_avg_nll [n, m]`` (NaN where an item has fewer), ``generation``, ``gradnorm``.
    """
    for col in ("question", "answer"):
        if col not in dataset.column_names:
            raise KeyError(f"column {col!r} missing from the split; it has {dataset.column_names}")
    dataset = ensure_uids(dataset)  # keeps existing uids; derives content uids otherwise; rejects duplicates
    acc = _accelerator(accelerator)
    kw = dict(batch_size=batch_size, max_length=max_length, template=template, accelerator=acc)
    uids = [str(u) for u in dataset["uid"]]
    questions, answers = list(dataset["question"]), list(dataset["answer"])
    out: dict[str, Any] = {"uid": uids, "answer": answers}
    out.update(answer_stats(model, tokenizer, questions, answers, token_stats=True, **kw))
    out["label_text"] = [
        tokenizer.decode([int(t) for t in row if t != IGNORE_INDEX], skip_special_tokens=True)
        for row in out["label_ids"]
    ]
    cols = dataset.column_names
    if kind != "holdout" and "perturbed_answers" in cols:
        perturbed = [list(p) for p in dataset["perturbed_answers"]]
        index, width = _perturbed_matrix(perturbed)
        has_para = "paraphrased_answer" in cols and kind != "other"
        correct = list(dataset["paraphrased_answer"]) if has_para else answers
        # one pass over the paraphrases and every perturbed answer, flattened
        flat_q = questions + [questions[i] for i, _ in index]
        flat_a = [c if c else a for c, a in zip(correct, answers)] + [perturbed[i][j] for i, j in index]
        nll = answer_stats(model, tokenizer, flat_q, flat_a, token_stats=False, **kw)["avg_nll"]
        n = len(uids)
        out["paraphrase_avg_nll"] = nll[:n]
        mat = np.full((n, max(width, 1)), np.nan)
        if index:
            rows, cols_j = np.array(index).T
            mat[rows, cols_j] = nll[n:]
        out["perturbed_avg_nll"] = mat
    if generation and kind != "holdout":
        out["generation"] = generate_answers(
            model, tokenizer, questions, max_new_tokens=max_new_tokens, stop_strings=stop_strings, **kw
        )
    if gradnorm:
        out["gradnorm"] = grad_norms(
            model,
            tokenizer,
            questions,
            answers,
            max_length=max_length,
            template=template,
            definition=definition,
            accelerator=acc,
        )
    return out


# ------------------------------------------------------------------------------------------------ the report
def load_result(reference: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A previous :func:`evaluate_unlearning` result, given as the dict itself or the path of its JSON."""
    if isinstance(reference, Mapping):
        return dict(reference)
    path = Path(reference)
    if not path.is_file():
        raise ValueError(f"reference {str(path)!r} is not a file: pass the gold retain model's result JSON or dict")
    with open(path) as fh:
        return json.load(fh)


def _split_names(benchmark: Mapping[str, Any], forget_split: str, retain_split: str | None, holdout_split: str | None):
    names = sorted(benchmark)
    if forget_split not in benchmark:
        raise ValueError(f"forget_split {forget_split!r} not in the benchmark; splits: {names}")
    try:
        paired_retain, paired_holdout = paired_splits(forget_split)
    except ValueError:  # not forgetNN (e.g. MUSE's "forget"): the plain names
        paired_retain, paired_holdout = "retain", "holdout"
    if retain_split is None:
        retain_split = paired_retain
    if holdout_split is None:
        holdout_split = paired_holdout if paired_holdout in benchmark else "holdout"
    for role, name in (("retain_split", retain_split), ("holdout_split", holdout_split)):
        if name not in benchmark:
            raise ValueError(f"{role} {name!r} not in the benchmark; splits: {names} (pass {role}=...)")
    return retain_split, holdout_split


def _subset(ds: Any, max_items: int | None) -> Any:
    if max_items is None or len(ds) <= max_items:
        return ds
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1 or None, got {max_items}")
    idx = np.unique(np.linspace(0, len(ds) - 1, max_items).round().astype(int))  # evenly spread, deterministic
    return ds.select(idx.tolist())


def _f(x: Any) -> float:
    return float(x)


def _split_report(
    arr: dict[str, Any], kind: str, mia_k: float, definition: str = M.DEFAULT_DEFINITION
) -> tuple[dict[str, float], dict[str, dict]]:
    """Aggregates and per-item values of one split from its arrays."""
    n = len(arr["uid"])
    per: dict[str, dict[str, Any]] = {u: {} for u in arr["uid"]}

    def put(name: str, values: Any) -> None:
        for u, v in zip(arr["uid"], values):
            per[u][name] = v if isinstance(v, str) else _f(v)

    agg: dict[str, float] = {"n_items": n}
    put("avg_nll", arr["avg_nll"])
    put("n_tokens", arr["n_tokens"])
    prob = M.probability(arr["avg_nll"])
    put("probability", prob)
    agg["probability"] = _f(prob.mean())
    em = M.exact_memorization(arr["pred_ids"], arr["label_ids"], definition)
    es = M.extraction_strength(arr["pred_ids"], arr["label_ids"], definition)
    put("exact_memorization", em)
    put("extraction_strength", es)
    # items with no scored token (NaN) are left out of the mean, as OpenUnlearning leaves out its None scores
    agg["exact_memorization"] = _f(np.nanmean(em)) if not np.isnan(em).all() else float("nan")
    agg["extraction_strength"] = _f(es.mean())
    agg["perplexity"] = M.perplexity(arr["avg_nll"], arr["n_tokens"])
    if "perturbed_avg_nll" in arr:
        ratio = M.truth_ratio(arr["paraphrase_avg_nll"], arr["perturbed_avg_nll"])
        put("truth_ratio", ratio)
        agg["truth_ratio"] = (
            M.truth_ratio_forget_score(ratio) if kind == "forget" else M.truth_ratio_retain_score(ratio)
        )
        agg["truth_ratio_aggregator"] = "mean min(R, 1/R)" if kind == "forget" else "mean max(0, 1 - R)"
        norm = M.normalised_probability(arr["avg_nll"], arr["perturbed_avg_nll"])
        put("normalised_probability", norm)
        agg["normalised_probability"] = _f(norm.mean())
    if "generation" in arr:
        rouge = M.rouge_scores(arr["generation"], arr["answer"])
        for key, vals in rouge.items():
            put(key, vals)
            agg[key] = _f(vals.mean())
        put("generation", arr["generation"])
    if kind in ("forget", "holdout"):
        mask = arr["mask"]
        put("mia_loss", M.loss_scores(arr["avg_nll"]))
        put("mia_zlib", M.zlib_scores(arr["avg_nll"], arr.get("label_text", arr["answer"])))
        put("mia_min_k", M.min_k_scores(arr["token_logprob"], k=mia_k, mask=mask, definition=definition))
        put(
            "mia_min_k_plus_plus",
            M.min_k_plus_plus_scores(arr["token_logprob"], arr["mu"], arr["sigma"], mia_k, mask, definition),
        )
        if "gradnorm" in arr:
            put("mia_gradnorm", arr["gradnorm"])
    return agg, per


def _reference_per_item(ref: dict[str, Any], role: str, key: str, uids: list[str]) -> np.ndarray | None:
    per = ref.get("splits", {}).get(role, {}).get("per_item", {})
    if not all(u in per and key in per[u] for u in uids):
        return None
    return np.array([per[u][key] for u in uids], dtype=np.float64)


def _load_reference(
    reference: Mapping[str, Any] | str | os.PathLike | None, skip_forget_quality: bool, definitions: str
) -> dict[str, Any] | None:
    """The gold retain model's result (None when skipped), checked to use the same metric definitions."""
    if reference is None and not skip_forget_quality:
        raise ValueError(
            "forget quality needs the gold retain model's result: evaluate the model fine-tuned without the forget "
            "split first and pass reference=<its result dict or JSON path>, or pass skip_forget_quality=True"
        )
    ref = load_result(reference) if reference is not None else None
    ref_meta = (ref or {}).get("meta")
    if ref_meta is not None and ref_meta.get("definitions") != definitions:
        ref_def = ref_meta.get("definitions", "the pre-parity definitions of report_version 1")
        raise ValueError(
            f"the reference was computed with metric definitions {ref_def!r}, this evaluation uses "
            f"{definitions!r}: re-evaluate the gold model with definitions={definitions!r}"
        )
    return ref


def _forget_quality(forget: dict[str, Any], ref: dict[str, Any] | None) -> tuple[float | None, list[str]]:
    """Forget quality: the KS test between the truth ratios of this model and of the gold model on the forget
    split (``forget`` holds this model's forget-split arrays). Returns ``(value or None, notes)``."""
    if ref is None:
        return None, ["forget quality and privleak skipped (skip_forget_quality=True: no gold retain-model reference)"]
    forget_uids = forget["uid"]
    ref_uids = sorted(ref["splits"]["forget"]["per_item"])
    if ref_uids != sorted(forget_uids):
        raise ValueError("the reference result was computed on a different forget set (its uids differ)")
    ref_tr = _reference_per_item(ref, "forget", "truth_ratio", forget_uids)
    if ref_tr is None:
        raise ValueError("the reference result has no per-item truth ratios on the forget split")
    return M.forget_quality(M.truth_ratio(forget["paraphrase_avg_nll"], forget["perturbed_avg_nll"]), ref_tr), []


def _utility_components(
    splits: dict[str, Any], roles: list[tuple[str, str, str]], generation: bool
) -> tuple[dict[str, float], list[str]]:
    """The components of TOFU's model utility (its harmonic mean): {retain, real authors, world facts} x
    {probability, ROUGE, truth ratio}, from the split aggregates. Returns ``(components, notes)``."""
    components: dict[str, float] = {}
    for role, _split, kind in roles:
        if kind not in ("retain", "other"):
            continue
        agg = splits[role]["aggregate"]
        components[f"{role}_probability"] = agg["normalised_probability" if kind == "other" else "probability"]
        if "rougeL_recall" in agg:
            components[f"{role}_rougeL_recall"] = agg["rougeL_recall"]
        if "truth_ratio" in agg:
            components[f"{role}_truth_ratio"] = agg["truth_ratio"]
    notes = [] if generation else ["generation=False: ROUGE is not part of model utility"]
    return components, notes


def _membership_inference(
    splits: dict[str, Any], arrays: dict[str, dict[str, Any]], ref: dict[str, Any] | None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Membership inference on forget (label 0) vs holdout (label 1): AUC of every attack scored per item, the
    Reference attack when the gold model's per-item NLLs are there (its scores are added to the per-item values),
    and privleak against the gold model's AUCs. Returns ``({attack: {"auc", "privleak"}}, notes)``."""
    notes: list[str] = []
    mia: dict[str, dict[str, Any]] = {}
    forget_uids = arrays["forget"]["uid"]
    fper, hper = splits["forget"]["per_item"], splits["holdout"]["per_item"]
    holdout_uids = arrays["holdout"]["uid"]
    attacks = [a for a in MIA_ATTACKS if a != "reference" and f"mia_{a}" in fper[forget_uids[0]]]
    scores = {
        a: ([fper[u][f"mia_{a}"] for u in forget_uids], [hper[u][f"mia_{a}"] for u in holdout_uids]) for a in attacks
    }
    if ref is not None:
        ref_f = _reference_per_item(ref, "forget", "avg_nll", forget_uids)
        ref_h = _reference_per_item(ref, "holdout", "avg_nll", holdout_uids)
        if ref_f is not None and ref_h is not None:
            sf = M.reference_scores(arrays["forget"]["avg_nll"], ref_f)
            sh = M.reference_scores(arrays["holdout"]["avg_nll"], ref_h)
            scores["reference"] = (sf.tolist(), sh.tolist())
            for u, v in zip(forget_uids, sf):
                fper[u]["mia_reference"] = _f(v)
            for u, v in zip(holdout_uids, sh):
                hper[u]["mia_reference"] = _f(v)
        else:
            notes.append("Reference MIA skipped: the reference lacks per-item avg_nll on the forget/holdout uids")
    for attack, (sf, sh) in scores.items():
        auc = M.mia_auc(sf, sh)
        entry: dict[str, Any] = {"auc": auc, "privleak": None}
        ref_auc = (ref or {}).get("mia", {}).get(attack, {}).get("auc")
        if ref_auc is not None:
            entry["privleak"] = M.privleak(auc, ref_auc)
        mia[attack] = entry
    return mia, notes


def evaluate_unlearning(
    model: torch.nn.Module,
    tokenizer: Any,
    benchmark: Any,
    reference: Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    forget_split: str = "forget10",
    retain_split: str | None = None,
    holdout_split: str | None = None,
    other_splits: Sequence[str] = ("real_authors", "world_facts"),
    skip_forget_quality: bool = False,
    generation: bool = True,
    max_new_tokens: int = 200,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
    template: str = "plain",
    stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS,
    retain_max_items: int | None = 400,
    gradnorm: bool = True,
    mia_k: float = 0.4,
    definitions: str = M.DEFAULT_DEFINITION,
    name: str | None = None,
    accelerator: Any = None,
) -> dict[str, Any]:
    """The TOFU-style unlearning report of ``model`` on a fictitious-authors benchmark (METRICS.md), as a JSON-able
    dict with aggregates and per-item values keyed by uid.

    Args:
        model: the model to evaluate (target, gold retain model, or an unlearned model).
        tokenizer: its tokenizer.
        benchmark: a ``DatasetDict`` (e.g. ``hf_unlearn.benchmarks.fictitious_authors.build()``), a mapping of split
            name -> Dataset, or the path of a ``save_to_disk`` folder.
        reference: the gold retain model's result (a previous ``evaluate_unlearning`` dict or its JSON path) for
            forget quality, privleak and the Reference MIA. Required unless ``skip_forget_quality=True``.
        forget_split: e.g. ``"forget01"``, ``"forget05"``, ``"forget10"``.
        retain_split: default ``retain{100 - pct}`` (``retain90`` for ``forget10``).
        holdout_split: default ``holdout{pct}``, else ``holdout``.
        other_splits: other-knowledge splits scored when present in the benchmark (probability there is TOFU's
            normalised probability).
        skip_forget_quality: evaluate without a reference (e.g. the gold model itself): forget quality and privleak
            are then None, said so in ``notes``.
        generation: generate answers for ROUGE (the costly part); without it ROUGE is absent from model utility.
        max_new_tokens: generation length (TOFU 200).
        batch_size: per-process batch size for forward passes and generation.
        max_length: tokenization limit (prompt + answer).
        template: prompt template (``"plain"`` or ``"chat"``), as used in training.
        stop_strings: generations are cut at the first of these.
        retain_max_items: evaluate at most this many retain items (evenly spread; TOFU uses 400). None: all.
        gradnorm: compute the GradNorm MIA (a backward pass per forget/holdout sample).
        mia_k: k of Min-K% and Min-K%++.
        definitions: ``"open_unlearning"`` (default: the numbers OpenUnlearning prints for the same model and data;
            exact memorization, extraction strength, Min-K%, Min-K%++ and GradNorm leave out the final label token,
            extraction strength is 1/N when only the last token is wrong, GradNorm runs in train mode) or
            ``"paper"`` (every label token scored, extraction strength 0 when the last token is wrong, GradNorm in
            eval mode). Recorded in ``meta["definitions"]``; a reference computed under other definitions is
            rejected. See docs/metrics.md.
        name: a label for the report (default: the model's ``name_or_path``).
        accelerator: an ``accelerate.Accelerator``; created when None. Items are sharded over its processes.

    Returns:
        ``{"name", "meta", "splits": {role: {"split", "aggregate", "per_item": {uid: {...}}}}, "forget_quality",
        "model_utility", "model_utility_components", "mia": {attack: {"auc", "privleak"}}, "perplexity", "cost",
        "notes"}``. Identical numbers for the same model and inputs (for a model with dropout, GradNorm under
        ``"open_unlearning"`` runs in train mode and depends on the torch RNG state: seed it to repeat it).

    Raises:
        ValueError: no reference and ``skip_forget_quality`` False, an unknown split, or a reference computed on a
            different forget set.
    """
    from datasets import DatasetDict, load_from_disk

    from hf_unlearn.utils.profiling import measure

    M.check_definition(definitions)
    ref = _load_reference(reference, skip_forget_quality, definitions)
    if isinstance(benchmark, (str, os.PathLike)):
        benchmark = load_from_disk(str(benchmark))
    if not isinstance(benchmark, (DatasetDict, Mapping)):
        raise ValueError(
            f"benchmark must be a DatasetDict, a mapping of splits or a path, got {type(benchmark).__name__}"
        )
    retain_split, holdout_split = _split_names(benchmark, forget_split, retain_split, holdout_split)
    if ref is not None:
        ref_split = ref.get("splits", {}).get("forget", {}).get("split")
        if ref_split != forget_split:
            raise ValueError(f"the reference was computed on forget split {ref_split!r}, not {forget_split!r}")
    acc = _accelerator(accelerator)
    kw = dict(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_length=max_length,
        template=template,
        stop_strings=stop_strings,
        accelerator=acc,
    )
    roles = [("forget", forget_split, "forget"), ("retain", retain_split, "retain")]
    roles += [(s, s, "other") for s in other_splits if s in benchmark]
    roles += [("holdout", holdout_split, "holdout")]
    notes = [f"other split {s!r} not in the benchmark: skipped" for s in other_splits if s not in benchmark]

    report: dict[str, Any] = {"splits": {}}
    arrays: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with measure() as cost:
        for role, split, kind in roles:
            ds = benchmark[split] if role != "retain" else _subset(benchmark[split], retain_max_items)
            arrays[role] = evaluate_split(
                model,
                tokenizer,
                ds,
                kind=kind,
                generation=generation,
                gradnorm=gradnorm and kind in ("forget", "holdout"),
                definition=definitions,
                **kw,
            )
            agg, per = _split_report(arrays[role], kind, mia_k, definitions)
            report["splits"][role] = {"split": split, "aggregate": agg, "per_item": per}
    answer_tokens = sum(int(a["n_tokens"].sum()) for a in arrays.values())

    fq, fq_notes = _forget_quality(arrays["forget"], ref)
    components, utility_notes = _utility_components(report["splits"], roles, generation)
    mia, mia_notes = _membership_inference(report["splits"], arrays, ref)
    notes += fq_notes + utility_notes + mia_notes

    report.update(
        {
            "name": name or str(getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__),
            "forget_quality": fq,
            "model_utility": M.model_utility(components) if components else None,
            "model_utility_components": components,
            "mia": mia,
            "perplexity": {
                "retain": report["splits"]["retain"]["aggregate"]["perplexity"],
                "holdout": report["splits"]["holdout"]["aggregate"]["perplexity"],
            },
            "cost": {
                "wall_seconds": round(time.perf_counter() - t0, 3),
                "answer_tokens_scored": answer_tokens,
                **cost.as_dict(),
            },
            "meta": {
                "report_version": REPORT_VERSION,
                "forget_split": forget_split,
                "retain_split": retain_split,
                "holdout_split": holdout_split,
                "other_splits": [s for s in other_splits if s in benchmark],
                "generation": generation,
                "max_new_tokens": max_new_tokens,
                "max_length": max_length,
                "template": template,
                "retain_max_items": retain_max_items,
                "mia_k": mia_k,
                "definitions": definitions,
                "truth_ratio_correct_answer": {
                    "forget": "paraphrased_answer",
                    "retain": "paraphrased_answer",
                    "other": "answer",
                },
                "num_processes": acc.num_processes,
            },
            "notes": notes,
        }
    )
    return report
