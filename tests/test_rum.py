"""RUM: memorization scores and proxies, grouping, group-by-group unlearning (issue 7)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn

import hf_unlearn
from hf_unlearn.methods.rum import (
    LearningEventRecorder,
    RUMConfig,
    group_by_score,
    sequence_event_stats,
    subset_masks,
    symmetric_kl_per_sequence,
    to_memorization,
    true_memorization,
)
from hf_unlearn.methods.rum import method as rum_method
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.training import finetune


@pytest.fixture
def one_thread():
    """Tiny models run fastest single-threaded on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _qa(n: int, prefix: str = "u") -> list[dict[str, str]]:
    return [{"uid": f"{prefix}{i}", "question": f"What is item {i}?", "answer": f"Item {i} is red."} for i in range(n)]


def _tiny(data, seed=0):
    texts = [f"Question: {d['question']}\nAnswer: {d['answer']}" for d in data]
    return tiny_causal_lm("llama", texts=texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, seed=seed)


# ------------------------------------------------------------------------------------------------- proxies
def test_event_stats_on_hand_made_logits():
    # vocab 3; two sequences; answer tokens at positions 1 and 2 (predicted by logits at 0 and 1)
    logits = torch.zeros(2, 3, 3)
    logits[0, 0] = torch.tensor([math.log(6.0), math.log(3.0), 0.0])  # p = (0.6, 0.3, 0.1)
    logits[0, 1] = torch.tensor([0.0, 0.0, 0.0])  # uniform
    logits[1, 0] = torch.tensor([0.0, math.log(8.0), math.log(1.0)])  # p = (0.1, 0.8, 0.1)
    labels = torch.tensor([[-100, 1, 2], [-100, 1, -100]])
    ev = sequence_event_stats(logits, labels)
    p0 = np.array([0.6, 0.3, 0.1])
    u = np.full(3, 1 / 3)
    assert ev["confidence"].tolist() == pytest.approx([(0.3 + 1 / 3) / 2, 0.8], abs=1e-5)
    assert ev["max_confidence"].tolist() == pytest.approx([(0.6 + 1 / 3) / 2, 0.8], abs=1e-5)
    ne0 = ((p0 * np.log(p0)).sum() + (u * np.log(u)).sum()) / 2
    p1 = np.array([0.1, 0.8, 0.1])
    assert ev["neg_entropy"].tolist() == pytest.approx([ne0, (p1 * np.log(p1)).sum()], abs=1e-5)
    # argmax at pos 0 is token 0 (label 1: wrong); uniform argmax is token 0 (label 2: wrong); item 1 right
    assert ev["accuracy"].tolist() == [0.0, 1.0]
    assert ev["loss"].tolist() == pytest.approx([-(math.log(0.3) + math.log(1 / 3)) / 2, -math.log(0.8)], abs=1e-5)


def test_confident_example_scores_as_less_memorized():
    logits = torch.zeros(2, 2, 4)
    logits[0, 0, 1] = 6.0  # item 0: confident and right
    labels = torch.tensor([[-100, 1], [-100, 1]])
    ev = sequence_event_stats(logits, labels)
    for name in ("confidence", "max_confidence", "neg_entropy"):
        raw = ev[name].tolist()
        assert raw[0] > raw[1]
        mem = to_memorization(name, ev[name])
        assert mem[0] < mem[1], name
    assert to_memorization("accuracy", ev["accuracy"])[0] < to_memorization("accuracy", ev["accuracy"])[1] + 1e-9
    mem_loss = to_memorization("loss", ev["loss"])
    assert mem_loss[0] < mem_loss[1]
    with pytest.raises(KeyError, match="valid"):
        to_memorization("nope", [1.0])


class _FakeLM(nn.Module):
    """A 'model' whose output layer returns the logits it is given (to drive the recorder by hand)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Identity()

    def get_output_embeddings(self):
        return self.head

    def forward(self, logits):
        return self.head(logits)


def test_recorder_hooks_the_training_forward_and_negates_confidence():
    fake = _FakeLM()
    rec = LearningEventRecorder()
    labels = torch.tensor([[-100, 1], [-100, 1]])
    for step in range(3):  # three "epochs": item a confident, item b unsure
        logits = torch.zeros(2, 2, 4)
        logits[0, 0, 1] = 5.0 + step
        rec.on_batch_begin(None, fake, {"labels": labels}, ["a", "b"])
        fake(logits)
        rec.on_batch_end(None, fake, {"labels": labels}, ["a", "b"], loss=None)
    assert rec.counts == {"a": 3, "b": 3}
    assert not fake.head._forward_hooks  # the hook is removed after each micro-batch
    ev = rec.events("confidence")
    expected_a = np.mean([math.exp(5 + s) / (math.exp(5 + s) + 3) for s in range(3)])
    assert ev["a"] == pytest.approx(expected_a, rel=1e-5) and ev["b"] == pytest.approx(0.25, rel=1e-5)
    sc = rec.scores("confidence")
    assert sc["a"] < sc["b"] and sc["a"] == pytest.approx(-ev["a"])
    assert rec.scores("cumulative_loss")["b"] == pytest.approx(3 * math.log(4), rel=1e-5)
    with pytest.raises(KeyError, match="valid"):
        rec.events("zlib")


def test_recorder_inside_finetune(one_thread, tmp_path):
    data = _qa(6)
    model, tok = _tiny(data)
    rec = LearningEventRecorder()
    finetune(model, tok, data, num_epochs=2, batch_size=4, learning_rate=1e-2, callbacks=[rec])
    assert rec.counts == {d["uid"]: 2 for d in data}  # every example, once per epoch
    acc = rec.events("accuracy")
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    rec.save(tmp_path / "ev.json")
    back = LearningEventRecorder.load(tmp_path / "ev.json")
    assert back.scores("max_confidence") == pytest.approx(rec.scores("max_confidence"))


def test_symmetric_kl_hand_made():
    a = torch.zeros(1, 2, 2)
    b = torch.zeros(1, 2, 2)
    b[0, 0] = torch.tensor([math.log(3.0), 0.0])  # p_b = (0.75, 0.25), p_a uniform
    labels = torch.tensor([[-100, 0]])
    kl = float(symmetric_kl_per_sequence(a, b, labels)[0])
    pa, pb = np.array([0.5, 0.5]), np.array([0.75, 0.25])
    assert kl == pytest.approx(((pa - pb) * (np.log(pa) - np.log(pb))).sum(), rel=1e-5)
    assert float(symmetric_kl_per_sequence(a, a, labels)[0]) == 0.0


def test_subset_masks_balanced_and_random():
    m = subset_masks(20, 6, 0.7, seed=1)
    assert (m.sum(0) == 4).all()  # each item in round(0.7 * 6) models
    r = subset_masks(20, 6, 0.7, seed=1, design="random")
    assert (r.sum(1) == 14).all()
    assert (subset_masks(20, 6, 0.7, seed=1) == m).all()
    with pytest.raises(ValueError, match="design"):
        subset_masks(5, 3, design="nope")


def test_true_memorization_ranks_atypical_above_typical(one_thread):
    # ten answers follow one pattern; one answer nobody else predicts
    data = [{"uid": f"t{i}", "question": f"What color is box {i}?", "answer": "It is blue."} for i in range(10)]
    data.append({"uid": "odd", "question": "What color is box 99?", "answer": "Zebra stripes."})
    model, tok = _tiny(data)
    res = true_memorization(
        model, tok, data, n_models=6, train_kwargs={"num_epochs": 20, "learning_rate": 2e-2, "batch_size": 8}
    )
    typical = [res.scores[f"t{i}"] for i in range(10)]
    assert res.scores["odd"] > max(typical) + 0.2
    assert res.details["out_mean"]["odd"] < res.details["in_mean"]["odd"]
    assert len(res.details["run_seconds"]) == 6 and res.seconds > 0


# ------------------------------------------------------------------------------------------------ grouping
def test_grouping_deterministic_and_disjoint():
    rng = random.Random(0)
    scores = {f"u{i}": rng.random() for i in range(20)}
    scores["tie_a"] = scores["tie_b"] = 0.5
    g1 = group_by_score(scores)
    shuffled = dict(sorted(scores.items(), key=lambda kv: rng.random()))
    assert group_by_score(shuffled) == g1
    flat = [u for g in g1 for u in g]
    assert sorted(flat) == sorted(scores) and len(flat) == len(set(flat))  # a partition
    assert max(scores[u] for u in g1[0]) <= min(scores[u] for u in g1[1])
    assert max(scores[u] for u in g1[1]) <= min(scores[u] for u in g1[2])
    # top / median / bottom n with the rest skipped: exact sizes, medium group around the median
    g2 = group_by_score(scores, group_size=3, rest="skip")
    assert [len(g) for g in g2] == [3, 3, 3]
    assert set(g2[0]) == set(sorted(scores, key=lambda u: (scores[u], u))[:3])
    med = np.median(list(scores.values()))
    far = sorted(set(scores) - set(g2[0]) - set(g2[2]), key=lambda u: abs(scores[u] - med))
    assert set(g2[1]) == set(far[:3])
    g3 = group_by_score(scores, group_size=3, rest="nearest")
    assert sorted(u for g in g3 for u in g) == sorted(scores)
    q = group_by_score(scores, "quantiles", n_groups=4)
    assert [len(g) for g in q] == [6, 6, 5, 5] and sorted(u for g in q for u in g) == sorted(scores)
    with pytest.raises(ValueError, match="need 24"):
        group_by_score(scores, group_size=8)
    with pytest.raises(ValueError, match="NaN"):
        group_by_score({"a": float("nan"), "b": 1.0, "c": 2.0})


# ---------------------------------------------------------------------------------------------- the method
def test_config_validation():
    with pytest.raises(ValueError, match="group_methods"):
        RUMConfig(group_methods="nope")
    with pytest.raises(ValueError, match="retain_mode"):
        RUMConfig(retain_mode="keep")
    with pytest.raises(ValueError, match="alphas"):
        RUMConfig(alphas=[0.99, 1.5, 0.97])
    with pytest.raises(ValueError, match="epoch_over"):
        RUMConfig(epoch_over="both")
    cfg = RUMConfig(grouping="quantiles", n_groups=5)
    assert [cfg.per_group("alphas", g, 5) for g in range(5)] == [0.99, 0.97, 0.97, 0.97, 0.97]
    with pytest.raises(ValueError, match="entries"):
        RUMConfig(lr_scales=[1.0, 1.0]).per_group("lr_scales", 0, 3)


@pytest.fixture
def spy(monkeypatch):
    calls = []

    def fake_run_unlearning(trainer_cls, model, tokenizer, forget, retain, config, **kw):
        if kw.get("driven_by") == "retain":  # official loop: R goes first, the trainer swaps the roles back
            forget, retain = retain, forget
        calls.append(
            {
                "trainer": trainer_cls.__name__,
                "forget": list(forget["uid"]),
                "retain": list(retain["uid"]),
                "alpha": kw.get("alpha"),
                "lr": config.learning_rate,
                "epochs": config.num_epochs,
            }
        )
        return model, {"steps": 1, "train_loss": 0.0, "tokens": 10}

    import hf_unlearn.training.engine as engine

    # RUM's groups reach the engine through grad_diff's shared glue (UnlearningMethod.train_unlearning), which
    # looks run_unlearning up in the engine module at call time
    monkeypatch.setattr(rum_method, "run_unlearning", fake_run_unlearning, raising=False)
    monkeypatch.setattr(engine, "run_unlearning", fake_run_unlearning)
    return calls


@pytest.mark.parametrize("retain_mode", ["exclude_forget", "keep_later_groups"])
def test_groups_run_low_first_and_retain_excludes_forget(spy, retain_mode):
    data = _qa(14)
    model, tok = _tiny(data)
    forget = [f"u{i}" for i in range(9)]
    scores = {u: float((7 * i) % 9) for i, u in enumerate(forget)}  # a permutation of 0..8
    res = hf_unlearn.unlearn(
        model,
        forget,
        method="rum",
        tokenizer=tok,
        train_dataset=data,
        scores=scores,
        retain_mode=retain_mode,
        learning_rate=1e-3,
        num_epochs=2,
        group_methods=["neggrad_plus", "grad_diff", "neggrad_plus"],
    )
    assert [c["trainer"] for c in spy] == ["NegGradPlusTrainer", "GradDiffTrainer", "NegGradPlusTrainer"]
    order = sorted(forget, key=scores.get)
    assert [sorted(c["forget"]) for c in spy] == [sorted(order[0:3]), sorted(order[3:6]), sorted(order[6:9])]
    retain_uids = {f"u{i}" for i in range(9, 14)}
    for g, call in enumerate(spy):
        if retain_mode == "exclude_forget":
            assert set(call["retain"]) == retain_uids
        else:  # official: the groups still to unlearn stay in the retain set, never the current or done ones
            assert set(call["retain"]) == retain_uids | set(order[3 * (g + 1) :])
    # official per-group settings: alpha 0.99 / - / 0.97, the high group: 2x epochs at lr / 10
    assert spy[0]["alpha"] == 0.99 and spy[2]["alpha"] == 0.97
    assert (spy[0]["lr"], spy[0]["epochs"]) == (1e-3, 2) and spy[2]["lr"] == pytest.approx(1e-4)
    assert spy[2]["epochs"] == 4
    groups = res.details["groups"]
    assert [g["name"] for g in groups] == ["low", "medium", "high"]
    assert groups[0]["score_max"] < groups[1]["score_min"] and groups[1]["score_max"] < groups[2]["score_min"]
    assert set(res.timings) >= {"score", "group_low", "group_medium", "group_high"}
    assert res.tokens_processed == 30


def _answer_ids(tok, batch) -> list[int]:
    """The item numbers of a collated batch's examples (decoded from its input ids)."""
    import re

    return [int(re.search(r"item (\d+)", tok.decode(row)).group(1)) for row in batch["input_ids"]]


@pytest.mark.parametrize("epoch_over", ["retain", "forget"])
def test_neggrad_plus_epoch_is_a_pass_over_retain_or_forget(one_thread, monkeypatch, epoch_over):
    """Official loop: one epoch = one pass over R (each retain example once), F cycled alongside (each forget example
    |R|/|F| times). The 'forget' option: one pass over F, each paired with a distinct retain example."""
    data = _qa(16)
    model, tok = _tiny(data)
    seen = []
    orig = rum_method.NegGradPlusTrainer.unlearning_loss

    def spy_loss(self, model, forget, retain):
        seen.append((self.driven_by, forget, retain))
        return orig(self, model, forget, retain)

    monkeypatch.setattr(rum_method.NegGradPlusTrainer, "unlearning_loss", spy_loss)
    forget = [f"u{i}" for i in range(4)]
    res = hf_unlearn.unlearn(
        model,
        forget,
        method="rum",
        tokenizer=tok,
        train_dataset=data,
        scores={u: 0.0 for u in forget},
        grouping="quantiles",
        n_groups=1,
        epoch_over=epoch_over,
        num_epochs=1,
        batch_size=4,
        learning_rate=1e-3,
    )
    assert {d for d, _, _ in seen} == {epoch_over}
    # the sub-batch roles as the trainer's loss sees them after its swap
    as_forget, as_retain = [], []
    for _, f, r in seen:
        f, r = (r, f) if epoch_over == "retain" else (f, r)
        as_forget += _answer_ids(tok, f)
        as_retain += _answer_ids(tok, r)
    assert set(as_forget) == {0, 1, 2, 3} and set(as_retain) <= set(range(4, 16))
    if epoch_over == "retain":
        assert res.details["groups"][0]["steps"] == len(seen) == 3  # 12 retain examples / batch 4
        assert sorted(as_retain) == list(range(4, 16))  # each retain example exactly once
        assert sorted(as_forget) == sorted([0, 1, 2, 3] * 3)  # F cycled: each forget example |R|/|F| = 3 times
    else:
        assert res.details["groups"][0]["steps"] == len(seen) == 1  # 4 forget examples / batch 4
        assert sorted(as_forget) == [0, 1, 2, 3] and len(set(as_retain)) == 4


def test_neggrad_plus_loss_swaps_roles_back():
    """With driven_by='retain' the 'forget' sub-batch holds retain examples: the loss must weigh them by alpha."""
    t = rum_method.NegGradPlusTrainer.__new__(rum_method.NegGradPlusTrainer)
    t.alpha = 0.9
    t.nll = lambda model, batch: (torch.tensor(batch["v"]), None)
    a, b = {"v": 1.0}, {"v": 3.0}
    t.driven_by = "forget"
    assert float(t.unlearning_loss(None, a, b)) == pytest.approx(0.9 * 3.0 - 0.1 * 1.0)
    t.driven_by = "retain"
    assert float(t.unlearning_loss(None, a, b)) == pytest.approx(0.9 * 1.0 - 0.1 * 3.0)


def test_missing_scores_and_recorder_errors(spy):
    data = _qa(8)
    model, tok = _tiny(data)
    forget = ["u0", "u1", "u2"]
    with pytest.raises(KeyError, match="no memorization score"):
        hf_unlearn.unlearn(model, forget, method="rum", tokenizer=tok, train_dataset=data, scores={"u0": 1.0})
    with pytest.raises(ValueError, match="recorder="):
        hf_unlearn.unlearn(model, forget, method="rum", tokenizer=tok, train_dataset=data, score="confidence")


def test_rum_end_to_end_raises_forget_loss(one_thread):
    from hf_unlearn.pipeline import mean_answer_nll

    data = _qa(12)
    model, tok = _tiny(data)
    rec = LearningEventRecorder()
    model = finetune(model, tok, data, num_epochs=15, batch_size=6, learning_rate=1e-2, callbacks=[rec]).model
    forget = [d for d in data if d["uid"] in {"u0", "u1", "u2", "u3", "u4", "u5"}]
    forget = Dataset.from_list(forget)
    before = mean_answer_nll(model, tok, forget)
    res = hf_unlearn.unlearn(
        model,
        [d["uid"] for d in forget],
        method="rum",
        tokenizer=tok,
        train_dataset=data,
        recorder=rec,
        score="confidence",
        alphas=[0.5, 0.5, 0.5],
        learning_rate=5e-3,
        num_epochs=2,
        batch_size=2,
    )
    assert mean_answer_nll(res.model, tok, forget) > before + 0.5
    assert sorted(u for g in res.details["groups"] for u in g["uids"]) == sorted(d["uid"] for d in forget)
    assert res.details["score_source"] == "recorder"
