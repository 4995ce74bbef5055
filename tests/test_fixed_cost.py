"""The fixed cost of a small request: lazy tokenization gives the tokens of Dataset.map, batched QA encoding the ids
of encode_qa, and the Trainer's opening free_memory() skips gc.collect only when the accelerator holds nothing."""

from __future__ import annotations

import copy
import gc

import accelerate.utils.memory as accel_memory
import pytest
import torch
from datasets import Dataset

from hf_unlearn.data import LazyEncoded, encode_lazily, encode_qa, encode_qa_many, tokenize_any
from hf_unlearn.methods.grad_ascent.method import GradAscent, GradAscentConfig
from hf_unlearn.training.trainer import _no_idle_gc


def test_lazy_encoding_equals_dataset_map_and_tokenizes_only_what_is_read(tiny_llama_trained, qa_rows):
    tok = tiny_llama_trained[1]
    for rows in (qa_rows, [{"uid": r["uid"], "text": r["question"] + " " + r["answer"]} for r in qa_rows]):
        ds = Dataset.from_list(rows)
        mapped = tokenize_any(ds, tok, max_length=20)
        lazy = encode_lazily(ds, tok, max_length=20)
        assert isinstance(lazy, LazyEncoded) and len(lazy) == len(mapped)
        assert lazy._cache == {}  # nothing tokenized up front
        for i in (5, 0, 5):
            assert lazy[i] == {k: mapped[i][k] for k in ("input_ids", "attention_mask", "labels", "uid")}
        assert sorted(lazy._cache) == [0, 5]
    tokenized = tokenize_any(Dataset.from_list(qa_rows), tok)
    assert encode_lazily(tokenized, tok) is tokenized  # already tokenized: unchanged
    with pytest.raises(KeyError, match="cannot tell how to tokenize"):
        LazyEncoded(Dataset.from_list([{"foo": 1}]), tok)


def test_batched_qa_encoding_equals_encode_qa(tiny_llama_trained, qa_rows):
    tok = tiny_llama_trained[1]
    qs = [r["question"] for r in qa_rows] + ["Who?"]
    ans = [r["answer"] for r in qa_rows] + ["  Ann, of course."]
    for max_length in (128, 12, 3):  # 12 and 3 truncate the answer, then the prompt
        got = encode_qa_many(tok, qs, ans, max_length=max_length)
        assert got == [encode_qa(tok, q, a, max_length=max_length) for q, a in zip(qs, ans)]
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        encode_qa_many(tok, ["a", "b"], ["c"])


def _count_collections(monkeypatch) -> dict[str, int]:
    calls = {"n": 0}

    def counting_collect(*args, **kwargs):
        calls["n"] += 1
        return gc.collect(*args, **kwargs)

    class _Gc:  # accelerate's memory module calls gc.collect through its own `gc` name
        collect = staticmethod(counting_collect)

    monkeypatch.setattr(accel_memory, "gc", _Gc)
    return calls


def test_fresh_trainer_skips_the_idle_gc_collect(tiny_llama_trained, qa_rows, monkeypatch):
    calls = _count_collections(monkeypatch)
    model, tok = copy.deepcopy(tiny_llama_trained[0]), tiny_llama_trained[1]
    cfg = GradAscentConfig(max_steps=1, batch_size=4, learning_rate=1e-5)
    GradAscent(cfg).unlearn(model, tok, Dataset.from_list(qa_rows[:4]))
    assert calls["n"] == 0


def test_busy_accelerator_still_collects(monkeypatch):
    from accelerate import Accelerator

    calls = _count_collections(monkeypatch)
    acc = Accelerator()
    with _no_idle_gc(acc):
        acc.free_memory()  # nothing prepared: no collection
        assert calls["n"] == 0
        acc.prepare_model(torch.nn.Linear(2, 2))
        acc.free_memory()  # a prepared model to release: the original free_memory, gc.collect included
        assert calls["n"] == 1 and acc._models == []
    assert "free_memory" not in vars(acc)  # the class method is back
