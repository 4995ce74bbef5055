"""The OpenUnlearning baselines simnpo, idk_dpo, rmu, undial and wga.

Each loss is checked against a hand computation of its paper's equation on tiny tensors (plain Python loops over
positions, math.log / math.exp, no shared code with the implementation), then each method runs end to end on both
tiny architectures, in full fine-tuning and with ``lora=`` (base weights bit-identical, reference = adapter off).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import hf_unlearn
from hf_unlearn.data import collator_for, load_examples, tokenize_qa
from hf_unlearn.training import precompute_sequence_nll

NEW = ["simnpo", "idk_dpo", "rmu", "undial", "wga"]
FORGET = ["u000", "u001", "u002", "u003"]
# per-method settings strong enough to move a ~100k-parameter model in a few steps
# (4 forget examples, batch 4: one step an epoch; RMU's representation steering needs more steps)
E2E = {
    "simnpo": {"num_epochs": 3, "batch_size": 4, "forget_weight": 1.0, "learning_rate": 1e-2},
    "idk_dpo": {"num_epochs": 3, "batch_size": 4, "learning_rate": 5e-3},
    "rmu": {"num_epochs": 10, "batch_size": 4, "learning_rate": 2e-2, "alpha": 1.0},
    "undial": {"num_epochs": 3, "batch_size": 4, "learning_rate": 5e-3},
    "wga": {"num_epochs": 3, "batch_size": 4, "learning_rate": 5e-3},
}


# ---------------------------------------------------------------------------------------------------------------
# hand computations


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> list[list[float]]:
    """Per sequence, log p(label) at every answer position (position t predicts token t+1)."""
    out = []
    for b in range(logits.shape[0]):
        seq = []
        for t in range(logits.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y != -100:
                seq.append(_log_softmax(logits[b, t].tolist())[y])
        out.append(seq)
    return out


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.fixture
def tiny_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, generator=g) * 2
    ref_logits = torch.randn(2, 5, 6, generator=g) * 2
    labels = torch.tensor([[-100, -100, 3, 1, 5], [-100, 2, 0, 4, -100]])  # the second is padded
    return logits, ref_logits, labels


def test_simnpo_loss_matches_the_paper(tiny_batch):
    from hf_unlearn.methods.simnpo import simnpo_loss

    logits, _, labels = tiny_batch
    beta, gamma = 2.5, 0.7
    # L = mean over sequences of -(2/beta) log sigmoid(-(beta/|y|) log pi(y|x) - gamma)
    hand = []
    for seq in _label_logprobs(logits, labels):
        log_pi = sum(seq)
        hand.append(-(2 / beta) * _logsigmoid(-(beta / len(seq)) * log_pi - gamma))
    got = simnpo_loss(logits, labels, beta, gamma)
    assert float(got) == pytest.approx(sum(hand) / len(hand), rel=1e-5)


def test_wga_loss_and_its_gradient_match_the_definition(tiny_batch):
    from hf_unlearn.methods.wga import wga_loss

    logits, _, labels = tiny_batch
    beta = 1.5
    # L = -(1/N) sum_t p(y_t)^beta * CE_t over every answer token of the batch
    terms = [math.exp(lp) ** beta * (-lp) for seq in _label_logprobs(logits, labels) for lp in seq]
    assert float(wga_loss(logits, labels, beta)) == pytest.approx(-sum(terms) / len(terms), rel=1e-5)
    # the weight is a constant (stop-gradient): d/dz equals that of -(1/N) sum_t w_t CE_t with w_t fixed
    z = logits.clone().requires_grad_(True)
    wga_loss(z, labels, beta).backward()
    z2 = logits.clone().requires_grad_(True)
    lp = torch.log_softmax(z2[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = labels[:, 1:].ne(-100)
    w = lp.detach().exp() ** beta
    (-(w * -lp)[mask].sum() / mask.sum()).backward()
    assert torch.allclose(z.grad, z2.grad, atol=1e-6)
    assert not torch.allclose(z.grad, _full_grad(logits, labels, beta), atol=1e-4)


def _full_grad(logits, labels, beta):
    """The gradient if the weight were NOT detached (what the implementation must differ from)."""
    z = logits.clone().requires_grad_(True)
    lp = torch.log_softmax(z[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = labels[:, 1:].ne(-100)
    (-((lp.exp() ** beta) * -lp)[mask].sum() / mask.sum()).backward()
    return z.grad


def test_undial_loss_matches_the_paper(tiny_batch):
    from hf_unlearn.methods.undial import undial_loss

    logits, ref_logits, labels = tiny_batch
    gamma = 3.0
    # q_t = softmax(z_ref_t - gamma * onehot(y_t)); loss = mean_t -sum_v q_t,v log p_t,v over answer tokens
    terms = []
    for b in range(2):
        for t in range(4):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            zt = ref_logits[b, t].tolist()
            zt[y] -= gamma
            q = [math.exp(v) for v in _log_softmax(zt)]
            logp = _log_softmax(logits[b, t].tolist())
            terms.append(-sum(qv * lv for qv, lv in zip(q, logp)))
    got = undial_loss(logits, ref_logits, labels, gamma)
    assert float(got) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    # the teacher puts less mass on the label than the frozen model: minimising moves the student off it
    z = ref_logits.clone().requires_grad_(True)
    undial_loss(z, ref_logits, labels, gamma).backward()
    assert float(z.grad[0, 1, 3]) > 0  # label token 3 at position 1: its logit is pushed down


def test_dpo_loss_matches_the_definition():
    from hf_unlearn.methods.idk_dpo import dpo_loss

    nll_w, ref_w = torch.tensor([3.0, 5.0]), torch.tensor([4.0, 4.5])
    nll_l, ref_l = torch.tensor([2.0, 1.0]), torch.tensor([1.5, 1.2])
    beta = 0.1
    # h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)], log pi = -NLL
    hand = [
        -(2 / beta) * _logsigmoid(beta * ((-nw + rw) - (-nl + rl)))
        for nw, rw, nl, rl in zip(nll_w.tolist(), ref_w.tolist(), nll_l.tolist(), ref_l.tolist())
    ]
    assert float(dpo_loss(nll_w, ref_w, nll_l, ref_l, beta)) == pytest.approx(sum(hand) / 2, rel=1e-6)


def test_rmu_activation_loss_matches_the_paper():
    from hf_unlearn.methods.rmu import random_control_vector, rmu_activation_loss

    g = torch.Generator().manual_seed(1)
    act = torch.randn(2, 3, 4, generator=g)
    frozen = torch.randn(2, 3, 4, generator=g)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    c, d = 6.5, 4
    u = random_control_vector(d, c, seed=3)
    assert float(u.norm()) == pytest.approx(c) and bool((u >= 0).all())
    assert torch.equal(u, random_control_vector(d, c, seed=3)) and not torch.equal(u, random_control_vector(d, c, 4))

    # paper: E_x[(1/L_x) sum_t ||h_t - target_t||^2], with the official code's 1/d (mean over hidden units)
    def hand(target):
        per_seq = []
        for b in range(2):
            toks = [t for t in range(3) if mask[b, t]]
            sq = [sum((float(act[b, t, k]) - float(target(b, t)[k])) ** 2 for k in range(d)) / d for t in toks]
            per_seq.append(sum(sq) / len(toks))
        return sum(per_seq) / 2

    assert float(rmu_activation_loss(act, u, mask)) == pytest.approx(hand(lambda b, t: u), rel=1e-5)
    assert float(rmu_activation_loss(act, frozen, mask)) == pytest.approx(hand(lambda b, t: frozen[b, t]), rel=1e-5)


def test_rmu_layers_scale_with_depth_and_bad_choices_raise():
    from hf_unlearn.methods.rmu import RMUConfig, resolve_layers

    assert resolve_layers(32) == (7, [5, 6, 7])  # the paper's Zephyr-7B setting
    assert resolve_layers(30) == (7, [5, 6, 7])  # SmolLM2-135M
    assert resolve_layers(4) == (1, [0, 1]) and resolve_layers(1) == (0, [0])
    assert resolve_layers(4, layer=3, update_layers=[1, 3]) == (3, [1, 3])
    with pytest.raises(ValueError, match="outside the model"):
        resolve_layers(4, layer=4)
    with pytest.raises(ValueError, match="cannot change its output"):
        resolve_layers(4, layer=1, update_layers=[2])
    with pytest.raises(ValueError, match="update_layers"):
        RMUConfig(update_layers=[])
    with pytest.raises(ValueError, match="update must be one of"):
        RMUConfig(update="attn")
    with pytest.raises(ValueError, match="token_positions"):
        RMUConfig(token_positions="prompt")


@pytest.mark.parametrize(
    "method, bad, match",
    [
        ("simnpo", {"beta": 0}, "beta must be > 0"),
        ("simnpo", {"retain_loss": "l2"}, "retain_loss must be one of"),
        ("idk_dpo", {"beta": -1.0}, "beta must be > 0"),
        ("idk_dpo", {"refusals": []}, "non-empty list"),
        ("idk_dpo", {"refusals": ["ok", ""]}, "non-empty strings"),
        ("undial", {"gamma": 0}, "gamma must be > 0"),
        ("undial", {"retain_loss": "mse"}, "retain_loss must be one of"),
        ("wga", {"beta": -0.5}, "beta must be >= 0"),
        ("rmu", {"steering_coeff": 0}, "steering_coeff must be > 0"),
        ("rmu", {"layer": -1}, "layer must be None"),
    ],
)
def test_configs_reject_bad_values(method, bad, match):
    with pytest.raises(ValueError, match=match):
        hf_unlearn.get_method(method).config_cls(**bad)


def test_idk_dpo_refusals_builtin_list_file_and_errors(tmp_path):
    from hf_unlearn.methods.idk_dpo import REFUSALS, IdkDPOConfig, load_refusals

    assert 20 <= len(REFUSALS) <= 100 and len(set(REFUSALS)) == len(REFUSALS)
    f = tmp_path / "mine.txt"
    f.write_text("Nope.\n\n  I forgot.  \n", encoding="utf-8")
    assert load_refusals(str(f)) == ["Nope.", "I forgot."]
    assert IdkDPOConfig(refusals=str(f)).refusals == str(f)
    with pytest.raises(FileNotFoundError, match="not a file"):
        IdkDPOConfig(refusals=str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="holds no refusal"):
        load_refusals(str(tmp_path / "empty.txt"))


# ---------------------------------------------------------------------------------------------------------------
# end to end


def mean_nll(model, tok, rows):
    tokenized = tokenize_qa(load_examples(rows), tok)
    vals = precompute_sequence_nll(model, tokenized, collator_for(tok))
    n_tokens = sum(sum(1 for x in r if x != -100) for r in tokenized["labels"])
    return sum(vals.values()) / n_tokens


@pytest.fixture(scope="module")
def tiny_gpt2_trained(qa_rows, qa_texts):
    model, tok = hf_unlearn.tiny_causal_lm("gpt2", texts=qa_texts, vocab_size=400, hidden_size=48, num_layers=2)
    return hf_unlearn.finetune(model, tok, qa_rows, num_epochs=40, learning_rate=5e-3, batch_size=8).model, tok


@pytest.fixture
def trained(request, tiny_llama_trained, tiny_gpt2_trained):
    return tiny_llama_trained if request.param == "llama" else tiny_gpt2_trained


@pytest.mark.parametrize("trained", ["llama", "gpt2"], indirect=True)
@pytest.mark.parametrize("method", NEW)
def test_full_unlearning_raises_forget_nll(trained, qa_rows, method):
    model, tok = trained
    forget_rows = [r for r in qa_rows if r["uid"] in FORGET]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    nll_before = mean_nll(model, tok, forget_rows)
    res = hf_unlearn.unlearn(
        model, FORGET, method=method, tokenizer=tok, train_dataset=qa_rows, inplace=False, **E2E[method]
    )
    nll_after = mean_nll(res.model, tok, forget_rows)
    assert nll_after > nll_before + 0.1, (method, nll_before, nll_after)
    assert res.tokens_processed > 0 and res.details["steps"] == E2E[method]["num_epochs"]
    moved = {n for n, p in res.model.named_parameters() if not torch.equal(p, before[n])}
    if method == "rmu":  # only the output projection of the MLPs of blocks layer-2..layer (here: block 0 of 2)
        assert res.details["layer"] == 0 and res.details["update_layers"] == [0]
        assert moved and all(
            n.startswith(("model.layers.0.mlp.down_proj.", "transformer.h.0.mlp.c_proj.")) for n in moved
        )
        assert all(p.requires_grad for p in res.model.parameters())  # the caller's flags are restored
    else:
        assert len(moved) > 4


@pytest.mark.parametrize("method", NEW)
def test_lora_keeps_the_base_bit_identical_and_uses_the_disabled_adapter(
    tiny_llama_trained, qa_rows, method, monkeypatch
):
    import hf_unlearn.training.engine as engine

    model, tok = tiny_llama_trained
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    modes = []
    real_init = engine.ReferenceModel.__init__

    def spy(self, m, mode):
        modes.append(mode)
        real_init(self, m, mode)

    monkeypatch.setattr(engine.ReferenceModel, "__init__", spy)
    kwargs = {**E2E[method], "learning_rate": 2e-2}
    if method in ("simnpo", "wga", "idk_dpo"):
        kwargs["retain_loss"] = "kl"  # exercise the KL reference too
    res = hf_unlearn.unlearn(
        model, FORGET, method=method, tokenizer=tok, train_dataset=qa_rows, inplace=False,
        lora={"r": 4, "lora_alpha": 8}, **kwargs,
    )  # fmt: skip
    # the reference (teacher, KL term) is the adapter disabled: ReferenceModel deep-copies only in mode "copy"
    assert modes == ([] if method == "rmu" else ["adapter_disabled"]), modes
    peft_model = res.model
    lora_b_moved = False
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            lora_b_moved |= "lora_B" in name and bool(p.abs().sum() > 0)
            if method == "rmu":  # the adapter sits on the steered block's MLP output projection only
                assert ".layers.0.mlp.down_proj." in name, name
            continue
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p, base[clean]), name
    assert lora_b_moved
    forget_rows = [r for r in qa_rows if r["uid"] in FORGET]
    assert mean_nll(peft_model, tok, forget_rows) > mean_nll(model, tok, forget_rows) + 0.05


def test_rmu_lora_rejects_target_modules_and_missing_mlps(tiny_llama_trained, qa_rows):
    model, tok = tiny_llama_trained
    with pytest.raises(ValueError, match="target_modules"):
        hf_unlearn.unlearn(
            model, FORGET, method="rmu", tokenizer=tok, train_dataset=qa_rows, inplace=False,
            lora={"r": 2, "target_modules": ["q_proj"]},
        )  # fmt: skip
    with pytest.raises(ValueError, match="outside the model"):
        hf_unlearn.unlearn(model, FORGET, method="rmu", tokenizer=tok, train_dataset=qa_rows, inplace=False, layer=5)


def test_idk_dpo_draws_refusals_per_uid_and_needs_questions(tiny_llama_trained, qa_rows):
    from hf_unlearn.methods.idk_dpo import IdkDPOTrainer

    draws = [[IdkDPOTrainer.refusal_index(_Draws(seed=s), u) for u in ("a", "b", "a", "a")] for s in (0, 0, 1)]
    assert draws[0] == draws[1]  # a function of (seed, uid, draw count) only
    assert draws[0] != draws[2]
    model, tok = tiny_llama_trained
    with pytest.raises(ValueError, match="'question', 'answer'"):
        hf_unlearn.unlearn(
            copy.deepcopy(model), [{"uid": "t0", "text": "some text to forget"}], method="idk_dpo", tokenizer=tok,
            retain=qa_rows,
        )  # fmt: skip
    # a one-refusal list is used as the preferred answer: its likelihood rises on the forget questions
    mine = ["Nobody knows."]
    forget_rows = [r for r in qa_rows if r["uid"] in FORGET]
    idk_rows = [{**r, "answer": mine[0]} for r in forget_rows]
    before = mean_nll(model, tok, idk_rows)
    res = hf_unlearn.unlearn(
        model, FORGET, method="idk_dpo", tokenizer=tok, train_dataset=qa_rows, inplace=False, refusals=mine,
        num_epochs=3, batch_size=4, learning_rate=5e-3,
    )  # fmt: skip
    assert mean_nll(res.model, tok, idk_rows) < before - 0.5


class _Draws:
    """The state ``IdkDPOTrainer.refusal_index`` reads, without building a Trainer."""

    def __init__(self, seed: int):
        self._seed, self._draws, self.refusals = seed, {}, list(range(50))
