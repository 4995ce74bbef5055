"""S3T: exactness of deletion and retraining, block matching, prefix sharing, persistence, generation, simulator."""

from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

import hf_unlearn
from hf_unlearn.methods.s3t import (
    S3TConfig,
    S3TModel,
    count_until_failure,
    select_sequences,
    simulate_deletions,
    simulate_sisa,
    stage_blocks,
)
from hf_unlearn.methods.s3t.simulate import cut_sequences
from hf_unlearn.models import block_index, tiny_causal_lm

FAST = dict(num_epochs=1, learning_rate=1e-2, batch_size=8, max_length=48)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two fighting threads
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _base(arch: str, texts, num_layers: int = 4, hidden: int = 32):
    return tiny_causal_lm(arch, texts=texts, num_layers=num_layers, hidden_size=hidden, vocab_size=300, seed=0)


def _logits(model, tok, prompts=("Question: What is the secret code of item 3?\nAnswer:", "Question: Who?\nAnswer:")):
    x = tok(list(prompts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits


def _uid_in(s3t: S3TModel, shard: int, slice_: int) -> str:
    return sorted(u for u, (j, s) in s3t.state["assignment"].items() if (j, s) == (shard, slice_))[0]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def trained_m1(request, qa_rows, qa_texts):
    """m=1, L=2, B=2 (cyclic) on a 4-block model: stage 1 = blocks 2,3; stage 2 = blocks 0,1."""
    base, tok = _base(request.param, qa_texts)
    cfg = S3TConfig(n_shards=1, n_slices=2, budget=2, **FAST)
    return request.param, S3TModel.from_training(base, tok, qa_rows, cfg), tok, cfg


def test_training_touches_only_stage_blocks_and_keeps_base(trained_m1, qa_texts):
    arch, s3t, tok, cfg = trained_m1
    fresh, _ = _base(arch, qa_texts)
    base_now = s3t.get_base_model()
    fresh_sd = fresh.state_dict()
    for n, p in base_now.named_parameters():
        if "lora_" in n:
            continue
        key = n.replace(".base_layer", "")
        assert torch.equal(p, fresh_sd[key]), f"base parameter {n} moved"
    for name, meta in s3t.state["adapters"].items():
        t = len(meta["prefix"])
        assert meta["blocks"] == stage_blocks(t, 2, 4)
        seen = {block_index(n) for n, _ in s3t.peft_model.named_parameters() if f".{name}." in n}
        assert seen == set(meta["blocks"])
        lora_b = [p for n, p in s3t.peft_model.named_parameters() if f"lora_B.{name}." in n]
        assert any(p.abs().sum() > 0 for p in lora_b), f"{name} was not trained"
    assert stage_blocks(1, 2, 4) == [2, 3]  # stage 1 is the TOP-most group


def _survivors(rows, gone):
    return [r for r in rows if r["uid"] not in set(gone)]


def test_delete_equals_training_only_the_surviving_prefix(trained_m1, qa_rows, qa_texts):
    arch, s3t0, tok, cfg = trained_m1
    s3t = copy.deepcopy(s3t0)
    before = _logits(s3t, tok)
    uid = _uid_in(s3t, 0, 1)  # slice 1: sequence [0, 1] keeps [0], sequence [1, 0] dies
    report = s3t.delete([uid])
    assert report["deleted"] == [uid] and report["dead_shards"] == []
    assert {(c["sequence"], c["from"], c["to"]) for c in report["cuts"]} == {(0, 2, 1), (1, 2, 0)}
    assert report["served_prefix_lengths"] == {0: 1}
    assert report["seconds"] < 0.5
    assert set(report["adapters_removed"]) == {"s0_q0_t2", "s0_q1_t1", "s0_q1_t2"}
    after = _logits(s3t, tok)
    assert not torch.equal(before, after)
    # the model you would get by training only the surviving prefix [0], from scratch on a fresh base, on the
    # SURVIVING data only (a served stage that had trained on the deleted uid would differ from it)
    fresh, _ = _base(arch, qa_texts)
    ref_cfg = S3TConfig(**{**cfg.__dict__, "sequences": [[0]]})
    scratch = S3TModel.from_training(fresh, tok, _survivors(qa_rows, [uid]), ref_cfg)
    assert len(scratch.trainings) == 1
    assert torch.equal(after, _logits(scratch, tok))


def test_delete_is_idempotent_and_rejects_unknown_uids(trained_m1):
    _, s3t0, tok, _ = trained_m1
    s3t = copy.deepcopy(s3t0)
    uid = _uid_in(s3t, 0, 0)
    with pytest.raises(KeyError, match="nope"):
        s3t.delete([uid, "nope"])
    assert s3t.state["deleted"] == []  # nothing changed on error
    first = s3t.delete(uid)
    logits = _logits(s3t, tok)
    again = s3t.delete([uid])
    assert again["deleted"] == [] and again["already_deleted"] == [uid] and again["cuts"] == []
    assert first["cuts"] and torch.equal(logits, _logits(s3t, tok))


def test_all_shards_dead_raises(trained_m1):
    _, s3t0, tok, _ = trained_m1
    s3t = copy.deepcopy(s3t0)
    report = s3t.delete([_uid_in(s3t, 0, 0), _uid_in(s3t, 0, 1)])
    assert report["dead_shards"] == [0] and report["live_shards"] == []
    with pytest.raises(RuntimeError, match="dead"):
        _logits(s3t, tok)


def test_all_shards_dead_serves_the_base_with_when_dead_base(trained_m1, qa_texts):
    """when_dead='base': a fully cut system serves exactly the untouched base model (built again, independently)."""
    import dataclasses

    arch, s3t0, tok, _ = trained_m1
    s3t = copy.deepcopy(s3t0)
    s3t.config_s3t = dataclasses.replace(s3t.config_s3t, when_dead="base")
    live = _logits(s3t, tok)
    out = hf_unlearn.unlearn(s3t, [_uid_in(s3t, 0, 0), _uid_in(s3t, 0, 1)], method="s3t")
    assert "every shard dead" in out.details["serving"]
    base, _ = _base(arch, qa_texts)  # never trained: what the fully cut system must serve
    base.eval()
    served = _logits(out.model, tok)
    assert torch.equal(served, _logits(base, tok))
    assert not torch.equal(served, live)  # the trained system served something else
    x = tok(["Question: Who?\nAnswer:"], return_tensors="pt")
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(out.model.generate(**x, **kw), base.generate(**x, **kw))
    with pytest.raises(ValueError, match="when_dead"):
        S3TConfig(when_dead="nothing")


def test_save_load_round_trip_after_deletion_and_export(trained_m1, qa_texts, tmp_path):
    arch, s3t0, tok, _ = trained_m1
    s3t = copy.deepcopy(s3t0)
    s3t.save_pretrained(tmp_path / "s3t")
    uid = _uid_in(s3t, 0, 1)
    report = s3t.delete([uid])  # persisted to the bound folder: a restart serves the same model
    assert report["persist_seconds"] > 0 and "s0_q1_t1" in report["cleanup_pending"]
    # a crash right after delete() (before the background cleanup): the restart serves the cut model anyway
    crashed = S3TModel.from_pretrained(tmp_path / "s3t", _base(arch, qa_texts)[0])
    assert "s0_q1_t1" not in crashed.peft_model.peft_config
    assert torch.equal(_logits(crashed, tok), _logits(s3t, tok))
    s3t.flush_deletions()
    assert not (tmp_path / "s3t" / "adapters" / "s0_q1_t1").exists()
    assert "s0_q1_t1" not in s3t.peft_model.peft_config
    fresh, _ = _base(arch, qa_texts)
    loaded = S3TModel.from_pretrained(tmp_path / "s3t", fresh)
    assert loaded.state["deleted"] == [uid] and loaded.served() == s3t.served()
    expected = _logits(s3t, tok)
    assert torch.equal(_logits(loaded, loaded.tokenizer), expected)
    # one plain peft adapter, loadable with peft alone
    from peft import PeftModel

    s3t.export_active_adapter(tmp_path / "export")
    plain_base, _ = _base(arch, qa_texts)
    plain = PeftModel.from_pretrained(plain_base, str(tmp_path / "export")).eval()
    torch.testing.assert_close(_logits(plain, tok), expected, rtol=0, atol=1e-6)


def test_generate_m1(trained_m1):
    _, s3t, tok, _ = trained_m1
    x = tok(["Question: What is the secret code of item 3?\nAnswer:"], return_tensors="pt")
    out = s3t.generate(**x, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, x["input_ids"].shape[1] + 4)


def test_prefix_tree_trains_each_distinct_prefix_once(qa_rows, qa_texts):
    base, tok = _base("llama", qa_texts, num_layers=3, hidden=16)
    cfg = S3TConfig(n_shards=1, n_slices=3, strategy="all", max_steps=1, **{**FAST, "num_epochs": 1})
    s3t = S3TModel.from_training(base, tok, qa_rows, cfg)
    seqs = s3t.state["shards"]["0"]["sequences"]
    assert len(seqs) == 6
    distinct = {tuple(s[:t]) for s in seqs for t in range(1, 4)}
    assert len(distinct) == 15 < 6 * 3
    assert len(s3t.trainings) == 15
    assert len({tuple(r["prefix"]) for r in s3t.trainings}) == 15
    chains = s3t.state["shards"]["0"]["chains"]
    assert chains[0][0] == chains[1][0]  # [0,1,2] and [0,2,1] share their stage-1 adapter


@pytest.fixture(scope="module")
def trained_m2(qa_rows, qa_texts):
    base, tok = _base("llama", qa_texts)
    cfg = S3TConfig(n_shards=2, n_slices=2, budget=1, **FAST)
    return S3TModel.from_training(base, tok, qa_rows, cfg), tok, cfg


def test_retrain_equals_training_from_scratch_without_deleted(trained_m2, qa_rows, qa_texts):
    s3t0, tok, cfg = trained_m2
    s3t = copy.deepcopy(s3t0)
    gone = [_uid_in(s3t, 0, 0), _uid_in(s3t, 1, 1)]
    report = s3t.delete(gone)
    assert report["dead_shards"] == [0] and report["served_prefix_lengths"] == {1: 1}
    serving_before = _logits(s3t, tok)
    s3t.config_s3t.retrain_copy = True  # the deep-copy mode (the in-place default: the cached test below)
    thread = s3t.retrain(background=True)
    thread.join()
    assert s3t.served_prefix_lengths() == {0: 2, 1: 2}
    assert not torch.equal(serving_before, _logits(s3t, tok))
    fresh, _ = _base("llama", qa_texts)
    survivors = [r for r in qa_rows if r["uid"] not in gone]
    scratch = S3TModel.from_training(fresh, tok, survivors, cfg)
    assert torch.equal(_logits(s3t, tok), _logits(scratch, tok))
    assert {r["n_examples"] for r in s3t.trainings[-3:]} <= {r["n_examples"] for r in scratch.trainings}


def test_ensemble_forward_and_generate_m2(trained_m2):
    s3t, tok, _ = trained_m2
    served = s3t.served()
    assert sorted(served) == [0, 1]
    x = tok(["Question: Who?\nAnswer:"], return_tensors="pt")
    with torch.no_grad():
        per_shard = []
        for j in (0, 1):
            s3t._activate(served[j])
            per_shard.append(s3t.peft_model(**x).logits)
        mean = (per_shard[0] + per_shard[1]) / 2
        torch.testing.assert_close(s3t(**x).logits, mean)
        lp = s3t(**x, ensemble="logprobs").logits
        torch.testing.assert_close(lp, sum(torch.log_softmax(p, -1) for p in per_shard) / 2)
    out = s3t.generate(**x, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, x["input_ids"].shape[1] + 3)
    first = mean[0, -1].argmax()
    assert out[0, x["input_ids"].shape[1]] == first  # greedy step 1 = argmax of the ensemble logits


def test_unlearn_dispatcher_deletes(trained_m2, qa_rows):
    s3t0, tok, _ = trained_m2
    s3t = copy.deepcopy(s3t0)
    uid = _uid_in(s3t, 1, 0)
    res = hf_unlearn.unlearn(s3t, [uid], method="s3t", tokenizer=tok, train_dataset=qa_rows)
    assert res.details["delete"]["deleted"] == [uid]
    assert s3t.state["deleted"] == [uid]
    with pytest.raises(TypeError, match="S3TModel"):
        hf_unlearn.get_method("s3t").method_cls(S3TConfig()).unlearn(s3t.get_base_model(), tok, None)
    # the model knows its own training data: a uid list alone is a complete request, tokenizer included
    uid2 = _uid_in(s3t, 0, 1)
    res2 = hf_unlearn.unlearn(s3t, [uid2], method="s3t")
    assert res2.details["delete"]["deleted"] == [uid2]
    # an unknown uid after earlier deletions still names the uid (not a stale adapter name)
    with pytest.raises(KeyError, match="unknown uid"):
        hf_unlearn.unlearn(s3t, ["nope"], method="s3t")


def test_block_matching_never_confuses_layer_1_with_10_and_11(qa_texts):
    base, tok = _base("llama", qa_texts, num_layers=12, hidden=16)
    cfg = S3TConfig(n_slices=11, layers_per_slice=1, **FAST)
    s3t = S3TModel(None, tok, cfg, {})
    s3t.peft_model = None
    s3t.__dict__["_base"] = base
    s3t._add_adapter("stage11", stage_blocks(11, 1, 12), seed=0)  # block 1
    s3t._add_adapter("stage1", stage_blocks(1, 2, 12), seed=0)  # blocks 10, 11
    names = [n for n, _ in s3t.peft_model.named_parameters()]
    blocks_11 = {block_index(n) for n in names if ".stage11." in n}
    blocks_1 = {block_index(n) for n in names if ".stage1." in n}
    assert blocks_11 == {1} and blocks_1 == {10, 11}
    assert any("layers.10." in n for n in names if ".stage1." in n)
    # the official substring rule would wrongly select layers 10 and 11 for "layers.1"
    assert any("layers.1" in n and block_index(n) in (10, 11) for n in names)
    s3t.peft_model.base_model.set_adapter(["stage11", "stage1"])
    trainable = s3t._freeze_all_but("stage11")
    assert trainable and {block_index(n) for n in trainable} == {1}


def test_config_validation():
    with pytest.raises(ValueError, match="strategy"):
        S3TConfig(strategy="greedy")
    with pytest.raises(ValueError, match="budget"):
        S3TConfig(n_slices=3, budget=7)
    assert S3TConfig(n_slices=3, strategy="all").budget == 6
    with pytest.raises(ValueError, match="layers_to_transform"):
        S3TConfig(lora={"layers_to_transform": [1]})
    with pytest.raises(ValueError, match="cache_dtype"):
        S3TConfig(cache_hidden_states=True, cache_dtype="int8")
    base, tok = tiny_causal_lm("llama", texts=["a b c"] * 4, num_layers=2, hidden_size=16, vocab_size=280)
    with pytest.raises(ValueError, match="k\\*L <= N"):
        S3TModel.from_training(base, tok, [{"uid": "a", "question": "q", "answer": "a"}], S3TConfig(n_slices=3))


# ------------------------------------------------------------------------------------------------ sequences
def test_bms_is_the_official_selection_and_budget_variant_is_an_option():
    # bms(L)[:B] of the official src/inference.py (unit-weight networkx matching, one round per position)
    official4 = [[0, 3, 2, 1], [1, 2, 3, 0], [2, 1, 0, 3], [3, 0, 1, 2]]
    assert select_sequences("bms", 4, 4) == official4
    assert select_sequences("bms", 4, 2) == official4[:2]
    assert select_sequences("bms", 5, 5)[0] == [0, 4, 2, 1, 3]
    # ours solves the matching for the B sequences themselves: a different pair for B = 2
    assert select_sequences("bms_budget", 4, 2) == [[0, 3, 2, 1], [1, 0, 3, 2]]
    assert select_sequences("bms", 3, 6) == select_sequences("bms_budget", 3, 6)  # B > L: no official BMS
    with pytest.raises(ValueError, match="bms_budget"):
        S3TConfig(strategy="bms_buget")


def test_sequence_strategies():
    assert select_sequences("cyclic", 3, 3) == [[0, 1, 2], [2, 0, 1], [1, 2, 0]]
    assert select_sequences("cyclic", 4, 2) == [[0, 1, 2, 3], [3, 0, 1, 2]]
    for strategy in ("cyclic", "bms", "bms_prior"):
        seqs = select_sequences(strategy, 5, 5, priors=[0.4, 0.3, 0.1, 0.1, 0.1])
        assert sorted(map(sorted, seqs)) == [list(range(5))] * 5
        for pos in range(5):  # a Latin square: every slice once per position
            assert sorted(s[pos] for s in seqs) == list(range(5)), strategy
    big = select_sequences("bms", 3, 6)
    assert len({tuple(s) for s in big}) == 6
    r1, r2 = select_sequences("random", 4, 5, seed=1), select_sequences("random", 4, 5, seed=1)
    assert r1 == r2 and len({tuple(s) for s in r1}) == 5
    assert len(select_sequences("all", 4, 1)) == math.factorial(4)
    prior = select_sequences("bms_prior", 4, 4, priors=[0.7, 0.1, 0.1, 0.1])
    # the slice most likely to be deleted never starts a sequence with a long useful prefix: it comes late
    mean_pos = sum(s.index(0) for s in prior) / 4
    assert mean_pos == 1.5  # Latin square: each position once
    assert prior[1][-1] == 0 or prior[2][-1] == 0 or prior[3][-1] == 0


# ------------------------------------------------------------------------------------------------ simulator
def test_cut_and_count_hand_cases():
    assert cut_sequences([[0, 1, 2], [2, 0, 1], [1, 2, 0]], 2) == [[0, 1], [1]]
    # one shard, [[0,1],[1,0]]: hit slice 0 -> [[1]]; slice 0 again -> no change; slice 1 -> dead: 3 deletions
    assert count_until_failure([[[0, 1], [1, 0]]], 2, [0, 0, 1]) == 3
    # two shards, L=2: draws 2,3 hit shard 1 (slices 0,1); shard 0 dies at draw 0 -> 1 (SISA-like B=1 [0,1])
    assert count_until_failure([[[0, 1]], [[0, 1]]], 2, [1, 2, 0]) == 3
    assert count_until_failure([[[0, 1]], [[0, 1]]], 2, [1, 3, 3, 2, 0]) == 5
    with pytest.raises(ValueError, match="ran out"):
        count_until_failure([[[0]]], 1, [])


def test_simulator_matches_closed_forms():
    assert simulate_deletions(1, 1, 1, trials=10) == (1.0, 0.0)
    # m=1, L=2, B=2: the first deletion kills one sequence; then a geometric(1/2) wait: mean 3, std sqrt(2)
    mean, std = simulate_deletions(1, 2, 2, trials=20000, seed=0)
    assert abs(mean - 3) < 0.06 and abs(std - math.sqrt(2)) < 0.06
    # B=1, L=3 (sequence [0,1,2]): dead only when slice 0 is hit: geometric(1/3), mean 3
    assert abs(simulate_deletions(1, 3, 1, trials=20000, seed=1)[0] - 3) < 0.08
    # SISA, m=2: coupon collector over 2 shards: mean 1 + 2 = 3
    assert abs(simulate_sisa(2, 3, trials=20000, seed=2)[0] - 3) < 0.06
    # more sequences never hurt (same draws)
    means = [simulate_deletions(3, 4, b, trials=300, seed=3)[0] for b in (1, 2, 4)]
    assert means[0] < means[1] < means[2] and means[0] > simulate_sisa(3, 4, trials=300, seed=3)[0]


def test_parallel_parts_merge_equals_single_process(trained_m2, qa_rows, qa_texts, tmp_path):
    s3t, tok, cfg = trained_m2
    parts = []
    for j in (0, 1):  # what each rank of recipes/s3t/train_s3t.py does
        base, _ = _base("llama", qa_texts)
        part = S3TModel.from_training(base, tok, qa_rows, cfg, shards=[j])
        assert part.served_prefix_lengths()[1 - j] == 0
        part.save_pretrained(tmp_path / f"rank{j}")
        parts.append(tmp_path / f"rank{j}")
    S3TModel.merge_saved(parts, tmp_path / "merged")
    base, _ = _base("llama", qa_texts)
    merged = S3TModel.from_pretrained(tmp_path / "merged", base)
    assert merged.served_prefix_lengths() == {0: 2, 1: 2}
    assert torch.equal(_logits(merged, tok), _logits(s3t, tok))


def _lora(s3t: S3TModel) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in s3t.peft_model.named_parameters() if "lora_" in n}


def test_retrain_shards_on_copies_then_merge_equals_one_process_retrain_and_scratch(
    trained_m2, qa_rows, qa_texts, tmp_path
):
    """What ``train_s3t.py --retrain`` does on 2 ranks: each copy of the deleted system retrains one shard, saves,
    and ``merge_saved(..., shards=[[0], [1]])`` joins them: bitwise the one-process retrain() and, independently,
    training from scratch on the survivors."""
    s3t0, tok, cfg = trained_m2
    deleted = copy.deepcopy(s3t0)
    gone = [_uid_in(deleted, 0, 0), _uid_in(deleted, 1, 1)]
    deleted.delete(gone)
    assert deleted.served_prefix_lengths() == {0: 0, 1: 1}
    with pytest.raises(ValueError, match=r"unknown shard index\(es\) \[2\]: valid shard indices are \[0, 1\]"):
        deleted.retrain(shards=[2])
    with pytest.raises(ValueError, match="list of shard indices"):
        deleted.retrain(shards=0)
    parts = []
    for j, expected in ((0, {0: 2, 1: 1}), (1, {0: 0, 1: 2})):  # rank j retrains shard j only
        rank = copy.deepcopy(deleted)
        new = rank.retrain(shards=[j])
        assert {rank.state["adapters"][n]["shard"] for n in new} == {j}
        assert rank.served_prefix_lengths() == expected
        rank.save_pretrained(tmp_path / f"retrain{j}")
        parts.append(tmp_path / f"retrain{j}")
    S3TModel.merge_saved(parts, tmp_path / "merged", shards=[[0], [1]])
    merged = S3TModel.from_pretrained(tmp_path / "merged", _base("llama", qa_texts)[0])
    assert merged.served_prefix_lengths() == {0: 2, 1: 2}
    one = copy.deepcopy(deleted)
    one.retrain()
    assert sorted(merged.state["adapters"]) == sorted(one.state["adapters"])
    want, got = _lora(one), _lora(merged)
    assert sorted(got) == sorted(want) and all(torch.equal(got[n], want[n]) for n in want)
    scratch = S3TModel.from_training(_base("llama", qa_texts)[0], tok, _survivors(qa_rows, gone), cfg)
    assert torch.equal(_logits(merged, tok), _logits(scratch, tok))
    assert torch.equal(_logits(merged, tok), _logits(one, tok))
    # every part must have deleted the same uids; every shard taken exactly once
    other = copy.deepcopy(rank)
    other.delete([_uid_in(other, 0, 1)])
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="deleted different uids"):
        S3TModel.merge_saved([parts[0], tmp_path / "other"], tmp_path / "bad", shards=[[0], [1]])
    with pytest.raises(ValueError, match=r"shard\(s\) \[1\] are listed for no part"):
        S3TModel.merge_saved(parts, tmp_path / "bad", shards=[[0], []])
    with pytest.raises(ValueError, match="shard 0 is listed for two parts"):
        S3TModel.merge_saved(parts, tmp_path / "bad", shards=[[0], [0, 1]])
    assert not (tmp_path / "bad").exists()  # refused before writing anything


def test_recipe_swaps_the_merged_model_in_atomically(script, tmp_path, monkeypatch):
    """train_s3t.py replaces output_dir/model by renames: a crash between them leaves the old model as model.old,
    which the next run loads, and the next swap completes."""
    before = dict(os.environ)
    recipe = script("recipes/s3t/train_s3t.py")  # pops the launcher's rank variables: put them back for other tests
    os.environ.update({k: v for k, v in before.items() if os.environ.get(k) != v})
    out = tmp_path / "out"
    for name in ("model", "model.tmp"):
        (out / name).mkdir(parents=True)
        (out / name / "s3t_inventory.json").write_text(name)
    real = recipe.os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise OSError("simulated crash")
        real(src, dst)

    monkeypatch.setattr(recipe.os, "replace", crash_on_second)
    with pytest.raises(OSError, match="simulated crash"):
        recipe.replace_dir(out / "model.tmp", out / "model")
    monkeypatch.setattr(recipe.os, "replace", real)
    assert recipe.current_model(out) == out / "model.old"
    assert (out / "model.old" / "s3t_inventory.json").read_text() == "model"
    recipe.replace_dir(out / "model.tmp", out / "model")
    assert recipe.current_model(out) == out / "model" and not (out / "model.old").exists()
    assert (out / "model" / "s3t_inventory.json").read_text() == "model.tmp"
    shutil.rmtree(out / "model")
    with pytest.raises(SystemExit, match="no S3T model"):
        recipe.current_model(out)


# ------------------------------------------------------------------------------------------------ performance paths
def _adapters(s3t: S3TModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in s3t.peft_model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_stage_training_matches_plain_path(arch, qa_rows, qa_texts):
    # 3 blocks, k=1, L=2: stage 1 trains block 2 from cached block-2 inputs, stage 2 block 1 from block-1 inputs
    cfg = dict(n_slices=2, budget=1, layers_per_slice=1, **{**FAST, "max_steps": 2})
    runs = {}
    for cache in (False, True):
        base, tok = _base(arch, qa_texts, num_layers=3, hidden=16)
        runs[cache] = S3TModel.from_training(base, tok, qa_rows, S3TConfig(cache_hidden_states=cache, **cfg))
    assert [r["cached"] for r in runs[True].trainings] == [True, True]
    assert [r["cached"] for r in runs[False].trainings] == [False, False]
    plain, cached = _adapters(runs[False]), _adapters(runs[True])
    assert plain.keys() == cached.keys()
    # the cache is computed one unpadded example at a time: equal to the padded-batch path up to fp32 rounding,
    # far below the size of the training updates themselves
    update = max(p.abs().max().item() for n, p in plain.items() if "lora_B" in n)
    diff = max((plain[n] - cached[n]).abs().max().item() for n in plain)
    assert update > 1e-3 and diff < 1e-3 * update
    torch.testing.assert_close(_logits(runs[True], tok), _logits(runs[False], tok), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def cached_m2(qa_rows, qa_texts):
    """m=2, L=2, k=1 on 4 blocks with caching: live chains touch blocks 2-3 only, blocks 0-1 are shared."""
    base, tok = _base("llama", qa_texts, hidden=16)
    fast = {**FAST, "max_steps": 2}
    cfg = S3TConfig(n_shards=2, n_slices=2, budget=1, layers_per_slice=1, cache_hidden_states=True, **fast)
    return S3TModel.from_training(base, tok, qa_rows, cfg), tok, cfg


def test_shared_lower_blocks_ensemble_equals_naive(cached_m2):
    s3t, tok, _ = cached_m2
    assert s3t.shared_start() == 2
    shared, naive = _logits(s3t, tok), None
    x = tok(
        ["Question: What is the secret code of item 3?\nAnswer:", "Question: Who?\nAnswer:"],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        naive = s3t(**x, share=False).logits
        lp_shared, lp_naive = s3t(**x, ensemble="logprobs").logits, s3t(**x, ensemble="logprobs", share=False).logits
    assert torch.equal(shared, naive) and torch.equal(lp_shared, lp_naive)
    # the blocks below the shared start really ran once: count forward calls of block 0 and block 3
    from hf_unlearn.models import decoder_layers

    layers = decoder_layers(s3t.get_base_model())
    calls = {0: 0, 3: 0}
    hooks = [layers[i].register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1)) for i in calls]
    try:
        with torch.no_grad():
            s3t(**x)
    finally:
        for h in hooks:
            h.remove()
    assert calls == {0: 1, 3: 2}
    out = s3t.generate(**tok(["Question: Who?\nAnswer:"], return_tensors="pt"), max_new_tokens=2, do_sample=False)
    assert out.shape[1] == tok(["Question: Who?\nAnswer:"], return_tensors="pt")["input_ids"].shape[1] + 2


def test_cached_retrain_on_shared_model_serves_old_chain_meanwhile_and_equals_scratch(cached_m2, qa_rows, qa_texts):
    s3t0, tok, cfg = cached_m2
    s3t = copy.deepcopy(s3t0)
    gone = [_uid_in(s3t, 0, 1), _uid_in(s3t, 1, 0)]
    s3t.delete(gone)
    assert s3t.served_prefix_lengths() == {0: 1, 1: 0}
    serving = _logits(s3t, tok)
    s3t.flush_deletions()
    n_params = sum(p.numel() for p in s3t.parameters())
    thread = s3t.retrain(background=True)
    seen = 0
    late = []
    while thread.is_alive():  # concurrent serving: the old prefix model, bitwise, until the atomic swap
        with s3t._lock:
            swapped = s3t.served_prefix_lengths() != {0: 1, 1: 0}
            out = _logits(s3t, tok)
        if swapped:
            late.append(out)
        else:
            assert torch.equal(out, serving)
            seen += 1
    thread.join()
    assert all(torch.equal(out, _logits(s3t, tok)) for out in late)
    assert seen > 0 and not s3t.peft_model.training
    assert s3t.served_prefix_lengths() == {0: 2, 1: 2}
    assert all(r["cached"] for r in s3t.trainings[-3:])
    # trained in place on the shared model: it grew by exactly the new stage adapters (nothing else was copied in)
    added = sorted(set(s3t.state["adapters"]) - set(s3t0.state["adapters"]))
    assert len(added) == 3 and all(name.endswith("_g1") for name in added)
    new_params = sum(p.numel() for p in s3t.parameters()) - n_params
    assert new_params == sum(p.numel() for n, p in s3t.named_parameters() if any(f".{a}." in n for a in added))
    fresh, _ = _base("llama", qa_texts, hidden=16)
    survivors = [r for r in qa_rows if r["uid"] not in gone]
    scratch = S3TModel.from_training(fresh, tok, survivors, cfg)
    assert torch.equal(_logits(s3t, tok), _logits(scratch, tok))
    with pytest.raises(RuntimeError, match="already running"):
        s3t._retrain_lock.acquire()
        try:
            s3t.retrain()
        finally:
            s3t._retrain_lock.release()


def test_cache_refuses_a_base_with_dropout_below_the_group(qa_rows, qa_texts):
    base, tok = _base("gpt2", qa_texts, num_layers=2, hidden=16)
    base.config.resid_pdrop = 0.1
    for block in base.transformer.h:
        block.mlp.dropout.p = 0.1
    cfg = S3TConfig(n_slices=1, layers_per_slice=1, cache_hidden_states=True, **FAST)
    with pytest.raises(ValueError, match="dropout"):
        S3TModel.from_training(base, tok, qa_rows, cfg)


def test_group_column_puts_each_group_in_one_slice(qa_rows, qa_texts):
    rows = [{**r, "person": f"p{i % 4}"} for i, r in enumerate(qa_rows)]
    base, tok = _base("llama", qa_texts, num_layers=2, hidden=16)
    cfg = S3TConfig(n_shards=1, n_slices=2, group_column="person", max_steps=1, **{**FAST, "num_epochs": 1})
    s3t = S3TModel.from_training(copy.deepcopy(base), tok, rows, cfg)
    by_person = {}
    for r in rows:
        by_person.setdefault(r["person"], set()).add(tuple(s3t.state["assignment"][r["uid"]]))
    assert all(len(places) == 1 for places in by_person.values())
    # deleting all of one person's data cuts the sequences at that one slice only: a shard stays live
    report = s3t.delete([r["uid"] for r in rows if r["person"] == "p0"])
    assert report["live_shards"] == [0] and s3t.served_prefix_lengths()[0] == 1
    with pytest.raises(KeyError, match="group_column"):
        S3TModel.from_training(base, tok, qa_rows, cfg)


def test_ungrouped_values_spread_general_rows_by_uid(qa_rows, qa_texts):
    """Rows whose group value is in ``ungrouped_values`` are placed one by one by their own uid (the reference is
    the hash of the uid, built independently of the model), while real groups stay whole; the deletion of one
    person still cuts one slice."""
    import hashlib

    def by_hash(key: str, n_slices: int) -> int:  # bookkeeping's placement: sha256("{seed}:{key}"), shard 0 of 1
        return int.from_bytes(hashlib.sha256(f"0:{key}".encode()).digest()[:8], "big") % n_slices

    rows = [{**r, "person": "general" if i < 12 else f"p{i % 3}"} for i, r in enumerate(qa_rows)]
    general = [r["uid"] for r in rows if r["person"] == "general"]
    base, tok = _base("llama", qa_texts, num_layers=2, hidden=16)
    cfg = S3TConfig(
        n_slices=2, group_column="person", ungrouped_values=["general"], max_steps=1, **{**FAST, "num_epochs": 1}
    )
    s3t = S3TModel.from_training(copy.deepcopy(base), tok, rows, cfg)
    assignment = s3t.state["assignment"]
    assert {u: assignment[u][1] for u in general} == {u: by_hash(u, 2) for u in general}
    assert len({assignment[u][1] for u in general}) == 2  # without the option all 12 share one slice
    for person in ("p0", "p1", "p2"):
        assert {assignment[r["uid"]][1] for r in rows if r["person"] == person} == {by_hash(person, 2)}
    with pytest.raises(ValueError, match="ungrouped_values.*needs group_column"):
        S3TConfig(ungrouped_values=["general"])
    with pytest.raises(ValueError, match="list of strings"):
        S3TConfig(group_column="person", ungrouped_values="general")


def test_demo_spreads_general_knowledge_qa_over_slices():
    """The demo's S3T (runner defaults + the setting's overrides) places the world-fact and real-author QA by uid,
    so they are not two groups that a forget10 deletion cuts away whole (docs/methods/s3t.md, demo recipe)."""
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.methods.s3t.bookkeeping import assign_all, placement_keys
    from hf_unlearn.pipeline import SETTINGS, builtin_runners

    s = SETTINGS["demo"]
    cfg = S3TConfig(**{**builtin_runners()["s3t"].defaults, **s.method_overrides.get("s3t", {})})
    bench = build(n_authors=s.n_authors, seed=s.seed, qa_per_author=s.qa_per_author)
    full = bench["full"]
    keys = placement_keys(full["uid"], full[cfg.group_column], cfg.ungrouped_values)
    where = assign_all(full["uid"], keys, cfg.n_shards, cfg.n_slices, cfg.seed)
    for split in ("world_facts", "real_authors"):
        slices = {tuple(where[u]) for u in bench[split]["uid"]}
        assert len(slices) == cfg.n_shards * cfg.n_slices, (split, slices)


# ------------------------------------------------------------------------------------------------ exactness (issue 15)
def _expected_served(s3t: S3TModel, gone: list[str]) -> dict[int, list[int]]:
    """Per shard, the slices of the sequence with the longest prefix holding no deleted uid (first on ties)."""
    hit = {tuple(s3t.state["assignment"][u]) for u in gone}
    out = {}
    for j, sh in s3t.state["shards"].items():
        best: list[int] = []
        for seq in sh["sequences"]:
            n = next((t for t, s in enumerate(seq) if (int(j), s) in hit), len(seq))
            if n > len(best):
                best = seq[:n]
        out[int(j)] = best
    return out


def test_several_deletions_over_several_shards_equal_training_the_survivors(qa_rows, qa_texts):
    """m = 2, L = 3, B = 2 (12 stages), three deletions in turn: after each, the served ensemble is bitwise the one
    trained from scratch, on the SURVIVING examples only, for the expected surviving prefixes."""
    fast = {**FAST, "max_steps": 2, "batch_size": 4}
    cfg = S3TConfig(n_shards=2, n_slices=3, budget=2, layers_per_slice=1, **fast)
    base, tok = _base("llama", qa_texts, num_layers=3, hidden=16)
    s3t = S3TModel.from_training(base, tok, qa_rows, cfg)
    seqs = s3t.state["shards"]["0"]["sequences"]
    assert seqs == [[0, 1, 2], [2, 0, 1]] and len(s3t.trainings) == 12
    gone: list[str] = []
    for shard, slice_ in ((0, 1), (1, 0), (0, 0)):  # shard 0 -> [0] then [2]; shard 1 -> [2]
        gone.append(_uid_in(s3t, shard, slice_))
        s3t.delete(gone[-1:])
        expected = _expected_served(s3t, gone)
        assert {j: len(p) for j, p in expected.items()} == s3t.served_prefix_lengths()
        ref_cfg = S3TConfig(**{**cfg.__dict__, "sequences": {j: [p] if p else [] for j, p in expected.items()}})
        fresh, _ = _base("llama", qa_texts, num_layers=3, hidden=16)
        scratch = S3TModel.from_training(fresh, tok, _survivors(qa_rows, gone), ref_cfg)
        assert torch.equal(_logits(s3t, tok), _logits(scratch, tok)), f"after deleting {gone}"
    assert s3t.served_prefix_lengths() == {0: 1, 1: 1}


def test_non_cumulative_stage_is_invalid_when_a_parent_is_and_retrain_is_exact(qa_rows, qa_texts):
    """cumulative=False: stage 2 of [0, 1] trains on slice 1 only, but on top of stage [0]: deleting from slice 0
    must invalidate it as well, and retrain() must equal scratch training without the uid."""
    cfg = S3TConfig(n_shards=1, n_slices=2, budget=2, cumulative=False, **{**FAST, "max_steps": 2})
    base, tok = _base("llama", qa_texts, num_layers=2, hidden=16)
    s3t = S3TModel.from_training(base, tok, qa_rows, cfg)
    uid = _uid_in(s3t, 0, 0)
    report = s3t.delete([uid])
    assert set(report["adapters_removed"]) == {"s0_q0_t1", "s0_q0_t2", "s0_q1_t2"}
    s3t.retrain()
    assert s3t.served_prefix_lengths() == {0: 2}
    fresh, _ = _base("llama", qa_texts, num_layers=2, hidden=16)
    scratch = S3TModel.from_training(fresh, tok, _survivors(qa_rows, [uid]), cfg)
    assert torch.equal(_logits(s3t, tok), _logits(scratch, tok))


def test_retrain_equals_scratch_despite_global_rng_draws_with_lora_dropout(qa_rows, qa_texts):
    """Stage training draws only on its own generator: global draws between deletion and retrain, and during a
    background retrain (torch.rand, sampling generate), leave the retrained model bitwise equal to scratch."""
    fast = {**FAST, "batch_size": 4, "max_steps": 3}
    cfg = S3TConfig(n_shards=1, n_slices=2, budget=1, lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.3}, **fast)
    base, tok = _base("llama", qa_texts, num_layers=2, hidden=16)
    s3t = S3TModel.from_training(base, tok, qa_rows, cfg)
    first = s3t.state["shards"]["0"]["sequences"][0][0]
    uid = _uid_in(s3t, 0, first)  # both stages are rebuilt
    s3t.delete([uid])
    s3t.delete([_uid_in(s3t, 0, 1 - first)])  # (and a second request) the shard is dead: nothing to serve
    torch.rand(1000)
    thread = s3t.retrain(background=True)
    draws = 0
    while thread.is_alive():
        torch.rand(100)
        torch.randn(10)
        draws += 1
    thread.join()
    assert draws > 0
    x = tok(["Question: Who?\nAnswer:"], return_tensors="pt")
    s3t.generate(**x, max_new_tokens=2, do_sample=True)  # sampling after the retrain draws on the global RNG
    fresh, _ = _base("llama", qa_texts, num_layers=2, hidden=16)
    gone = s3t.state["deleted"]
    torch.manual_seed(123)
    scratch = S3TModel.from_training(fresh, tok, _survivors(qa_rows, gone), cfg)
    assert all(r["steps"] == 3 for r in s3t.trainings[-2:])
    assert torch.equal(_logits(s3t, tok), _logits(scratch, tok))


def test_concurrent_forwards_never_use_a_dropped_adapter(trained_m2):
    """A forward running while delete() runs sees the old or the new chains, bitwise; every forward that starts
    after delete() returns uses only live adapters; the dropped ones are then freed in the background."""
    import threading
    import time as _time

    s3t0, tok, _ = trained_m2
    s3t = copy.deepcopy(s3t0)
    uid = _uid_in(s3t, 1, 0)  # shard 1's only sequence starts with slice 0: shard 1 dies
    after = copy.deepcopy(s3t)
    after.delete([uid])
    old, new = _logits(s3t, tok), _logits(after, tok)
    assert not torch.equal(old, new)
    activations: list[tuple[float, tuple[str, ...]]] = []
    activate = s3t._activate

    def spy(chain, inference_mode=True):
        activations.append((_time.perf_counter(), tuple(chain)))
        return activate(chain, inference_mode)

    s3t._activate = spy
    results: list[tuple[float, torch.Tensor]] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            t = _time.perf_counter()
            results.append((t, _logits(s3t, tok)))

    workers = [threading.Thread(target=serve) for _ in range(2)]
    for w in workers:
        w.start()
    while len(results) < 4:
        _time.sleep(0.001)
    report = s3t.delete([uid])
    returned = _time.perf_counter()
    n_before = len(results)
    while len(results) < n_before + 4:
        _time.sleep(0.001)
    stop.set()
    for w in workers:
        w.join()
    dropped = set(report["adapters_removed"])
    assert dropped and report["dead_shards"] == [1]
    assert all(torch.equal(out, old) or torch.equal(out, new) for _, out in results)
    assert all(torch.equal(out, new) for t, out in results if t > returned)
    assert any(t > returned for t, _ in results)
    assert not any(dropped & set(chain) for t, chain in activations if t > returned)
    s3t.flush_deletions()
    assert not dropped & set(s3t.peft_model.peft_config)
    assert torch.equal(_logits(s3t, tok), new)


def test_module_walks_never_race_the_background_freeing(trained_m2):
    """A walk over the module tree (parameters(), eval(), state_dict(): what an evaluation does right after a
    delete()) may overlap the background thread that frees the dropped adapters. Each walk runs under the model
    lock or over a snapshot taken under it. Without that, a walk that is inside a LoRA layer's adapter dict when the
    freeing deletes from it fails with "dictionary changed size during iteration" (seen on SmolLM2 in
    benchmarks/s3t_study.py). Here the overlap is made deterministic: the walk is paused inside such a dict."""
    s3t0, tok, _ = trained_m2
    s3t = copy.deepcopy(s3t0)
    uid = _uid_in(s3t, 1, 0)
    dropped = set(copy.deepcopy(s3t).delete([uid], persist=False)["adapters_removed"])
    assert dropped
    walk = s3t.named_modules()
    seen = []
    for name, _ in walk:  # pause inside a LoRA layer's lora_A dict that holds a dropped adapter
        seen.append(name)
        if name.rsplit(".", 2)[-2:-1] == ["lora_A"] and name.rsplit(".", 1)[-1] in dropped:
            break
    else:
        raise AssertionError("no LoRA layer holds a dropped adapter")
    s3t.delete([uid], persist=False)
    s3t.flush_deletions()  # the freeing happens while the walk is paused
    seen += [name for name, _ in walk]
    assert len(seen) == len(set(seen)) and seen[0] == ""
    s3t.eval()
    assert sum(1 for _ in s3t.parameters()) > 0 and s3t.state_dict()
    assert not dropped & set(s3t.peft_model.peft_config)


def test_from_training_is_the_constructor_train_a_deprecated_alias_and_official_trainer_defaults(qa_rows, qa_texts):
    cfg = S3TConfig()
    official = (0.001, 0.3, 0.03, "linear")
    assert (cfg.weight_decay, cfg.max_grad_norm, cfg.warmup_ratio, cfg.lr_scheduler_type) == official
    base, tok = _base("llama", qa_texts, num_layers=1, hidden=16)
    small = S3TConfig(n_slices=1, max_steps=1, **{k: v for k, v in FAST.items() if k != "num_epochs"})
    with pytest.warns(DeprecationWarning, match="from_training"):
        s3t = S3TModel.train(copy.deepcopy(base), tok, qa_rows, small)
    with pytest.warns(DeprecationWarning, match="from_training"):  # the keyword spelling too
        by_keywords = S3TModel.train(base_model=copy.deepcopy(base), tokenizer=tok, dataset=qa_rows, config=small)
    reference = _logits(S3TModel.from_training(base, tok, qa_rows, small), tok)
    assert torch.equal(_logits(s3t, tok), reference) and torch.equal(_logits(by_keywords, tok), reference)
    # on an instance, train() is still nn.Module's: it sets the mode of every submodule and returns the model
    assert s3t.train() is s3t and s3t.training and s3t.peft_model.training
    assert s3t.train(False) is s3t and not s3t.training and not s3t.peft_model.training
    assert s3t.train(mode=True) is s3t and s3t.peft_model.training
    s3t.eval()


def test_loading_onto_another_base_is_refused(tmp_path):
    """save_pretrained records a fingerprint of the base; from_pretrained refuses a different base, naming it."""
    from hf_unlearn.methods.s3t import S3TConfig, S3TModel
    from hf_unlearn.models import tiny_causal_lm

    data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(8)]
    texts = [f"Question: Q{i}?\nAnswer: A{i}." for i in range(8)]
    base, tok = tiny_causal_lm("llama", texts=texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    other, _ = tiny_causal_lm("llama", texts=texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, seed=1)
    same, _ = tiny_causal_lm("llama", texts=texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    cfg = S3TConfig(n_slices=2, num_epochs=1, batch_size=4, learning_rate=1e-3, lora={"r": 2, "lora_alpha": 4})
    s3t = S3TModel.from_training(base, tok, data, cfg)
    s3t.save_pretrained(tmp_path / "s3t")
    with pytest.raises(ValueError, match="another base model"):
        S3TModel.from_pretrained(tmp_path / "s3t", other, tokenizer=tok)
    S3TModel.from_pretrained(tmp_path / "s3t", same, tokenizer=tok)  # the same base loads


_EXIT_SCRIPT = r"""
import sys, time
import torch
from hf_unlearn.methods.s3t import S3TConfig, S3TModel
from hf_unlearn.methods.s3t import model as s3t_model
from hf_unlearn.models import tiny_causal_lm

torch.set_num_threads(1)
rows = [{"uid": f"u{i}", "question": f"What is item {i}?", "answer": f"It is {i}."} for i in range(16)]
texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
base, tok = tiny_causal_lm("llama", texts=texts, num_layers=2, hidden_size=16, vocab_size=200, seed=0)
cfg = S3TConfig(n_shards=1, n_slices=2, budget=1, num_epochs=1, learning_rate=1e-2, batch_size=8, max_length=32)
s3t = S3TModel.from_training(base, tok, rows, cfg)
s3t.save_pretrained(sys.argv[1])
slow = s3t_model.S3TModel.flush_deletions

def flush_slowly(self):  # the background freeing is still running when the script ends
    time.sleep(1.0)
    return slow(self)

s3t_model.S3TModel.flush_deletions = flush_slowly
report = s3t.delete([rows[0]["uid"]])
print("DROPPED", ",".join(report["adapters_removed"]))
"""


def test_exit_right_after_delete_finishes_the_background_freeing(tmp_path):
    """A script that ends right after delete(): the cleanup thread is woken and joined at exit, so the dropped
    adapters' folders (weights trained on the deleted data) are removed from disk and the process exits cleanly
    instead of being torn down with a daemon thread inside torch."""
    import subprocess
    import sys

    folder = tmp_path / "s3t"
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(folder)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    dropped = [line for line in proc.stdout.splitlines() if line.startswith("DROPPED ")][0][8:].split(",")
    assert dropped and dropped != [""]
    left = {p.name for p in (folder / "adapters").iterdir()}
    assert not left & set(dropped), f"dropped adapters still on disk: {sorted(left & set(dropped))}"
    assert left  # the live ones stay
