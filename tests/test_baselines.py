"""The baselines (grad_ascent, grad_diff, npo, retrain) and fine-tuning: behaviour, not just execution."""

import copy

import pytest
import torch

import hf_unlearn
from hf_unlearn.data import collator_for, load_examples, tokenize_qa
from hf_unlearn.training import precompute_sequence_nll

FORGET = ["u000", "u001", "u002", "u003"]


def mean_nll(model, tok, rows):
    tokenized = tokenize_qa(load_examples(rows), tok)
    vals = precompute_sequence_nll(model, tokenized, collator_for(tok))
    n_tokens = sum(sum(1 for x in r if x != -100) for r in tokenized["labels"])
    return sum(vals.values()) / n_tokens


def test_finetune_learns_and_reports_cost(tiny_llama_trained, qa_rows):
    model, tok = tiny_llama_trained
    assert mean_nll(model, tok, qa_rows) < 1.5  # memorised well below the uniform log(vocab) ~ 6


def test_finetune_is_deterministic(qa_rows, qa_texts):
    outs = []
    for _ in range(2):
        model, tok = hf_unlearn.tiny_causal_lm("gpt2", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=1)
        outs.append(hf_unlearn.finetune(model, tok, qa_rows[:8], num_epochs=1, batch_size=4, seed=5))
    for (n, a), (_, b) in zip(outs[0].model.named_parameters(), outs[1].model.named_parameters()):
        assert torch.equal(a, b), n
    assert outs[0].steps == 2 and outs[0].wall_time > 0
    # tokens = non-padding input tokens of one pass over the 8 examples (independently counted)
    tok = hf_unlearn.tiny_causal_lm("gpt2", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=1)[1]
    assert outs[0].tokens == sum(len(ids) for ids in tokenize_qa(load_examples(qa_rows[:8]), tok)["input_ids"])


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("grad_ascent", {}),
        ("grad_diff", {"retain_loss": "nll"}),
        ("grad_diff", {"retain_loss": "kl"}),
        ("npo", {"retain_loss": "none"}),
        ("npo", {"retain_loss": "nll"}),
    ],
)
def test_loss_baselines_raise_forget_nll(tiny_llama_trained, qa_rows, method, kwargs):
    model, tok = tiny_llama_trained
    forget_rows = [r for r in qa_rows if r["uid"] in FORGET]
    before = mean_nll(model, tok, forget_rows)
    res = hf_unlearn.unlearn(
        model,
        FORGET,
        method=method,
        tokenizer=tok,
        train_dataset=qa_rows,
        inplace=False,
        num_epochs=3,
        learning_rate=2e-3,
        batch_size=4,
        **kwargs,
    )
    after = mean_nll(res.model, tok, forget_rows)
    assert after > before + 0.5, (method, before, after)
    assert res.forget_uids == FORGET and res.timings["unlearn"] > 0 and res.tokens_processed > 0
    assert res.memory["peak_rss_mib"] > 0
    # inplace=False left the original untouched
    assert mean_nll(model, tok, forget_rows) == pytest.approx(before, abs=1e-6)


def test_retain_term_and_npo_weighting_change_the_result(tiny_llama_trained, qa_rows):
    """Raising the forget NLL alone would let a broken grad_diff (retain term ignored) or a broken npo (plain
    ascent) pass the test above. Same settings, same data order: grad_diff must keep the retain NLL lower than
    grad_ascent, and npo (whose per-example weight shrinks as the forget NLL rises) must raise the forget NLL less."""
    model, tok = tiny_llama_trained
    forget_rows = [r for r in qa_rows if r["uid"] in FORGET]
    retain_rows = [r for r in qa_rows if r["uid"] not in FORGET]
    kw = dict(tokenizer=tok, train_dataset=qa_rows, inplace=False, num_epochs=3, learning_rate=1e-2, batch_size=4)
    out = {}
    for name, method, extra in (
        ("ga", "grad_ascent", {}),
        ("gd", "grad_diff", {"retain_loss": "nll"}),
        ("npo", "npo", {"retain_loss": "none"}),
    ):
        m = hf_unlearn.unlearn(model, FORGET, method=method, **kw, **extra).model
        out[name] = (mean_nll(m, tok, forget_rows), mean_nll(m, tok, retain_rows))
    assert out["gd"][1] < out["ga"][1] - 1.0, out  # the retain term protects the retain set
    assert out["npo"][0] < out["ga"][0] - 0.2, out  # NPO's bounded loss slows the divergence (measured: ~0.5)


@pytest.mark.parametrize("method", ["grad_ascent", "grad_diff", "npo"])
def test_lora_unlearning_keeps_base_bit_identical(tiny_llama_trained, qa_rows, method):
    model, tok = tiny_llama_trained
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    kwargs = {"retain_loss": "kl"} if method != "grad_ascent" else {}
    res = hf_unlearn.unlearn(
        model,
        FORGET,
        method=method,
        tokenizer=tok,
        train_dataset=qa_rows,
        inplace=False,
        num_epochs=2,
        learning_rate=5e-3,
        lora={"r": 4, "lora_alpha": 8},
        **kwargs,
    )
    peft_model = res.model
    assert type(peft_model).__name__.startswith("PeftModel")
    lora_moved = False
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            lora_moved |= "lora_B" in name and bool(p.abs().sum() > 0)
            continue
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p, base[clean]), name
    assert lora_moved
    forget_rows = [r for r in qa_rows if r["uid"] in FORGET]
    assert mean_nll(peft_model, tok, forget_rows) > mean_nll(model, tok, forget_rows)


def test_npo_with_lora_uses_disabled_adapter_reference_not_a_copy(tiny_llama_trained, qa_rows, monkeypatch):
    import hf_unlearn.training.engine as engine

    model, tok = tiny_llama_trained
    target = copy.deepcopy(model)
    modes = []
    real_init = engine.ReferenceModel.__init__

    def spy(self, m, mode):
        modes.append(mode)
        real_init(self, m, mode)

    monkeypatch.setattr(engine.ReferenceModel, "__init__", spy)
    hf_unlearn.unlearn(
        target,
        FORGET,
        method="npo",
        tokenizer=tok,
        train_dataset=qa_rows,
        num_epochs=1,
        lora={"r": 4},
        retain_loss="kl",
    )
    assert modes == ["adapter_disabled"]  # ReferenceModel deep-copies only in "copy" mode


def test_retrain_from_lora_target_equals_fresh_lora_on_retain(qa_rows, qa_texts):
    base, tok = hf_unlearn.tiny_causal_lm("llama", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=2)
    pristine = copy.deepcopy(base)
    target = hf_unlearn.finetune(base, tok, qa_rows, lora={"r": 4}, num_epochs=1, batch_size=8).model
    retain = [r for r in qa_rows if r["uid"] not in FORGET]
    res = hf_unlearn.unlearn(
        target, FORGET, method="retrain", tokenizer=tok, train_dataset=qa_rows, num_epochs=1, batch_size=8
    )
    gold = hf_unlearn.finetune(
        pristine, tok, retain, lora={"r": 4}, num_epochs=1, batch_size=8, learning_rate=5e-4
    ).model
    ids = torch.tensor([[1, 5, 9, 22, 40]])
    assert torch.equal(res.model(ids).logits, gold(ids).logits)
    assert res.details["retain_size"] == len(retain)


def test_retrain_needs_the_base_model(tiny_llama_trained, qa_rows):
    model, tok = tiny_llama_trained
    with pytest.raises(ValueError, match="base_model"):
        hf_unlearn.unlearn(model, FORGET, method="retrain", tokenizer=tok, train_dataset=qa_rows)


def test_peft_target_with_fresh_lora_is_a_clear_error(qa_rows, qa_texts):
    base, tok = hf_unlearn.tiny_causal_lm("gpt2", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=1)
    target = hf_unlearn.finetune(base, tok, qa_rows[:4], lora=True, num_epochs=1).model
    with pytest.raises(ValueError, match="merge_and_unload"):
        hf_unlearn.unlearn(target, qa_rows[:2], method="grad_ascent", tokenizer=tok, lora={"r": 2})


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_save_load_round_trip_identical_logits(tmp_path, qa_rows, qa_texts, arch):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    model, tok = hf_unlearn.tiny_causal_lm(arch, texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=2)
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)  # the target before unlearning (a Hub model in real use)
    res = hf_unlearn.unlearn(model, qa_rows[:3], method="grad_ascent", tokenizer=tok, num_epochs=1, lora={"r": 4})
    res.model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 7, 3, 30, 12]])
    full = tmp_path / "full"
    merged = copy.deepcopy(res.model).merge_and_unload()
    merged.save_pretrained(full)
    reloaded = AutoModelForCausalLM.from_pretrained(full)
    assert torch.allclose(reloaded(ids).logits, res.model(ids).logits, atol=1e-5)
    assert torch.equal(reloaded(ids).logits, merged(ids).logits)
    # the adapter folder loads on the plain base with transformers + peft alone
    import json

    cfg_path = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(cfg))
    again = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    assert torch.equal(again(ids).logits, res.model(ids).logits)
