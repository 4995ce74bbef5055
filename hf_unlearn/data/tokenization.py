"""Tokenization with labels masked to the answer, plain-text tokenization, and collators.

QA examples become ``input_ids`` / ``attention_mask`` / ``labels`` where ``labels`` is -100 on every prompt token
and equals ``input_ids`` on the answer tokens (and the closing EOS). The prompt and the answer are tokenized
separately and concatenated, so the mask boundary is exact whatever the tokenizer merges.

Templates:
    * ``plain``: ``"Question: {question}\\nAnswer:"`` then ``" {answer}"`` then EOS (the tokenizer's BOS first when
      it adds one).
    * ``chat``: the tokenizer's chat template with a user turn and the generation prompt, then the answer and EOS.

Example:
    >>> from hf_unlearn.models import train_bpe_tokenizer
    >>> tok = train_bpe_tokenizer(["Question: Who? Answer: Ann wrote it."] * 4, vocab_size=300)
    >>> enc = encode_qa(tok, "Who?", "Ann wrote it.")
    >>> n_answer = sum(1 for x in enc["labels"] if x != -100)
    >>> n_answer == len(tok(" Ann wrote it.", add_special_tokens=False)["input_ids"]) + 1  # + EOS
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from datasets import Dataset

from hf_unlearn.data.loading import UID

IGNORE_INDEX = -100
_QUIET_BELOW = 5000  # rows: mapping smaller datasets shows no progress bar


@contextmanager
def _quiet_for(ds: Dataset):
    """Hide datasets' progress bars while mapping small datasets (they are noise in tests and the demo)."""
    was = datasets.is_progress_bar_enabled()
    if was and len(ds) < _QUIET_BELOW:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


PLAIN_PROMPT = "Question: {question}\nAnswer:"


def format_prompt(tokenizer: Any, question: str, template: str = "plain") -> str:
    """The prompt text (everything before the answer) for ``question``."""
    if template == "plain":
        return PLAIN_PROMPT.format(question=question)
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("template='chat' needs a tokenizer with a chat_template; use template='plain'")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    raise ValueError(f"template must be 'plain' or 'chat', got {template!r}")


def _prompt_ids(tokenizer: Any, prompt: str, template: str) -> list[int]:
    if template == "chat":  # the chat template already holds any BOS it wants
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def encode_qa(
    tokenizer: Any,
    question: str,
    answer: str,
    *,
    max_length: int = 128,
    template: str = "plain",
    add_eos: bool = True,
) -> dict[str, list[int]]:
    """Token ids and answer-only labels for one question/answer pair.

    Args:
        tokenizer: a Hugging Face tokenizer.
        question: question text.
        answer: answer text.
        max_length: maximum total tokens; the answer is cut first, then the prompt from the left, keeping at least
            one answer token.
        template: ``"plain"`` or ``"chat"``.
        add_eos: append the EOS token to the answer (and train on it).

    Returns:
        dict with ``input_ids``, ``attention_mask``, ``labels`` (lists of int).
    """
    prompt_ids = _prompt_ids(tokenizer, format_prompt(tokenizer, question, template), template)
    ans_text = answer if template == "chat" else " " + answer.lstrip()
    answer_ids = tokenizer(ans_text, add_special_tokens=False)["input_ids"]
    return _assemble_qa(tokenizer, question, prompt_ids, answer_ids, max_length, add_eos)


def encode_qa_many(
    tokenizer: Any,
    questions: list[str],
    answers: list[str],
    *,
    max_length: int = 128,
    template: str = "plain",
    add_eos: bool = True,
) -> list[dict[str, list[int]]]:
    """:func:`encode_qa` of many pairs, with one batched tokenizer call for the prompts and one for the answers
    (the same ids; far less per-item Python work than a call per pair).

    Example:
        >>> from hf_unlearn.models import train_bpe_tokenizer
        >>> tok = train_bpe_tokenizer(["Question: Who? Answer: Ann wrote it."] * 4, vocab_size=300)
        >>> encode_qa_many(tok, ["Who?", "Why?"], ["Ann.", "It is"]) == [encode_qa(tok, "Who?", "Ann."),
        ...                                                               encode_qa(tok, "Why?", "It is")]
        True
    """
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
    if not questions:
        return []
    prompts = [format_prompt(tokenizer, q, template) for q in questions]
    prompt_ids = tokenizer(prompts, add_special_tokens=template != "chat")["input_ids"]
    ans_texts = [a if template == "chat" else " " + a.lstrip() for a in answers]
    answer_ids = tokenizer(ans_texts, add_special_tokens=False)["input_ids"]
    return [
        _assemble_qa(tokenizer, q, list(p), list(a), max_length, add_eos)
        for q, p, a in zip(questions, prompt_ids, answer_ids)
    ]


def _assemble_qa(
    tokenizer: Any, question: str, prompt_ids: list[int], answer_ids: list[int], max_length: int, add_eos: bool
) -> dict[str, list[int]]:
    if add_eos and tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    if not answer_ids:
        raise ValueError(f"the answer to {question!r} tokenizes to nothing: an empty answer cannot be trained on")
    if len(prompt_ids) + len(answer_ids) > max_length:
        answer_ids = answer_ids[: max(1, max_length - len(prompt_ids))]
        prompt_ids = prompt_ids[-(max_length - len(answer_ids)) :] if max_length > len(answer_ids) else []
    ids = prompt_ids + answer_ids
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + list(answer_ids),
    }


def tokenize_qa(
    ds: Dataset,
    tokenizer: Any,
    *,
    max_length: int = 128,
    template: str = "plain",
    question_key: str = "question",
    answer_key: str = "answer",
    keep_columns: tuple[str, ...] = (UID,),
) -> Dataset:
    """Tokenize a QA dataset with labels masked to the answer (see :func:`encode_qa`).

    Raises:
        KeyError: if the question or answer column is missing (names the columns present).
    """
    for key in (question_key, answer_key):
        if key not in ds.column_names:
            raise KeyError(f"column {key!r} not found; the dataset has columns {ds.column_names}")
    remove = [c for c in ds.column_names if c not in keep_columns]
    _map = _qa_encoder(tokenizer, max_length, template, question_key, answer_key)
    with _quiet_for(ds):
        return ds.map(_map, remove_columns=remove, desc="tokenizing QA")


def _qa_encoder(
    tokenizer: Any, max_length: int, template: str, question_key: str = "question", answer_key: str = "answer"
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def _map(ex: dict[str, Any]) -> dict[str, Any]:
        return encode_qa(tokenizer, ex[question_key], ex[answer_key], max_length=max_length, template=template)

    return _map


def _text_encoder(
    tokenizer: Any, max_length: int, text_key: str = "text", add_eos: bool = True
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def _map(ex: dict[str, Any]) -> dict[str, Any]:
        ids = tokenizer(ex[text_key], add_special_tokens=True)["input_ids"]
        if add_eos and tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        ids = ids[:max_length]
        if not ids:
            raise ValueError(f"text of example {ex.get(UID)!r} tokenizes to nothing")
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}

    return _map


def tokenize_text(
    ds: Dataset,
    tokenizer: Any,
    *,
    max_length: int = 128,
    text_key: str = "text",
    keep_columns: tuple[str, ...] = (UID,),
    add_eos: bool = True,
) -> Dataset:
    """Tokenize a plain-text (verbatim) corpus: every token is a label. Long texts are truncated."""
    if text_key not in ds.column_names:
        raise KeyError(f"column {text_key!r} not found; the dataset has columns {ds.column_names}")
    remove = [c for c in ds.column_names if c not in keep_columns]
    _map = _text_encoder(tokenizer, max_length, text_key, add_eos)
    with _quiet_for(ds):
        return ds.map(_map, remove_columns=remove, desc="tokenizing text")


def tokenize_any(ds: Dataset, tokenizer: Any, *, max_length: int = 128, template: str = "plain") -> Dataset:
    """Tokenize QA data (question/answer columns) or text data (text column), whichever ``ds`` holds.

    A dataset that is already tokenized (has ``input_ids`` and ``labels``) is returned unchanged.
    """
    cols = set(ds.column_names)
    if {"input_ids", "labels"} <= cols:
        return ds
    if {"question", "answer"} <= cols:
        return tokenize_qa(ds, tokenizer, max_length=max_length, template=template)
    if "text" in cols:
        return tokenize_text(ds, tokenizer, max_length=max_length)
    raise KeyError(
        f"cannot tell how to tokenize a dataset with columns {ds.column_names}: expected question/answer, text, "
        "or pre-tokenized input_ids/labels"
    )


def encode_examples(
    ds: Dataset, tokenizer: Any, *, max_length: int = 128, template: str = "plain"
) -> list[dict[str, Any]]:
    """:func:`tokenize_any` into a list of example dicts (``input_ids``, ``attention_mask``, ``labels``, ``uid``),
    without ``Dataset.map``.

    The tokens are the same as :func:`tokenize_any`'s. Use it for request-sized sets (a forget set), where
    ``map``'s fixed cost (fingerprinting, writing an Arrow table) would exceed the tokenization itself.

    Raises:
        KeyError: as :func:`tokenize_any`.
    """
    cols = set(ds.column_names)
    keep = [c for c in ("input_ids", "attention_mask", "labels", UID) if c in cols]
    if {"input_ids", "labels"} <= cols:
        return ds.select_columns(keep).to_list()
    if {"question", "answer"} <= cols:
        fn = _qa_encoder(tokenizer, max_length, template)
        rows = ds.select_columns(["question", "answer"] + ([UID] if UID in cols else [])).to_list()
    elif "text" in cols:
        fn = _text_encoder(tokenizer, max_length)
        rows = ds.select_columns(["text"] + ([UID] if UID in cols else [])).to_list()
    else:
        tokenize_any(ds, tokenizer, max_length=max_length, template=template)  # raises its KeyError
        raise AssertionError("unreachable")
    return [{**fn(r), **({UID: r[UID]} if UID in r else {})} for r in rows]


class LazyEncoded(torch.utils.data.Dataset):
    """A raw QA/text dataset that tokenizes a row the first time it is read (then keeps it).

    Same tokens as :func:`tokenize_any` (the same encoders), but no up-front ``Dataset.map`` over the whole set: an
    unlearning request pairs its few forget batches with a handful of retain rows, and tokenizing all of a large
    retain set (plus ``map``'s fingerprinting and Arrow writing) would dominate its cost. Rows carry ``uid`` when the
    dataset has that column.

    Args:
        ds: a dataset with question/answer or text columns.
        tokenizer: the tokenizer.
        max_length: tokenization limit.
        template: prompt template of :func:`encode_qa`.

    Raises:
        KeyError: as :func:`tokenize_any`, at construction.

    Example:
        >>> from datasets import Dataset
        >>> from hf_unlearn.models import train_bpe_tokenizer
        >>> tok = train_bpe_tokenizer(["Question: Who? Answer: Ann."] * 4, vocab_size=300)
        >>> lazy = LazyEncoded(Dataset.from_list([{"question": "Who?", "answer": "Ann."}] * 3), tok)
        >>> len(lazy), lazy[1]["input_ids"] == encode_qa(tok, "Who?", "Ann.")["input_ids"]
        (3, True)
    """

    def __init__(self, ds: Dataset, tokenizer: Any, *, max_length: int = 128, template: str = "plain"):
        cols = set(ds.column_names)
        if {"question", "answer"} <= cols:
            self._encode, keys = _qa_encoder(tokenizer, max_length, template), ["question", "answer"]
        elif "text" in cols:
            self._encode, keys = _text_encoder(tokenizer, max_length), ["text"]
        else:
            tokenize_any(ds, tokenizer, max_length=max_length, template=template)  # raises its KeyError
            raise AssertionError("unreachable")
        self._ds = ds.select_columns(keys + ([UID] if UID in cols else []))
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if i not in self._cache:
            row = self._ds[i]
            self._cache[i] = {**self._encode(row), **({UID: row[UID]} if UID in row else {})}
        return self._cache[i]


def encode_lazily(
    ds: Dataset | list, tokenizer: Any, *, max_length: int = 128, template: str = "plain"
) -> Dataset | list | LazyEncoded:
    """Tokenized rows of ``ds`` without an up-front ``Dataset.map``: a tokenized dataset or a list of encoded rows
    is returned as it is, a raw one is wrapped in :class:`LazyEncoded`.

    Example:
        >>> from datasets import Dataset
        >>> from hf_unlearn.models import train_bpe_tokenizer
        >>> tok = train_bpe_tokenizer(["Question: Who? Answer: Ann."] * 4, vocab_size=300)
        >>> type(encode_lazily(Dataset.from_list([{"question": "Who?", "answer": "Ann."}]), tok)).__name__
        'LazyEncoded'
    """
    if isinstance(ds, (list, LazyEncoded)) or {"input_ids", "labels"} <= set(ds.column_names):
        return ds
    return LazyEncoded(ds, tokenizer, max_length=max_length, template=template)


@dataclass
class UnlearnCollator:
    """Pads ``input_ids`` (pad id), ``attention_mask`` (0) and ``labels`` (-100); passes ``uid`` as a list of str.

    Args:
        pad_token_id: id used to pad ``input_ids``.
        padding_side: ``"right"`` (training) or ``"left"`` (generation).
        pad_to_multiple_of: optional length multiple.
    """

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch: dict[str, Any] = {}
        keys = [("input_ids", self.pad_token_id), ("attention_mask", 0), ("labels", IGNORE_INDEX)]
        for key, pad in keys:
            if key not in features[0]:
                continue
            rows = []
            for f in features:
                seq = list(f[key])
                padding = [pad] * (longest - len(seq))
                rows.append(padding + seq if self.padding_side == "left" else seq + padding)
            batch[key] = torch.tensor(rows, dtype=torch.long)
        if "attention_mask" not in batch:
            lens = [len(f["input_ids"]) for f in features]
            mask = [[1] * n + [0] * (longest - n) for n in lens]
            if self.padding_side == "left":
                mask = [row[::-1] for row in mask]
            batch["attention_mask"] = torch.tensor(mask, dtype=torch.long)
        if UID in features[0]:
            batch[UID] = [str(f[UID]) for f in features]
        return batch


def collator_for(tokenizer: Any, padding_side: str = "right") -> UnlearnCollator:
    """An :class:`UnlearnCollator` using the tokenizer's pad id (EOS when it has none)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
    return UnlearnCollator(pad_token_id=pad, padding_side=padding_side)


def iter_batches(
    rows: Any,
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    *,
    batch_size: int,
    device: torch.device | str | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[list[str] | None, dict[str, torch.Tensor]]]:
    """The one batching loop: a ``torch.utils.data.DataLoader`` over encoded rows, collated, moved to ``device``.

    Args:
        rows: encoded rows (a tokenized Dataset, :class:`LazyEncoded` or a list of dicts with ``input_ids``...).
        collate: the collator (e.g. :func:`collator_for`).
        batch_size: rows per batch (the last batch may be smaller).
        device: where the tensors go (None: left where the collator put them).
        shuffle, generator: DataLoader shuffling (default: the rows' order).

    Yields:
        ``(uids, batch)``: the batch's uids (None when the rows carry none), split off so that ``batch`` holds
        tensors only.

    Example:
        >>> rows = [{"uid": "a", "input_ids": [5, 6], "labels": [-100, 6]},
        ...         {"uid": "b", "input_ids": [7], "labels": [7]}]
        >>> [(u, b["labels"].tolist()) for u, b in iter_batches(rows, UnlearnCollator(0), batch_size=2)]
        [(['a', 'b'], [[-100, 6], [7, -100]])]
    """
    loader = torch.utils.data.DataLoader(
        rows, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate
    )
    for batch in loader:
        uids = batch.pop(UID, None)
        yield uids, (batch if device is None else {k: v.to(device) for k, v in batch.items()})


def model_batches(
    model: Any, tokenizer: Any, ds: Dataset, *, batch_size: int, max_length: int = 128, template: str = "plain"
) -> Iterator[tuple[list[str] | None, dict[str, torch.Tensor]]]:
    """:func:`iter_batches` over ``ds`` encoded with :func:`tokenize_any`, padded on the right with the tokenizer's
    pad id, on the device of ``model``'s first parameter: the loop every teacher-forced scorer runs.

    Example:
        >>> # for uids, batch in model_batches(model, tok, ds, batch_size=16): model(**batch)
    """
    tokenized = tokenize_any(ds, tokenizer, max_length=max_length, template=template)
    device = next(model.parameters()).device
    yield from iter_batches(tokenized, collator_for(tokenizer), batch_size=batch_size, device=device)


class PairedDataset(torch.utils.data.Dataset):
    """Forget examples paired with retain examples: item i is ``{"forget": F[i], "retain": R[j]}``.

    The retain partner of item i on its k-th draw is ``perm[(i + k * len(F)) % len(R)]`` for a seeded permutation
    ``perm`` of the retain set: a pass over the forget set pairs it with ``len(F)`` distinct retain examples, later
    epochs move on through the retain set, and the pairing depends only on (item, draw count), never on the order
    an item is drawn in.

    Under several processes an item can be drawn on rank 0 in one epoch and on rank 1 in the next, so a per-process
    draw count would differ from the single-process one: once :meth:`set_epoch` has been called (the unlearning
    engine does it at every epoch start), ``k`` is that epoch instead, and 1 and N processes pair identically.
    """

    def __init__(self, forget: Dataset, retain: Dataset | None, seed: int = 0):
        if len(forget) == 0:
            raise ValueError("the forget set is empty")
        self.forget = forget
        self.retain = retain
        self._order = list(range(len(retain))) if retain is not None else []
        random.Random(seed).shuffle(self._order)
        self._draws: dict[int, int] = {}
        self._epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Pair every item with its ``epoch``-th retain partner from now on (instead of counting draws)."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        item = {"forget": self.forget[i]}
        if self.retain is not None and len(self.retain) > 0:
            if self._epoch is None:
                k = self._draws.get(i, 0)
                self._draws[i] = k + 1
            else:
                k = self._epoch
            item["retain"] = self.retain[self._order[(i + k * len(self.forget)) % len(self._order)]]
        return item


@dataclass
class PairedCollator:
    """Collates :class:`PairedDataset` items into ``{"forget": batch, "retain": batch}``."""

    base: UnlearnCollator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        out = {"forget": self.base([f["forget"] for f in features])}
        if "retain" in features[0]:
            out["retain"] = self.base([f["retain"] for f in features])
        return out
