"""SSD: hand-computed dampening, importance == direct autograd, adapter target, I_D cache, errors, effect."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset
from torch import nn

import hf_unlearn
from hf_unlearn.data import collator_for, tokenize_qa
from hf_unlearn.methods.ssd import (
    SSD,
    SSDConfig,
    auto_alpha,
    compute_importance,
    dampen,
    label_free_loss,
    target_parameters,
    weights_sha256,
)
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.training.losses import batch_nll

QA = [
    {"uid": f"q{i:02d}", "question": f"Which code does agent {name} use?", "answer": f"Agent {name} uses code {code}."}
    for i, (name, code) in enumerate(
        zip(
            ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kit", "Lu", "Mo", "Ned", "Oz", "Pia"],
            ["red", "blue", "green", "pink", "gold", "teal", "gray", "jade", "lime", "navy", "plum", "ruby", "sand",
             "snow", "wine", "zinc"],
        )
    )
]  # fmt: skip
TEXTS = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in QA]


def _tiny(arch: str = "llama", seed: int = 0):
    return tiny_causal_lm(arch, texts=TEXTS, vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, seed=seed)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------------------------
# dampen: a hand-made model against values computed by hand
# ----------------------------------------------------------------------------------------------------------------
class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.extra = nn.Parameter(torch.tensor([1.0, -2.0]))
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
            self.lin.bias.copy_(torch.tensor([7.0, -8.0]))


I_D = {"lin.weight": torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.5]]), "lin.bias": torch.tensor([1.0, 1.0])}
I_F = {"lin.weight": torch.tensor([[10.0, 11.0, 0.0], [30.0, 3.0, 5.0]]), "lin.bias": torch.tensor([0.5, 100.0])}


def test_dampen_matches_hand_computation():
    toy = Toy()
    before = _state(toy)
    counts = dampen(toy, I_D, I_F, alpha=10, lambda_=1)
    # selected = I_F > 10 * I_D (strict):
    #   weight (0,0): 10 > 10 no | (0,1): 11 > 10 yes, beta 1/11 | (0,2): 0 > 0 no (no gradient)
    #          (1,0): 30 > 20 yes, beta 2/30 | (1,1): 3 > 0 yes, beta 0 | (1,2): 5 > 5 no
    #   bias   (0): 0.5 > 10 no | (1): 100 > 10 yes, beta 1/100;   extra: no importance -> untouched
    assert counts == {"lin.weight": 3, "lin.bias": 1}
    f = torch.tensor
    w = toy.lin.weight.detach()
    assert torch.allclose(w[0, 1], f(2.0) * (f(1.0) / f(11.0)), rtol=0, atol=1e-7)
    assert torch.allclose(w[1, 0], f(4.0) * (f(2.0) / f(30.0)), rtol=0, atol=1e-7)
    assert w[1, 1].item() == 0.0
    for i, j in [(0, 0), (0, 2), (1, 2)]:  # untouched entries: bit-identical
        assert torch.equal(w[i, j], before["lin.weight"][i, j])
    assert torch.equal(toy.lin.bias.detach()[0], before["lin.bias"][0])
    assert torch.allclose(toy.lin.bias.detach()[1], f(-8.0) * (f(1.0) / f(100.0)), rtol=0, atol=1e-7)
    assert torch.equal(toy.extra.detach(), before["extra"])


def test_dampen_beta_is_capped_at_one_and_lambda_scales():
    toy = Toy()
    before = _state(toy)
    counts = dampen(toy, I_D, I_F, alpha=10, lambda_=20)  # (0,1): beta = min(20/11, 1) = 1 -> value unchanged
    assert counts["lin.weight"] == 3
    w = toy.lin.weight.detach()
    assert torch.equal(w[0, 1], before["lin.weight"][0, 1])
    assert w[1, 0].item() == pytest.approx(4.0 * min(20 * 2 / 30, 1.0))  # = 4.0 (capped)
    toy2 = Toy()
    dampen(toy2, I_D, I_F, alpha=10, lambda_=0.5)
    assert toy2.lin.weight[0, 1].item() == pytest.approx(2.0 * 0.5 / 11, rel=1e-6)


def test_dampen_rejects_bad_inputs():
    toy = Toy()
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            dampen(toy, I_D, I_F, alpha=bad, lambda_=1)
        with pytest.raises(ValueError, match="lambda_"):
            dampen(toy, I_D, I_F, alpha=10, lambda_=bad)
    with pytest.raises(KeyError, match="not parameters"):
        dampen(toy, {"nope": torch.ones(1)}, {"nope": torch.ones(1)}, 10, 1)
    with pytest.raises(ValueError, match="shape"):
        dampen(toy, {"lin.bias": torch.ones(3)}, {"lin.bias": torch.ones(3)}, 10, 1)


def test_auto_alpha_selects_the_requested_share():
    imp_d = {"w": torch.ones(100)}
    imp_f = {"w": torch.arange(1, 101, dtype=torch.float32)}
    alpha = auto_alpha(imp_d, imp_f, 90)
    assert 90 < alpha < 91  # linear interpolation between 90 and 91
    lin = nn.Module()
    lin.w = nn.Parameter(torch.ones(100))
    assert dampen(lin, imp_d, imp_f, alpha, 1.0)["w"] == 10  # entries 91..100
    with pytest.raises(ValueError, match="percentile"):
        auto_alpha(imp_d, imp_f, 100)


# ----------------------------------------------------------------------------------------------------------------
# compute_importance == a direct autograd computation
# ----------------------------------------------------------------------------------------------------------------
def _batches(tok, rows, sizes):
    ds = tokenize_qa(Dataset.from_list(rows), tok, max_length=40)
    coll = collator_for(tok)
    out, start = [], 0
    for n in sizes:
        out.append(coll([ds[i] for i in range(start, start + n)]))
        start += n
    return out


def _reference(model, batches, loss_fn, fold, per_sample=False):
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    units = (
        [{k: v[i : i + 1] for k, v in b.items() if k != "uid"} for b in batches for i in range(len(b["uid"]))]
        if per_sample
        else batches
    )
    for b in units:
        loss = loss_fn(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), grads):
            if g is not None:
                acc[n] += fold(g)
    return {n: a / len(units) for n, a in acc.items()}


@pytest.mark.parametrize(
    "arch,mode,label_free",
    [
        ("llama", "batch_sq", False),
        ("llama", "batch_sq", True),
        ("llama", "per_sample_sq", False),  # torch.func vmap path
        ("gpt2", "batch_sq", False),  # tied embeddings: one tensor, both uses summed
        ("gpt2", "per_sample_sq", True),  # vmap cannot trace GPT-2: the per-example loop fallback
    ],
    ids=["official", "lfssd", "per_sample", "gpt2_tied", "gpt2_per_sample_lfssd"],
)
def test_compute_importance_equals_direct_autograd(arch, mode, label_free):
    model, tok = _tiny(arch)
    batches = _batches(tok, QA[:7], [3, 3, 1])  # uneven last batch: still one batch in the mean
    model.train()
    frozen = model.get_input_embeddings().weight
    frozen.requires_grad_(False)  # flags must be restored, and importance must ignore them
    imp = compute_importance(model, batches, target="full", mode=mode, label_free=label_free)
    assert model.training and not frozen.requires_grad
    assert all(p.grad is None for p in model.parameters())
    frozen.requires_grad_(True)
    loss_fn, fold = (label_free_loss, torch.abs) if label_free else (batch_nll, torch.square)
    ref = _reference(model, batches, loss_fn, fold, per_sample=mode == "per_sample_sq")
    assert set(imp) == set(ref)
    for n in ref:
        assert imp[n].dtype == torch.float32
        assert torch.allclose(imp[n], ref[n], rtol=1e-4, atol=1e-10 * float(ref[n].abs().max() + 1)), n
    assert sum(float(v.sum()) for v in imp.values()) > 0


def test_compute_importance_offload_include_exclude():
    model, tok = _tiny()
    batches = _batches(tok, QA[:4], [2, 2])
    full = compute_importance(model, batches)
    sub = compute_importance(model, batches, include=[r"\.layers\.0\."], exclude=[r"mlp"], offload=True)
    assert sub and all(".layers.0." in n and "mlp" not in n for n in sub)
    assert all(v.device.type == "cpu" for v in sub.values())
    for n in sub:
        assert torch.allclose(sub[n], full[n], rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="empty"):
        compute_importance(model, [])
    with pytest.raises(ValueError, match="no parameter left"):
        compute_importance(model, batches, include=["does-not-exist"])


# ----------------------------------------------------------------------------------------------------------------
# adapter target
# ----------------------------------------------------------------------------------------------------------------
def test_adapter_target_never_touches_base_weights(tmp_path):
    from peft import PeftModel, get_peft_model

    from hf_unlearn.training.lora import make_lora_config

    base, tok = _tiny()
    model = get_peft_model(base, make_lora_config(base, {"r": 4, "lora_alpha": 8}))
    torch.manual_seed(0)
    with torch.no_grad():  # a "trained" adapter: non-zero B so both A and B get gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert set(target_parameters(model, "adapter")) == set(lora_before)
    res = hf_unlearn.unlearn(
        model, QA[:4], method="ssd", tokenizer=tok, full_dataset=QA, target="adapter", alpha=1.5, batch_size=4,
        max_length=40, use_cache=False,
    )  # fmt: skip
    assert res.details["dampened_total"] > 0
    assert all("lora_" in n for n in res.details["dampened_per_tensor"])
    for n, p in model.named_parameters():
        if n in base_before:
            assert torch.equal(p.detach(), base_before[n]), n
    assert any(not torch.equal(p.detach(), lora_before[n]) for n, p in model.named_parameters() if n in lora_before)
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    # saves as a standard peft adapter that loads without anything SSD-specific
    model.save_pretrained(tmp_path / "adapter")
    fresh, _ = _tiny()
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    ids = torch.tensor([[3, 5, 7, 9]])
    assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-6)
    with pytest.raises(ValueError, match="PeftModel"):
        hf_unlearn.unlearn(_tiny()[0], QA[:4], method="ssd", tokenizer=tok, full_dataset=QA, target="adapter")


# ----------------------------------------------------------------------------------------------------------------
# the I_D cache
# ----------------------------------------------------------------------------------------------------------------
def _request(model, tok, cache_dir=None, **kw):
    return hf_unlearn.unlearn(
        model, QA[12:], method="ssd", tokenizer=tok, full_dataset=QA, alpha=2.0, batch_size=4, max_length=40,
        cache_dir=str(cache_dir) if cache_dir else None, use_cache=cache_dir is not None, **kw,
    )  # fmt: skip


def test_cache_hit_equals_recomputation(tmp_path):
    original, tok = _tiny()
    first, second, nocache = (copy.deepcopy(original) for _ in range(3))
    r1 = _request(first, tok, tmp_path)
    assert r1.details["cache"] == "miss" and r1.details["dampened_total"] > 0
    files = list(tmp_path.glob("ssd_importance_*.safetensors"))
    assert len(files) == 1
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["weights_sha256"] == weights_sha256(original) and meta["target"] == "full"
    assert meta["mode"] == "batch_sq" and meta["batch_size"] == "4"
    r2 = _request(second, tok, tmp_path)
    assert r2.details["cache"] == "hit" and "importance_full" not in r2.timings
    r3 = _request(nocache, tok)
    assert r3.details["cache"] == "off"
    _assert_same(_state(first), _state(second))
    _assert_same(_state(first), _state(nocache))
    assert r1.details["dampened_per_tensor"] == r2.details["dampened_per_tensor"]


def test_changed_model_invalidates_the_cache(tmp_path):
    original, tok = _tiny()
    _request(copy.deepcopy(original), tok, tmp_path)
    changed = copy.deepcopy(original)
    with torch.no_grad():
        changed.model.norm.weight[0] += 1e-3
    with pytest.raises(ValueError, match="other weights"):
        _request(copy.deepcopy(changed), tok, tmp_path, on_stale="error")
    with pytest.warns(UserWarning, match="reusing"):
        r = _request(copy.deepcopy(changed), tok, tmp_path, on_stale="reuse")
    assert r.details["cache"] == "stale-reused"
    recomputed = copy.deepcopy(changed)
    r = _request(recomputed, tok, tmp_path)
    assert r.details["cache"] == "stale-recomputed"
    reference = copy.deepcopy(changed)
    _request(reference, tok)
    _assert_same(_state(recomputed), _state(reference))
    assert _request(copy.deepcopy(changed), tok, tmp_path).details["cache"] == "hit"  # the entry was refreshed


def _seq_request(model, tok, k, cache_dir=None, **kw):
    """Request k of a sequence: forget two examples of its own (q00-q01, q02-q03, ...) from the same D."""
    return hf_unlearn.unlearn(
        model, QA[2 * k : 2 * k + 2], method="ssd", tokenizer=tok, full_dataset=QA, alpha=2.0, batch_size=4,
        max_length=40, cache_dir=str(cache_dir) if cache_dir else None, use_cache=cache_dir is not None, **kw,
    )  # fmt: skip


def _original_importance(model, tok):
    ssd = SSD(SSDConfig(batch_size=4, max_length=40))
    return compute_importance(model, ssd.loader(Dataset.from_list(QA), tok))


def test_sequence_anchored_selects_on_the_original_weights(tmp_path):
    """cache_policy='anchored' (default): request k computes I_F on the ORIGINAL weights (the dampened entries'
    original values swapped in), compares it with the original I_D and dampens the current model; no pass over D
    after the first request. Reference: both maps computed independently on an untouched copy of the original."""
    original, tok = _tiny()
    i_d = _original_importance(copy.deepcopy(original), tok)
    model, reference = copy.deepcopy(original), copy.deepcopy(original)
    ssd = SSD(SSDConfig(batch_size=4, max_length=40))
    statuses = []
    for k in range(3):
        r = _seq_request(model, tok, k, tmp_path)
        statuses.append(r.details["cache"])
        assert ("importance_full" in r.timings) == (k == 0)
        assert r.details["requests_since_importance_full"] == k + 1
        i_f = compute_importance(original, ssd.loader(Dataset.from_list(QA[2 * k : 2 * k + 2]), tok))
        dampen(reference, i_d, i_f, alpha=2.0, lambda_=1.0)
        _assert_same(_state(model), _state(reference))
    assert statuses == ["miss", "lineage-hit", "lineage-hit"]
    # a descendant recorded by another policy has no anchor: anchored recomputes instead of guessing
    other = copy.deepcopy(original)
    for k in range(2):
        _seq_request(other, tok, k, tmp_path / "other", cache_policy="reuse")
    assert _seq_request(other, tok, 2, tmp_path / "other").details["cache"] == "stale-recomputed"


def test_sequence_reuse_keeps_the_original_importance(tmp_path):
    """cache_policy='reuse': request 2+ on the dampened model reuses I_D of the ORIGINAL weights, exactly as if that
    map were passed in (I_F on the current weights); no pass over D after the first request."""
    original, tok = _tiny()
    i_d = _original_importance(copy.deepcopy(original), tok)
    model, reference = copy.deepcopy(original), copy.deepcopy(original)
    statuses = []
    for k in range(3):
        r = _seq_request(model, tok, k, tmp_path, cache_policy="reuse")
        statuses.append(r.details["cache"])
        assert ("importance_full" in r.timings) == (k == 0)
        _seq_request(reference, tok, k, importance_full=i_d)  # the independent reference: I_D given explicitly
        _assert_same(_state(model), _state(reference))
        assert r.details["requests_since_importance_full"] == k + 1
    assert statuses == ["miss", "lineage-hit", "lineage-hit"]
    # only SSD's own descendants are recognised: an edited model is stale, whatever the policy
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3
    with pytest.raises(ValueError, match="other weights"):
        _seq_request(model, tok, 3, tmp_path, on_stale="error")


def test_sequence_strict_recomputes_on_the_dampened_weights(tmp_path):
    original, tok = _tiny()
    model, reference = copy.deepcopy(original), copy.deepcopy(original)
    statuses = [_seq_request(model, tok, k, tmp_path, cache_policy="strict").details["cache"] for k in range(3)]
    assert statuses == ["miss", "stale-recomputed", "stale-recomputed"]
    for k in range(3):
        _seq_request(reference, tok, k)  # no cache: the official algorithm, I_D over D on the current weights
    _assert_same(_state(model), _state(reference))
    # and the two policies really differ after the first request
    reused = copy.deepcopy(original)
    for k in range(3):
        _seq_request(reused, tok, k, tmp_path / "reuse")
    assert any(not torch.equal(a, b) for a, b in zip(_state(reused).values(), _state(model).values()))


def test_sequence_refresh_recomputes_every_n_requests(tmp_path):
    original, tok = _tiny()
    model = copy.deepcopy(original)
    got = []
    for k in range(5):
        r = _seq_request(model, tok, k, tmp_path, cache_policy="refresh", refresh_every=2)
        got.append((r.details["cache"], r.details["requests_since_importance_full"]))
    assert got == [("miss", 1), ("lineage-hit", 2), ("refreshed", 1), ("lineage-hit", 2), ("refreshed", 1)]


# ----------------------------------------------------------------------------------------------------------------
# configuration and data errors
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,match",
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": -2}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"lambda_": 0}, "lambda_"),
        ({"lambda_": float("inf")}, "lambda_"),
        ({"target": "lora"}, "target"),
        ({"importance": "fisher"}, "importance"),
        ({"auto_alpha": 100}, "auto_alpha"),
        ({"on_stale": "ignore"}, "on_stale"),
        ({"cache_policy": "update"}, "cache_policy"),
        ({"refresh_every": 0}, "refresh_every"),
        ({"include": ["("]}, "include"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_config_rejects_out_of_range_values(kw, match):
    with pytest.raises(ValueError, match=match):
        SSDConfig(**kw)


def test_defaults_are_the_official_ones():
    cfg = SSDConfig()
    assert (cfg.alpha, cfg.lambda_, cfg.batch_size, cfg.importance, cfg.target) == (10, 1, 128, "batch_sq", "full")
    assert not cfg.label_free and cfg.auto_alpha is None


def test_empty_forget_no_signal_and_missing_full_data():
    model, tok = _tiny()
    ssd = SSD(SSDConfig(batch_size=4, max_length=40, use_cache=False))
    empty = Dataset.from_list(QA).select([])
    with pytest.raises(ValueError, match="empty"):
        ssd.unlearn(model, tok, empty, None, full_dataset=QA)
    with pytest.raises(ValueError, match="empty"):
        hf_unlearn.unlearn(model, [], method="ssd", tokenizer=tok, full_dataset=QA)
    with pytest.raises(ValueError, match="full_dataset"):
        ssd.unlearn(model, tok, Dataset.from_list(QA[:2]), None)
    # pre-tokenized forget rows whose labels are all ignored: no gradient signal -> warning, nothing changes
    silent = Dataset.from_dict(
        {"uid": ["q00"], "input_ids": [[3, 4, 5, 6]], "attention_mask": [[1, 1, 1, 1]], "labels": [[-100] * 4]}
    )
    before = _state(model)
    with pytest.warns(UserWarning, match="no gradient signal"):
        out = ssd.unlearn(model, tok, silent, None, full_dataset=QA)
    assert out.details["dampened_total"] == 0
    _assert_same(before, _state(model))


# ----------------------------------------------------------------------------------------------------------------
# effect on a fine-tuned model (embedded benchmark)
# ----------------------------------------------------------------------------------------------------------------
def test_ssd_forgets_the_forget_set_more_than_the_retain_set():
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.pipeline import mean_answer_nll, qa_corpus
    from hf_unlearn.training import finetune

    dd = build(n_authors=5, seed=0, qa_per_author=4)  # 52 rows in `full`; forget10 = one author (4 rows)
    model, tok = tiny_causal_lm("llama", texts=qa_corpus(dd["full"]), vocab_size=300, hidden_size=32, num_layers=2)
    model = finetune(model, tok, dd["full"], num_epochs=25, learning_rate=1e-2, batch_size=16, max_length=48).model
    f0 = mean_answer_nll(model, tok, dd["forget10"], max_length=48)
    r0 = mean_answer_nll(model, tok, dd["retain90"], max_length=48)
    # Tiny setting: D has 7 batches of 8 and F one, so I_F / I_D <= ~7 even for entries only F uses; the official
    # alpha = 10 selects nothing here (the method logs this), alpha = 5 is below that bound.
    res = hf_unlearn.unlearn(
        model, dd["forget10"], dd["retain90"], method="ssd", tokenizer=tok, full_dataset=dd["full"], alpha=5.0,
        batch_size=8, max_length=48, use_cache=False,
    )  # fmt: skip
    f1 = mean_answer_nll(model, tok, dd["forget10"], max_length=48)
    r1 = mean_answer_nll(model, tok, dd["retain90"], max_length=48)
    assert res.details["alpha_bound"] == pytest.approx(7.0)
    assert 0 < res.details["dampened_fraction"] < 0.2
    assert f1 - f0 > 0.3  # forget answers became much less likely
    assert f1 - f0 > 3 * (r1 - r0)  # while retain NLL moved much less
    assert math.isfinite(r1), (f0, f1, r0, r1)


def test_targeted_hash_scope_covers_only_the_adapter(tmp_path):
    from peft import get_peft_model

    from hf_unlearn.training.lora import make_lora_config

    base, tok = _tiny()
    model = get_peft_model(base, make_lora_config(base, {"r": 2, "lora_alpha": 4}))
    kw = dict(target="adapter", cache_hash="targeted")
    assert _request(copy.deepcopy(model), tok, tmp_path, **kw).details["cache"] == "miss"
    base_changed = copy.deepcopy(model)
    with torch.no_grad():
        base_changed.base_model.model.model.norm.weight[0] += 1.0
    # documented trade-off: a changed base under an unchanged adapter is not detected with cache_hash="targeted"
    assert _request(copy.deepcopy(base_changed), tok, tmp_path, **kw).details["cache"] == "hit"
    assert _request(copy.deepcopy(base_changed), tok, tmp_path, target="adapter").details["cache"] == "miss"
    adapter_changed = copy.deepcopy(model)
    with torch.no_grad():
        next(p for n, p in adapter_changed.named_parameters() if "lora_A" in n)[0, 0] += 1.0
    assert _request(adapter_changed, tok, tmp_path, **kw).details["cache"] == "stale-recomputed"


# ----------------------------------------------------------------------------------------------------------------
# sharded importance: 2 CPU processes equal 1
# ----------------------------------------------------------------------------------------------------------------
TWO_PROC = """
import json, sys
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
import hf_unlearn
from hf_unlearn.methods.ssd import SSD, SSDConfig, compute_importance
from hf_unlearn.methods.ssd.method import process_state

d = sys.argv[1]
qa = json.load(open(d + "/qa.json"))
model = AutoModelForCausalLM.from_pretrained(d + "/model").eval()
tok = AutoTokenizer.from_pretrained(d + "/model")
state = process_state()
calls = []
hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
stats = {}
maps = compute_importance(model, SSD(SSDConfig(batch_size=4, max_length=40)).loader(Dataset.from_list(qa), tok),
                          stats=stats)
hook.remove()
res = hf_unlearn.unlearn(model, qa[12:], method="ssd", tokenizer=tok, full_dataset=qa, alpha=2.0, batch_size=4,
                         max_length=40, cache_dir=d + "/cache")
r = state.process_index
torch.save({"maps": maps, "model": model.state_dict()}, f"{d}/rank{r}.pt")
json.dump({"num_processes": state.num_processes, "forwards": len(calls), "stats": stats, "cache": res.details["cache"],
           "full": res.details["importance_full_batches"], "forget": res.details["importance_forget_batches"]},
          open(f"{d}/rank{r}.json", "w"))
"""


def test_importance_sharded_over_two_processes_equals_one(tmp_path):
    import json
    import os
    import subprocess
    import sys
    import textwrap

    qa = QA + [
        {"uid": f"q{16 + i}", "question": f"Which code does agent {n} use?", "answer": f"Agent {n} uses code {c}."}
        for i, (n, c) in enumerate([("Quin", "onyx"), ("Ray", "opal")])
    ]
    model, tok = _tiny()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    (tmp_path / "two.py").write_text(textwrap.dedent(TWO_PROC))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        cmd + [str(tmp_path / "two.py"), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    outs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # 18 examples / batch 4 = 5 batches: rank 0 runs batches 0, 2, 4 and rank 1 batches 1, 3, each one forward
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert [r["forwards"] for r in ranks] == [3, 2]
    assert [r["stats"]["batches_local"] for r in ranks] == [3, 2] and ranks[0]["stats"]["count"] == 5
    assert [r["full"]["batches_local"] for r in ranks] == [3, 2]  # the I_D pass inside unlearn is sharded too
    assert [r["forget"]["batches_local"] for r in ranks] == [1, 1]  # F: 6 examples = 2 batches
    assert [r["cache"] for r in ranks] == ["miss", "miss"]

    # the single-process reference on the same weights and batches
    reloaded = type(model).from_pretrained(tmp_path / "model").eval()
    stats = {}
    one = compute_importance(reloaded, SSD(SSDConfig(batch_size=4, max_length=40)).loader(Dataset.from_list(qa), tok),
                             stats=stats)  # fmt: skip
    assert stats == {"batches_local": 5, "batches_total": 5, "count": 5, "num_processes": 1}
    for name, ref in one.items():
        _assert_same({name: outs[0]["maps"][name]}, {name: outs[1]["maps"][name]})  # every rank holds the same maps
        torch.testing.assert_close(outs[0]["maps"][name], ref, rtol=1e-5, atol=1e-9 * float(ref.abs().max()))
    # the I_D cache written by the 2-process run serves a 1-process request (process count is not part of the key)
    res = hf_unlearn.unlearn(
        reloaded, qa[12:], method="ssd", tokenizer=tok, full_dataset=qa, alpha=2.0, batch_size=4, max_length=40,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert res.details["cache"] == "hit"
    for name, p in reloaded.state_dict().items():
        torch.testing.assert_close(outs[0]["model"][name], p, rtol=1e-5, atol=1e-7)
