"""Batched greedy generation (left padding, KV cache, stop strings, length-sorted batches) gives exactly the text of
a plain one-item-at-a-time ``model.generate`` loop, and stop strings end a batch early."""

from __future__ import annotations

import copy

import torch

from hf_unlearn.data import IGNORE_INDEX, encode_qa
from hf_unlearn.evaluation import generate_answers

MAX_NEW = 16


def _questions(qa_rows) -> list[str]:
    # seen and unseen questions of different lengths: batches mix prompt lengths, so left padding matters
    return [r["question"] for r in qa_rows[:10]] + ["Who?", "What is the secret code of the item number 99 then?"]


def _one_at_a_time(model, tok, questions, stops) -> tuple[list[str], list[str]]:
    """Reference: model.generate per item with default settings, decoded up to EOS, then cut at the stop strings."""
    raw, cut = [], []
    for q in questions:
        enc = encode_qa(tok, q, "x", add_eos=False)
        prompt = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE_INDEX]
        with torch.no_grad():
            seq = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_NEW, pad_token_id=tok.pad_token_id)
        new = seq[0, len(prompt) :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        text = tok.decode(new, skip_special_tokens=True)
        raw.append(text)
        for s in stops:
            if s in text:
                text = text[: text.index(s)]
        cut.append(text.strip())
    return raw, cut


def test_batched_generation_with_stop_strings_equals_one_at_a_time_generate(tiny_llama_trained, qa_rows):
    model, tok = copy.deepcopy(tiny_llama_trained[0]).eval(), tiny_llama_trained[1]
    qs = _questions(qa_rows)
    stop = " is"  # inside the trained answers ("The code of item i is ..."), well before their EOS
    raw, ref = _one_at_a_time(model, tok, qs, (stop,))
    assert sum(stop in r for r in raw) >= 5  # the stop string really cuts (else the test proves nothing)
    assert any(r.index(stop) + len(stop) < len(r) for r in raw if stop in r)  # ... text that continued past it
    for bs in (4, 12):
        got = generate_answers(model, tok, qs, max_new_tokens=MAX_NEW, batch_size=bs, stop_strings=(stop,))
        assert got == ref


def test_stop_strings_end_the_batch_early(tiny_llama_trained, qa_rows):
    model, tok = copy.deepcopy(tiny_llama_trained[0]).eval(), tiny_llama_trained[1]
    qs = [r["question"] for r in qa_rows[:8]]
    calls = {"n": 0}

    def count(*_args, **_kwargs):
        calls["n"] += 1

    handle = model.register_forward_pre_hook(count)
    try:
        plain = generate_answers(model, tok, qs, max_new_tokens=MAX_NEW, batch_size=8, stop_strings=())
        without = calls["n"]
        calls["n"] = 0
        cut = generate_answers(model, tok, qs, max_new_tokens=MAX_NEW, batch_size=8, stop_strings=(" is",))
        with_stop = calls["n"]
    finally:
        handle.remove()
    assert all(" is" in p for p in plain)
    assert cut == [p[: p.index(" is")].strip() for p in plain]
    assert with_stop < without  # every sequence hit " is" before its EOS: fewer decoding steps
