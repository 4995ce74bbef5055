"""One implementation of each core step: per-token scoring, mean NLL, the batching loop, split naming."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

from hf_unlearn.benchmarks.fictitious_authors import paired_splits
from hf_unlearn.data import UnlearnCollator, collator_for, iter_batches, model_batches, tokenize_any
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.training.losses import (
    kl_to_reference,
    mean_nll,
    shift_for_next_token,
    token_distributions,
    token_logprobs,
)

ANSWERS = ["Zed.", "Quiet bright rivers flow.", "Ox.", "Many small purple kites drifted over the harbour.", "Yes."]
ANSWERS += ["Numbers 12 45.", "Q."]
ROWS = [{"uid": f"u{i}", "question": f"Item {i}?", "answer": a} for i, a in enumerate(ANSWERS)]


@pytest.fixture(scope="module")
def lm():
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in ROWS]
    model, tok = tiny_causal_lm("llama", texts=texts, num_layers=1, hidden_size=16, vocab_size=200, seed=0)
    return model.eval(), tok


def test_shift_and_token_scores_against_a_plain_loop():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 1, 2, -100, -100], [-100, -100, 6, 0, 3]])
    _, targets, mask = shift_for_next_token(logits, labels)
    assert mask.tolist() == [[True, True, False, False], [False, True, True, True]]
    assert targets.tolist() == [[1, 2, 0, 0], [0, 6, 0, 3]]
    logp, _ = token_logprobs(logits, labels)
    dist, tok_lp, _, _ = token_distributions(logits, labels)
    for b in range(2):
        for t in range(4):
            want = torch.log_softmax(logits[b, t], -1)
            assert torch.allclose(dist[b, t], want, atol=1e-6)
            if mask[b, t]:
                assert torch.allclose(logp[b, t], want[labels[b, t + 1]], atol=1e-6)
                assert torch.allclose(tok_lp[b, t], want[labels[b, t + 1]], atol=1e-6)
            else:
                assert logp[b, t] == 0
    assert float(kl_to_reference(logits, logits, labels)) == pytest.approx(0.0, abs=1e-6)


def test_iter_batches_equals_collating_by_hand_and_passes_uids(lm):
    _, tok = lm
    rows = tokenize_any(Dataset.from_list(ROWS), tok, max_length=32)
    collate = collator_for(tok)
    got = list(iter_batches(rows, collate, batch_size=3))
    assert [u for u, _ in got] == [["u0", "u1", "u2"], ["u3", "u4", "u5"], ["u6"]]
    for start, (_, batch) in zip(range(0, len(rows), 3), got):
        want = collate([rows[i] for i in range(start, min(start + 3, len(rows)))])
        want.pop("uid")
        assert batch.keys() == want.keys() and all(torch.equal(batch[k], want[k]) for k in want)
    # no uid column: None; shuffling follows the generator
    plain = [{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}]
    assert [u for u, _ in iter_batches(plain, UnlearnCollator(0), batch_size=1)] == [None, None]

    def shuffled(seed: int) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [u for u, _ in iter_batches(rows, collate, batch_size=1, shuffle=True, generator=gen)]

    order = [shuffled(s) for s in (1, 1, 2)]
    assert order[0] == order[1] != order[2] and sorted(order[0]) == sorted(order[2])


class _BigramLM(torch.nn.Module):
    """logits = a random table row per input token: per-token NLLs that differ a lot between tokens."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)
        torch.nn.init.normal_(self.table.weight, std=3.0, generator=torch.Generator().manual_seed(0))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table(input_ids))


def test_mean_nll_per_token_and_per_example_against_a_plain_loop(lm):
    _, tok = lm
    model = _BigramLM(len(tok))
    ds = Dataset.from_list(ROWS)
    rows = tokenize_any(ds, tok, max_length=32)
    total, count, per_example = 0.0, 0, []
    with torch.no_grad():
        for r in rows:  # one example at a time: no padding involved
            ids = torch.tensor([r["input_ids"]])
            labels = torch.tensor(r["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
            n = int((labels != -100).sum())
            total, count = total + float(nll), count + n
            per_example.append(float(nll) / n)
    by_token = mean_nll(model, (b for _, b in model_batches(model, tok, ds, batch_size=4, max_length=32)))
    by_example = mean_nll(model, (b for _, b in model_batches(model, tok, ds, batch_size=4, max_length=32)), "example")
    assert by_token == pytest.approx(total / count, rel=1e-5)
    assert by_example == pytest.approx(sum(per_example) / len(per_example), rel=1e-5)
    assert by_token != pytest.approx(by_example, rel=1e-3)  # the answers differ in length: the two reductions differ
    with pytest.raises(ValueError, match="'token' or 'example'"):
        mean_nll(model, [], per="sequence")


def test_paired_splits_is_the_one_naming():
    assert paired_splits("forget10") == ("retain90", "holdout10")
    assert paired_splits("forget05") == ("retain95", "holdout05")
    for bad in ("forget", "forget00", "retain90", "forget100"):
        with pytest.raises(ValueError, match="not a forget split name"):
            paired_splits(bad)
