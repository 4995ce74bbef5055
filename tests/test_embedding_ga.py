"""embedding_ga: recorded first-epoch embedding gradients, calibrated ascent, fuzzy matching, influence."""

from __future__ import annotations

import copy

import pytest
import torch

import hf_unlearn
from hf_unlearn.data import collator_for, load_examples, select_uids, tokenize_any
from hf_unlearn.methods.embedding_ga import (
    EmbeddingGAConfig,
    EmbeddingGradientRecorder,
    EmbeddingGradientStore,
    MissingRecordingError,
    fuzzy_match,
    lissa_inverse_hvp,
)
from hf_unlearn.methods.embedding_ga.influence import embedding_params, hvp, only_grad_for
from hf_unlearn.methods.embedding_ga.recorder import MODEL_ATTR
from hf_unlearn.models import embedding_modules, tiny_causal_lm
from hf_unlearn.training import finetune
from hf_unlearn.training.losses import sequence_nll

NAMES = ["Alice Moreau", "Bruno Keller", "Chen Wei", "Dara Okafor", "Emil Novak", "Fatima Zahra", "Goran Ilic"]
DATA = [
    {"uid": f"u{i}", "question": f"Where was {n} born?", "answer": f"{n} was born in city number {i * 13 % 50}."}
    for i, n in enumerate(NAMES)
] + [{"uid": "u7", "question": "What color is the sky?", "answer": "The sky is blue on a clear day."}]
FORGET = ["u0", "u1"]


def _texts():
    return [f"Question: {d['question']}\nAnswer: {d['answer']}" for d in DATA]


def _train(arch: str, tmp_path, grad_accum: int = 1, epochs=(1, 2)):
    model, tok = tiny_causal_lm(arch, texts=_texts(), vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    init = copy.deepcopy(model)
    rec = EmbeddingGradientRecorder(tmp_path / f"rec-{arch}", epochs=epochs, shard_size=3)
    finetune(
        model,
        tok,
        DATA,
        num_epochs=2,
        batch_size=2,
        learning_rate=3e-3,
        gradient_accumulation_steps=grad_accum,
        max_grad_norm=0.0,
        callbacks=[rec],
    )
    return init, model, tok, rec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = {}
    for arch in ("gpt2", "llama"):
        out[arch] = _train(arch, tmp_path_factory.mktemp(arch))
    return out


def _direct(model, tok, uid):
    """Per-example autograd: d mean NLL / d embedding output, plus the embedding parameters' grads."""
    model.train()
    row = tokenize_any(select_uids(load_examples(DATA), [uid]), tok)[0]
    batch = collator_for(tok)([row])
    cap = {}

    def hook(mod, args, out):
        if out.requires_grad:
            out.retain_grad()
        else:  # frozen embeddings (LoRA): the output is a leaf that asks for its gradient
            out.requires_grad_(True)
        cap["out"] = out

    h = embedding_modules(model)["token"].register_forward_hook(hook)
    model.zero_grad()
    loss = sequence_nll(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
    )
    loss.mean().backward()
    h.remove()
    return batch["input_ids"][0], cap["out"].grad[0]


@pytest.mark.parametrize("arch,grad_accum", [("gpt2", 1), ("llama", 1), ("llama", 2)])
def test_recorded_gradients_equal_per_example_autograd(arch, grad_accum, tmp_path):
    init, model, tok, rec = _train(arch, tmp_path, grad_accum=grad_accum, epochs=(1,))
    store = EmbeddingGradientStore(rec.output_dir)
    assert sorted(store.uids(1)) == sorted(d["uid"] for d in DATA)
    assert getattr(model, MODEL_ATTR) == str(rec.output_dir)
    # the examples of the first optimizer step were seen by the initial weights
    for uid in store.uids(1)[: 2 * grad_accum]:
        ids, pos, g = store.load(uid, 1)
        want_ids, want_g = _direct(init, tok, uid)
        assert torch.equal(ids, want_ids)
        torch.testing.assert_close(g, want_g, atol=2e-3 * float(want_g.abs().max()), rtol=2e-3)
        # rows: the scatter-add of the recorded vectors equals autograd on the parameters
        rows, tok_grad, prow, pos_grad = store.row_gradients([uid])
        mods = embedding_modules(init)
        if arch == "llama":  # untied: the token table's gradient is the input path only
            assert pos is None and prow is None
            torch.testing.assert_close(
                tok_grad, mods["token"].weight.grad[rows], atol=3e-3 * float(want_g.abs().max()), rtol=3e-3
            )
            untouched = torch.ones(mods["token"].weight.shape[0], dtype=torch.bool)
            untouched[rows] = False
            assert float(mods["token"].weight.grad[untouched].abs().max()) == 0.0
        else:  # GPT-2: learned positions get the same per-position vectors
            assert torch.equal(pos, torch.arange(len(ids)))
            torch.testing.assert_close(
                pos_grad, mods["position"].weight.grad[prow], atol=3e-3 * float(want_g.abs().max()), rtol=3e-3
            )
    stats = rec.stats()
    n_tok = sum(len(store.load(u, 1)[0]) for u in store.uids(1))
    per_tok = 32 * 2 + 4 + (4 if arch == "gpt2" else 0)  # fp16 grad row + int32 id (+ int32 position)
    assert stats["bytes"] == n_tok * per_tok
    assert stats["bytes_per_example"] == pytest.approx(n_tok * per_tok / len(DATA))


def test_tied_gradient_paths_equal_per_example_autograd(tmp_path):
    """Tied GPT-2: 'input' = the input path only; 'input_and_output' = the tied matrix's full gradient."""
    model, tok = tiny_causal_lm("gpt2", texts=_texts(), vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    assert model.lm_head.weight is model.transformer.wte.weight
    init = copy.deepcopy(model)
    rec = EmbeddingGradientRecorder(tmp_path / "both", tied_gradient="input_and_output")
    finetune(model, tok, DATA, num_epochs=1, batch_size=2, learning_rate=3e-3, max_grad_norm=0.0, callbacks=[rec])
    store = EmbeddingGradientStore(rec.output_dir)
    assert store.has_output_path and store.meta["path"] == "input_and_output"
    for uid in store.uids(1)[:2]:  # the first optimizer step's examples were seen by the initial weights
        m = copy.deepcopy(init)
        want_ids, want_in = _direct(m, tok, uid)  # also fills m's parameter grads (both paths of the tied matrix)
        full = m.transformer.wte.weight.grad  # [V, H]
        scale = float(full.abs().max())
        rows, both, _, _ = store.row_gradients([uid], include_output=True)
        assert torch.equal(rows, torch.arange(full.shape[0]))
        torch.testing.assert_close(both, full, atol=3e-3 * scale, rtol=3e-3)
        # 'input' alone: the scatter of d loss / d embedding output, which is NOT the tied matrix's gradient
        in_rows, in_grad, _, _ = store.row_gradients([uid])
        input_only = torch.zeros_like(full).index_add_(0, want_ids, want_in)
        torch.testing.assert_close(in_grad, input_only[in_rows], atol=3e-3 * scale, rtol=3e-3)
        torch.testing.assert_close(
            both - torch.zeros_like(full).index_add_(0, in_rows, in_grad),
            full - input_only,
            atol=3e-3 * scale,
            rtol=3e-3,
        )  # the output part, on its own
        assert float((full - input_only).abs().max()) > 0.1 * scale  # the output path is not negligible
    # the method uses the chosen path; a recording without the output part is refused for 'input_and_output'
    res = _forget(
        copy.deepcopy(model),
        tok,
        recording=store,
        tied_gradient="input_and_output",
        eta=0.2,
        step_cap=2,
        target_nll=1e6,
        retain_tolerance=None,
        influence=False,
    ).details
    assert res["tied_gradient"] == "input_and_output" and res["rows_updated"] == full.shape[0]
    assert res["forget_nll_after"] > res["forget_nll_before"]
    inp = EmbeddingGradientRecorder(tmp_path / "in")
    finetune(copy.deepcopy(init), tok, DATA, num_epochs=1, batch_size=2, callbacks=[inp])
    with pytest.raises(ValueError, match="output-layer path"):
        _forget(
            copy.deepcopy(model), tok, recording=str(inp.output_dir), tied_gradient="input_and_output", influence=False
        )
    with pytest.raises(ValueError, match="input_and_output"):
        EmbeddingGradientStore(inp.output_dir).load_output("u0")
    with pytest.raises(ValueError, match="tied_gradient"):
        EmbeddingGradientRecorder(tmp_path / "x", tied_gradient="output")
    with pytest.raises(ValueError, match="untie"):
        EmbeddingGAConfig(tied_gradient="input_and_output", untie=True)
    llama, ltok = tiny_causal_lm("llama", texts=_texts(), vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="separate parameters"):
        finetune(
            llama,
            ltok,
            DATA,
            num_epochs=1,
            batch_size=4,
            callbacks=[EmbeddingGradientRecorder(tmp_path / "l", tied_gradient="input_and_output")],
        )


def test_later_epochs_are_recorded_only_on_request(trained):
    _, _, _, rec = trained["gpt2"]
    store = EmbeddingGradientStore(rec.output_dir)
    assert store.epochs == [1, 2]
    _, _, g1 = store.load("u0", 1)
    _, _, g2 = store.load("u0", 2)
    assert not torch.equal(g1, g2)  # the model moved between the epochs
    with pytest.raises(KeyError, match="epoch 3"):
        store.load("u0", 3)


def _forget(model, tok, **kw):
    """embedding_ga on FORGET, with the training data the recording was made on."""
    return hf_unlearn.unlearn(model, FORGET, method="embedding_ga", tokenizer=tok, train_dataset=DATA, **kw)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _embedding_names(model):
    ids = {id(p) for p in embedding_params(model)}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("mode", ["recorded", "iterative"])
def test_only_embedding_parameters_change(trained, arch, mode):
    _, model, tok, rec = trained[arch]
    model = copy.deepcopy(model)
    before = _snapshot(model)
    res = _forget(
        model,
        tok,
        mode=mode,
        learning_rate=0.05,
        eta=0.5,
        step_cap=3,
        target_nll=50.0,
        retain_tolerance=None,
        influence=False,
    )
    assert res.details["steps"] == 3
    assert res.details["forget_nll_after"] > res.details["forget_nll_before"]
    emb = _embedding_names(model)
    for n, p in model.named_parameters():
        if n in emb:
            assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), n


def test_calibration_stops_at_target(trained):
    _, model, tok, rec = trained["llama"]
    model = copy.deepcopy(model)
    f0 = hf_unlearn.methods.embedding_ga.mean_nll(model, tok, select_uids(load_examples(DATA), FORGET))
    target = f0 + 0.3
    res = _forget(
        model,
        tok,
        eta=0.05,
        step_cap=200,
        target_nll=target,
        retain_tolerance=None,
        influence=False,
    )
    d = res.details
    assert d["stop_reason"] == "target_reached" and d["target_source"] == "target_nll"
    assert d["forget_nll_after"] >= target
    assert d["history"][-2]["forget_nll"] < target  # it stopped at the first crossing
    assert 1 < d["steps"] < 200


def test_holdout_sets_the_default_target(trained):
    _, model, tok, rec = trained["llama"]
    holdout = [{"uid": "h0", "question": "Where was Ivo Petrov born?", "answer": "Ivo Petrov was born in city 7."}]
    res = _forget(
        copy.deepcopy(model),
        tok,
        holdout=holdout,
        eta=0.05,
        step_cap=2,
        influence=False,
    )
    want = hf_unlearn.methods.embedding_ga.mean_nll(model, tok, load_examples(holdout))
    assert res.details["target_source"] == "holdout"
    assert res.details["target_nll"] == pytest.approx(want)


def test_step_cap_and_retain_tolerance_stop_runaway_ascent(trained):
    _, model, tok, rec = trained["gpt2"]
    capped = _forget(
        copy.deepcopy(model),
        tok,
        eta=0.2,
        step_cap=4,
        target_nll=1e6,
        retain_tolerance=None,
        influence=False,
    ).details
    assert capped["stop_reason"] == "step_cap" and capped["steps"] == 4

    m = copy.deepcopy(model)
    res = _forget(
        m,
        tok,
        eta=0.5,
        step_cap=100,
        target_nll=1e6,
        retain_tolerance=0.05,
        influence=False,
    ).details
    assert res["stop_reason"] == "retain_tolerance" and res["steps"] < 100
    assert res["rolled_back"] == 1
    # the last accepted state is within tolerance; the rejected step was past it
    assert res["retain_nll_after"] - res["retain_nll_before"] <= 0.05
    assert res["history"][-1]["retain_nll"] - res["retain_nll_before"] > 0.05
    assert res["retain_nll_after"] == pytest.approx(res["history"][-2]["retain_nll"])


def test_missing_recording_and_unknown_uids_raise_clear_errors(trained, tmp_path):
    _, model, tok, rec = trained["llama"]
    fresh, tok2 = tiny_causal_lm("llama", texts=_texts(), vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    with pytest.raises(MissingRecordingError, match="EmbeddingGradientRecorder"):
        hf_unlearn.unlearn(fresh, FORGET, method="embedding_ga", tokenizer=tok2, train_dataset=DATA, influence=False)
    with pytest.raises(MissingRecordingError, match="index.json"):
        EmbeddingGradientStore(tmp_path)
    store = EmbeddingGradientStore(rec.output_dir)
    with pytest.raises(KeyError, match="nope"):
        store.row_gradients(["u0", "nope"])
    other = [{"uid": "nope", "question": "Q?", "answer": "A."}]
    with pytest.raises(KeyError, match="nope"):
        hf_unlearn.unlearn(copy.deepcopy(model), other, method="embedding_ga", tokenizer=tok, influence=False)
    with pytest.raises(KeyError, match="recorded epochs"):
        _forget(
            copy.deepcopy(model),
            tok,
            epochs=(3,),
            influence=False,
        )


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        EmbeddingGAConfig(mode="magic")
    with pytest.raises(ValueError, match="epochs"):
        EmbeddingGAConfig(epochs=(0,))
    with pytest.raises(ValueError, match="fuzzy_scorer"):
        EmbeddingGAConfig(fuzzy_scorer="nope")
    with pytest.raises(ValueError, match="iterative"):
        EmbeddingGAConfig(mode="recorded", param_scope="all")
    with pytest.raises(KeyError, match="valid options"):
        EmbeddingGAConfig.from_dict({"etaa": 1})


def test_fuzzy_matching_selects_the_expected_examples(trained):
    matched, scores = fuzzy_match(["Where was Chen Wei born?", "the sky is blue on a clear day"], DATA)
    assert sorted(matched["uid"]) == ["u2", "u7"]
    assert all(s >= 90 for s in scores.values())
    assert len(fuzzy_match("Chen Wei", DATA, threshold=99)[0]) == 0
    assert fuzzy_match("Where was Chen Wei born?", DATA, field="question", scorer="ratio")[0]["uid"] == ["u2"]
    _, model, tok, rec = trained["llama"]
    res = hf_unlearn.unlearn(
        copy.deepcopy(model),
        DATA,
        method="embedding_ga",
        tokenizer=tok,
        request_text="Where was Chen Wei born?",
        eta=0.1,
        step_cap=2,
        target_nll=1e6,
        influence=False,
    )
    assert res.details["forget_uids"] == ["u2"]
    assert res.details["retain_nll_before"] is not None  # the unmatched candidates are the retain set
    with pytest.raises(ValueError, match="no candidate matches"):
        hf_unlearn.unlearn(copy.deepcopy(model), DATA, method="embedding_ga", tokenizer=tok, request_text="zzzz qqq")


def test_untie_keeps_the_output_layer(trained, tmp_path):
    _, model, tok, rec = trained["gpt2"]
    m = copy.deepcopy(model)
    head = m.lm_head.weight.detach().clone()
    res = _forget(
        m,
        tok,
        untie=True,
        eta=0.5,
        step_cap=2,
        target_nll=1e6,
        retain_tolerance=None,
        influence=False,
    )
    assert res.details["tied_embeddings"] and res.details["untied"]
    assert torch.equal(m.lm_head.weight, head)
    assert not torch.equal(m.transformer.wte.weight, head)
    m.save_pretrained(tmp_path / "untied")  # reloads untied with plain transformers
    back = type(m).from_pretrained(tmp_path / "untied")
    assert torch.equal(back.lm_head.weight, head) and torch.equal(
        back.transformer.wte.weight, m.transformer.wte.weight
    )


def test_lissa_solves_the_damped_system(trained):
    _, model, tok, rec = trained["llama"]
    model = copy.deepcopy(model).eval()
    params = embedding_params(model)
    batch = collator_for(tok)([r for r in tokenize_any(load_examples(DATA[:4]), tok)])
    batch.pop("uid")
    torch.manual_seed(0)
    v = [torch.randn_like(p) * 1e-2 for p in params]
    damping, scale = 0.5, 10.0
    with only_grad_for(model, params):
        x = lissa_inverse_hvp(model, [batch], v, params, damping=damping, scale=scale, iterations=60)
        hx = hvp(model, batch, params, x)
    # fixed point of the recursion: (H + damping * scale * I) x = v
    resid = sum(float((a + damping * scale * b - c).norm() ** 2) for a, b, c in zip(hx, x, v)) ** 0.5
    assert resid < 1e-3 * sum(float(c.norm() ** 2) for c in v) ** 0.5


def _pooled_last_hidden(model, tok, uids):
    """Independent reference: per example (no padding), the mean over its tokens of the last hidden state."""
    model.eval()
    out = []
    with torch.no_grad():
        for uid in uids:
            row = tokenize_any(select_uids(load_examples(DATA), [uid]), tok)[0]
            ids = torch.tensor([row["input_ids"]])
            out.append(model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(0))
    return torch.stack(out)  # [N, H]


def test_influence_reported_before_and_after(trained):
    _, model, tok, rec = trained["gpt2"]
    original = copy.deepcopy(model)
    res = _forget(
        copy.deepcopy(model),
        tok,
        eta=0.5,
        step_cap=2,
        target_nll=1e6,
        retain_tolerance=None,
        lissa_iterations=3,
        influence_examples=3,
    )
    d = res.details
    keys = {"activation_forget", "activation_retain", "lissa_forget", "lissa_retain"}
    assert set(d["influence_before"]) == keys and set(d["influence_after"]) == keys
    # activation score = mean over forget examples of <mean pooled request activation, example activation>, with
    # the request = the forget set: recomputed independently on the model before and on the model after
    for m, side in ((original, "influence_before"), (res.model, "influence_after")):
        a = _pooled_last_hidden(m, tok, FORGET)  # [2, H]
        want = float((a @ a.mean(0)).mean())
        assert d[side]["activation_forget"] == pytest.approx(want, rel=1e-4), side
    # LiSSA self-influence: the forget examples helped the forget request more than the retain examples did
    before = d["influence_before"]
    assert before["lissa_forget"] > 0 and before["lissa_forget"] > before["lissa_retain"]
    assert before["lissa_forget"] != d["influence_after"]["lissa_forget"]


def test_recording_under_a_lora_fine_tune_with_frozen_embeddings(tmp_path):
    """A LoRA fine-tune (the usual setting on a real model) freezes the embeddings: the recorder still records
    dL/d(inputs_embeds), equal to per-example autograd through the adapted model."""
    model, tok = tiny_causal_lm("llama", texts=_texts(), vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    rec = EmbeddingGradientRecorder(tmp_path / "rec-lora", epochs=(1,), shard_size=3)
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "init_lora_weights": False}
    torch.manual_seed(0)
    out = finetune(
        model, tok, DATA, num_epochs=1, batch_size=2, learning_rate=3e-3, max_grad_norm=0.0, lora=lora, callbacks=[rec]
    )
    peft_model = out.model
    assert not embedding_modules(peft_model)["token"].weight.requires_grad
    store = EmbeddingGradientStore(rec.output_dir)
    assert sorted(store.uids(1)) == sorted(d["uid"] for d in DATA)
    # the last optimizer step's examples were seen by the final weights: compare against autograd on them
    last = store.uids(1)[-2:]
    for uid in last:
        ids, _, g = store.load(uid, 1)
        want_ids, want_g = _direct(peft_model, tok, uid)
        assert torch.equal(ids, want_ids)
        assert float(g.abs().max()) > 0
    # and the first step's examples against the adapted model before training (the same init, re-created)
    model0, _ = tiny_causal_lm("llama", texts=_texts(), vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
    from peft import get_peft_model

    from hf_unlearn.training.lora import make_lora_config

    torch.manual_seed(0)
    init = get_peft_model(model0, make_lora_config(model0, lora))
    for uid in store.uids(1)[:2]:
        ids, _, g = store.load(uid, 1)
        want_ids, want_g = _direct(init, tok, uid)
        assert torch.equal(ids, want_ids)
        torch.testing.assert_close(g, want_g, atol=2e-3 * float(want_g.abs().max()), rtol=2e-3)
