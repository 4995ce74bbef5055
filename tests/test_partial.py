"""Layer-wise partial unlearning: amnesiac recorder/subtraction, top-rho gradient masks, label flipping."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import TrainerCallback

import hf_unlearn
from hf_unlearn.data import collator_for, load_examples, tokenize_any
from hf_unlearn.methods.partial import (
    AmnesiacRecorder,
    AmnesiacRecording,
    MissingRecordingError,
    PartialUpdateConfig,
    TopRhoGradMask,
    isolate_sensitive,
    run_partial,
    top_fraction_count,
    topk_flat_indices,
)
from hf_unlearn.methods.partial.recorder import canonical_uid
from hf_unlearn.methods.partial_amnesiac import PartialAmnesiacConfig
from hf_unlearn.methods.partial_label_flip import derangement, flip_labels
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.training import finetune

DATA = [
    {"uid": f"u{i}", "question": f"What is fact {i} of {n}?", "answer": f"{n} likes {c} number {i}."}
    for i, (n, c) in enumerate(
        zip(
            ["Ada", "Bo", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo"],
            ["red", "tea", "jazz", "rain", "owls", "figs", "snow", "kites", "moss", "salt"],
        )
    )
]


def tiny(arch: str = "llama"):
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in DATA]
    return tiny_causal_lm(arch, texts=texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, seed=0)


def state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def dense_steps(rec: AmnesiacRecording) -> list[dict[str, torch.Tensor]]:
    out = []
    for s in rec.steps:
        step = {}
        for name, (idx, val) in rec.load_step(s["step"]).items():
            assert idx is None
            step[name] = val.double()
        out.append(step)
    return out


def test_top_fraction_helpers():
    assert top_fraction_count(0.1, 30) == 3  # 0.1 * 30 = 3.0000000000000004 in floats
    assert top_fraction_count(0.1, 31) == 4
    assert top_fraction_count(1e-6, 10) == 1
    x = torch.tensor([0.5, -2.0, 2.0, 0.1, -2.0, 1.0])
    assert topk_flat_indices(x.abs(), 2).tolist() == [1, 2]  # three-way tie at 2.0: lowest indices win
    assert topk_flat_indices(x.abs(), 4).tolist() == [1, 2, 4, 5]
    assert topk_flat_indices(x.abs(), 6).tolist() == list(range(6))


def test_kappa1_subtracting_every_update_restores_start(tmp_path):
    model, tok = tiny()
    start = state(model)
    rec = AmnesiacRecorder(tmp_path / "rec", kappa=1.0, value_dtype="float32")
    # AdamW with weight decay and gradient accumulation: the recorded deltas include every optimizer effect
    ft = finetune(
        model,
        tok,
        DATA,
        num_epochs=2,
        batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=5e-3,
        weight_decay=0.1,
        callbacks=[rec],
    )
    recording = AmnesiacRecording(tmp_path / "rec")
    assert len(recording.steps) == ft.steps == 6  # 10 examples / (2 x 2) -> 3 steps per epoch
    # every step's uids come from all its gradient-accumulation micro-batches
    assert sorted(len(s["uids"]) for s in recording.steps) == [2, 2, 4, 4, 4, 4]
    trained = state(model)
    assert any(not torch.equal(start[n], trained[n]) for n in start)
    recording.apply(model, [s["step"] for s in recording.steps], compute_dtype=torch.float64)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), start[n], atol=1e-6, rtol=0)


def test_isolated_example_subtraction_touches_nothing_else(tmp_path):
    model, tok = tiny()
    start = state(model)
    ordered = isolate_sensitive(DATA, ["u3"], batch_size=2, mode="single", seed=1)
    rec = AmnesiacRecorder(tmp_path / "rec", kappa=1.0, value_dtype="float32")
    finetune(
        model,
        tok,
        ordered,
        num_epochs=2,
        batch_size=2,
        learning_rate=5e-3,
        callbacks=[rec],
        train_sampling_strategy="sequential",
    )
    recording = AmnesiacRecording(tmp_path / "rec")
    # the Trainer replays the pre-ordered blocks: each step's uids are exactly one block
    uids = [canonical_uid(u) for u in ordered["uid"]]
    assert uids.count("u3") == 2 and len(set(ordered["uid"])) == len(uids)  # fill copies get distinct uids
    blocks = [sorted(set(uids[i : i + 2])) for i in range(0, len(uids), 2)]
    assert [sorted(s["uids"]) for s in recording.steps] == blocks * 2
    u3_steps = recording.steps_for(["u3"])
    assert len(u3_steps) == 2 and all(recording._by_step[s]["uids"] == ["u3"] for s in u3_steps)

    res = hf_unlearn.unlearn(
        model, ["u3"], method="partial_amnesiac", tokenizer=tok, train_dataset=DATA, compute_dtype="float64"
    )
    assert res.details["steps_undone"] == 2
    assert res.details["retain_uids_sharing_batches"] == 0 and res.details["retain_slots_in_undone_steps"] == 0
    # result == start + every OTHER step's update: those entries are untouched by the subtraction
    deltas = dense_steps(recording)
    for n, p in model.named_parameters():
        expect = start[n].double() + sum(d[n] for i, d in enumerate(deltas, 1) if i not in u3_steps).view_as(p)
        torch.testing.assert_close(p.detach().double(), expect, atol=1e-6, rtol=0)


def test_kappa_below_one_stores_exact_topk_and_storage_matches(tmp_path):
    model, tok = tiny()
    dense = AmnesiacRecorder(tmp_path / "dense", kappa=1.0, value_dtype="float32")
    sparse32 = AmnesiacRecorder(tmp_path / "k32", kappa=0.1, value_dtype="float32")
    sparse16 = AmnesiacRecorder(tmp_path / "k16", kappa=0.25)  # default fp16 values
    finetune(model, tok, DATA, num_epochs=1, batch_size=4, learning_rate=5e-3, callbacks=[dense, sparse32, sparse16])
    rd, r32, r16 = (AmnesiacRecording(tmp_path / d) for d in ("dense", "k32", "k16"))
    shapes = {n: math.prod(s) for n, s in rd.meta["params"].items()}
    assert len(rd.steps) == len(r32.steps) == 3
    for s in rd.steps:
        full = {n: v for n, (_, v) in rd.load_step(s["step"]).items()}
        part = r32.load_step(s["step"])
        for name, numel in shapes.items():
            idx, val = part[name]
            k = math.ceil(0.1 * numel)
            assert idx.numel() == k
            # independent reference: stable sort by descending magnitude, then lowest index
            ref = torch.sort(torch.argsort(-full[name].abs(), stable=True)[:k]).values
            assert torch.equal(idx, ref)
            assert torch.equal(val, full[name][idx])
            kth = full[name].abs()[idx].min()
            outside = torch.ones(numel, dtype=torch.bool)
            outside[idx] = False
            assert bool((full[name].abs()[outside] <= kth).all())
    # storage: int32 index + fp16 value per kept entry, ceil(kappa * numel) per tensor and step
    per_step = sum(math.ceil(0.25 * n) for n in shapes.values())
    assert r16.storage_bytes == sparse16.stats()["bytes"] == 3 * per_step * (4 + 2)
    assert sum(s["entries"] for s in r16.steps) == 3 * per_step
    assert rd.storage_bytes == 3 * sum(shapes.values()) * 4  # dense fp32, no indices
    on_disk = sum(f.stat().st_size for f in (tmp_path / "k16").glob("step_*.safetensors"))
    assert r16.storage_bytes <= on_disk < r16.storage_bytes + 3 * 16 * 1024  # small headers only
    assert json.loads((tmp_path / "k16" / "meta.json").read_text())["finished"] is True


class ChangeCounter(TrainerCallback):
    """Counts, per optimizer step and tensor, the entries the step changed and the entries whose grad survived."""

    def __init__(self):
        self.records = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.before = {n: p.detach().clone() for n, p in self.params.items()}
        self.nonzero = {n: p.grad.ne(0) for n, p in self.params.items() if p.grad is not None}

    def on_step_end(self, args, state, control, model=None, **kw):
        self.records.append({n: (p.detach().ne(self.before[n]), self.nonzero.get(n)) for n, p in self.params.items()})


@pytest.mark.parametrize("mode,optimizer", [("restore", "adamw"), ("grad_only", "sgd")])
def test_top_rho_mask_updates_exactly_expected_entries(mode, optimizer):
    model, tok = tiny()
    cfg = PartialUpdateConfig(
        rho=0.1,
        mask_mode=mode,
        optimizer=optimizer,
        max_steps=3,
        batch_size=4,
        learning_rate=1e-2,
        weight_decay=0.1 if optimizer == "adamw" else 0.0,
    )
    counter = ChangeCounter()
    forget = load_examples(DATA[:8])
    _, info = run_partial(model, tok, forget, None, cfg, forget_sign=-1.0, callbacks=[counter])
    assert info["masked_steps"] == 3 and len(counter.records) == 3
    checked = 0
    for rec in counter.records:
        for name, (changed, nonzero) in rec.items():
            k = top_fraction_count(0.1, changed.numel())
            assert int(nonzero.sum()) <= k  # the mask left at most k gradient entries
            assert not bool((changed & ~nonzero).any()), name  # nothing outside the mask moved
            if int(nonzero.sum()) == k:
                assert int(changed.sum()) == k, name  # and every selected entry did
                checked += 1
    assert checked >= 3 * 10  # most tensors have >= k non-zero gradient entries


def test_grad_only_with_adamw_weight_decay_moves_masked_entries():
    """Why mask_mode='restore' exists: AdamW's decoupled weight decay moves entries whose gradient was masked."""
    model, tok = tiny()
    cfg = PartialUpdateConfig(
        rho=0.1, mask_mode="grad_only", max_steps=1, batch_size=4, learning_rate=1e-2, weight_decay=0.1
    )
    counter = ChangeCounter()
    run_partial(model, tok, load_examples(DATA[:4]), None, cfg, forget_sign=-1.0, callbacks=[counter])
    changed = sum(int(c.sum()) for c, _ in counter.records[0].values())
    selected = sum(int(nz.sum()) for _, nz in counter.records[0].values())
    assert changed > 2 * selected


def test_rho_one_is_naive_full_update():
    model, tok = tiny()
    cfg = PartialUpdateConfig(rho=1.0, max_steps=1, batch_size=4, learning_rate=1e-2)
    counter = ChangeCounter()
    _, info = run_partial(model, tok, load_examples(DATA[:4]), None, cfg, forget_sign=-1.0, callbacks=[counter])
    changed = sum(int(c.sum()) for c, _ in counter.records[0].values())
    nonzero = sum(int(nz.sum()) for _, nz in counter.records[0].values())
    total = sum(c.numel() for c, _ in counter.records[0].values())
    assert info["masked_steps"] == 0 and changed == nonzero > 0.5 * total


def test_lora_recording_holds_only_adapter_updates(tmp_path):
    model, tok = tiny()
    rec = AmnesiacRecorder(tmp_path / "rec", kappa=1.0, value_dtype="float32")
    ft = finetune(model, tok, DATA, lora={"r": 2}, num_epochs=1, batch_size=4, learning_rate=1e-2, callbacks=[rec])
    peft_model = ft.model
    recording = AmnesiacRecording(tmp_path / "rec")
    names = set(recording.meta["params"])
    assert names and all("lora_" in n for n in names)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert names == trainable
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)
    recording.apply(peft_model, [s["step"] for s in recording.steps], compute_dtype=torch.float64)
    assert all(float(p.detach().abs().max()) < 1e-6 for p in lora_b)  # back to peft's zero init of lora_B


def test_isolate_sensitive_group_blocks():
    ordered = isolate_sensitive(DATA, ["u1", "u4", "u7"], batch_size=4, mode="group", seed=3)
    uids = [canonical_uid(u) for u in ordered["uid"]]
    blocks = [uids[i : i + 4] for i in range(0, len(uids), 4)]
    sens = {"u1", "u4", "u7"}
    assert all(set(b) <= sens or not (set(b) & sens) for b in blocks)
    assert all(len(b) == 4 for b in blocks[:-1])
    assert sorted(set(uids)) == sorted(r["uid"] for r in DATA)
    with pytest.raises(KeyError, match="nope"):
        isolate_sensitive(DATA, ["nope"], batch_size=2)
    with pytest.raises(ValueError, match="mode"):
        isolate_sensitive(DATA, ["u1"], batch_size=2, mode="alone")


def test_partial_amnesiac_reports_shared_batches_and_retain_finetune(tmp_path):
    model, tok = tiny()
    rec = AmnesiacRecorder(tmp_path / "rec", kappa=0.1)
    finetune(model, tok, DATA, num_epochs=2, batch_size=4, learning_rate=5e-3, callbacks=[rec])
    before = state(model)
    # without the retain fine-tune: exactly theta - sum of the undone steps' stored (pruned, sparse) updates
    plain = hf_unlearn.unlearn(
        model,
        ["u0", "u5"],
        method="partial_amnesiac",
        tokenizer=tok,
        train_dataset=DATA,
        recording=rec,
        inplace=False,
    ).model
    recording = AmnesiacRecording(tmp_path / "rec")
    want = {n: v.double().flatten() for n, v in before.items()}
    for step in recording.steps_for(["u0", "u5"]):
        for name, (idx, val) in recording.load_step(step).items():
            want[name].index_add_(0, idx, -val.double())
    for n, p in plain.named_parameters():
        torch.testing.assert_close(p.detach().double().flatten(), want[n], atol=1e-6, rtol=0)
    res = hf_unlearn.unlearn(
        model,
        ["u0", "u5"],
        method="partial_amnesiac",
        tokenizer=tok,
        train_dataset=DATA,
        recording=rec,
        retain_finetune_steps=2,
        learning_rate=1e-3,
        batch_size=4,
    )
    d = res.details
    assert d["steps_undone"] == len(recording.steps_for(["u0", "u5"])) >= 2
    assert d["entries_undone"] == sum(recording._by_step[s]["entries"] for s in recording.steps_for(["u0", "u5"]))
    assert d["retain_uids_sharing_batches"] > 0 and 0 < d["retain_fraction_affected"] <= 1
    assert d["retain_finetune_steps"] == 2 and "retain_finetune" in res.timings
    plain_state = dict(plain.named_parameters())
    assert any(not torch.equal(plain_state[n], p) for n, p in model.named_parameters())  # the fine-tune ran


def test_errors(tmp_path):
    model, tok = tiny()
    with pytest.raises(MissingRecordingError, match="AmnesiacRecorder"):
        hf_unlearn.unlearn(model, ["u0"], method="partial_amnesiac", tokenizer=tok, train_dataset=DATA)
    with pytest.raises(MissingRecordingError, match="meta.json"):
        AmnesiacRecording(tmp_path / "empty")
    rec = AmnesiacRecorder(tmp_path / "rec", kappa=0.5)
    finetune(model, tok, DATA[:4], num_epochs=1, batch_size=2, callbacks=[rec])
    with pytest.raises(KeyError, match="ghost"):
        hf_unlearn.unlearn(
            model, [{"uid": "ghost", "question": "q?", "answer": "a."}], method="partial_amnesiac", tokenizer=tok
        )
    res = hf_unlearn.unlearn(
        model,
        [{"uid": "ghost", "question": "q?", "answer": "a."}],
        method="partial_amnesiac",
        tokenizer=tok,
        on_unknown="ignore",
    )
    assert res.details["steps_undone"] == 0 and res.details["forget_uids_unknown"] == 1
    with pytest.raises(ValueError, match="kappa"):
        AmnesiacRecorder(tmp_path / "x", kappa=0)
    with pytest.raises(ValueError, match="value_dtype"):
        AmnesiacRecorder(tmp_path / "x", value_dtype="int8")
    with pytest.raises(ValueError, match="rho"):
        PartialUpdateConfig(rho=1.5)
    with pytest.raises(ValueError, match="mask_mode"):
        PartialUpdateConfig(mask_mode="soft")
    with pytest.raises(ValueError, match="on_unknown"):
        PartialAmnesiacConfig(on_unknown="warn")
    with pytest.raises(ValueError, match="rho"):
        TopRhoGradMask(rho=0)


def test_label_flip_targets_and_method():
    perm = derangement(7, seed=2)
    assert sorted(perm) == list(range(7)) and all(perm[i] != i for i in range(7))
    assert perm == derangement(7, seed=2)
    with pytest.raises(ValueError, match="flip='random'"):
        derangement(1, seed=0)
    model, tok = tiny()
    forget = load_examples(DATA[:4])
    swapped = flip_labels(forget, tok, "swap", seed=0, max_length=64, template="plain")
    decoded = [tok.decode([t for t in row if t != -100]) for row in swapped["labels"]]
    own = [r["answer"] for r in DATA[:4]]
    assert all(own[i] not in decoded[i] for i in range(4))
    assert sorted(any(a in d for d in decoded) for a in own) == [True] * 4  # every answer reused once
    rnd = flip_labels(forget, tok, "random", seed=0, max_length=64, template="plain")
    orig = hf_unlearn.data.tokenize_any(forget, tok, max_length=64)
    for a, b in zip(rnd, orig):
        assert len(a["input_ids"]) == len(b["input_ids"])
        prompt = [j for j, lab in enumerate(b["labels"]) if lab == -100]
        assert [a["input_ids"][j] for j in prompt] == [b["input_ids"][j] for j in prompt]
        assert a["labels"] != b["labels"]
    before = state(model)
    res = hf_unlearn.unlearn(
        model,
        forget,
        method="partial_label_flip",
        tokenizer=tok,
        rho=0.1,
        max_steps=2,
        batch_size=4,
        learning_rate=1e-2,
        flip="random",
    )
    assert res.details["masked_steps"] == 2 and 0.09 < res.details["updated_fraction"] < 0.2
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_label_flip_update_is_descent_on_the_swapped_answers():
    """partial_label_flip really trains on the WRONG answers: with plain SGD, rho = 1 and no clipping, one step is
    exactly one descent step on the NLL of the forget questions paired with the deranged answers (reference built
    here from the permutation and the model's own ``labels=`` loss), not on their true answers."""
    rows = DATA[:4]
    lr = 1e-2
    model, tok = tiny()
    start = state(model)
    res = hf_unlearn.unlearn(
        model,
        load_examples(rows),
        method="partial_label_flip",
        tokenizer=tok,
        flip="swap",
        rho=1.0,
        optimizer="sgd",
        max_steps=1,
        batch_size=4,
        learning_rate=lr,
        max_grad_norm=0.0,
    )
    perm = derangement(len(rows), seed=0)  # the config's seed
    wrong = [{**r, "answer": rows[perm[i]]["answer"]} for i, r in enumerate(rows)]

    def grad_on(examples):
        ref, _ = tiny()
        batch = collator_for(tok)(list(tokenize_any(load_examples(examples), tok)))
        ref(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss.backward()
        return {n: p.grad for n, p in ref.named_parameters()}

    g_wrong, g_true = grad_on(wrong), grad_on(rows)
    for n, p in res.model.named_parameters():
        tol = 8 * torch.finfo(torch.float32).eps * float(start[n].abs().max()) + 1e-4 * lr * float(
            g_wrong[n].abs().max()
        )
        torch.testing.assert_close(p.detach() - start[n], -lr * g_wrong[n], atol=tol, rtol=1e-3)
    assert sum(float((g_wrong[n] - g_true[n]).abs().sum()) for n in g_wrong) > 0  # the targets really differ


def test_partial_grad_ascent_with_retain_term():
    """The retain term is really in the update: with plain SGD and no clipping, the update with alpha=1 minus the
    update with alpha=0 is exactly one SGD descent step on the retain batch's token-mean NLL (computed here with the
    model's own ``labels=`` loss), and the forget-only update is one ascent step on the forget batch's NLL."""
    forget, retain = load_examples(DATA[:2]), load_examples(DATA[2:4])
    lr = 1e-2
    kw = dict(
        tokenizer=tok_of_tiny(),
        rho=1.0,
        optimizer="sgd",
        max_steps=1,
        batch_size=2,
        learning_rate=lr,
        max_grad_norm=0.0,
    )

    def delta(alpha):
        model, _ = tiny()
        start = state(model)
        res = hf_unlearn.unlearn(model, forget, retain=retain, method="partial_grad_ascent", alpha=alpha, **kw)
        ulp = {n: 4 * torch.finfo(torch.float32).eps * float(v.abs().max()) for n, v in start.items()}
        return {n: p.detach() - start[n] for n, p in res.model.named_parameters()}, res.details, ulp

    def reference_grad(rows):
        model, tok = tiny()
        batch = collator_for(tok)(list(tokenize_any(rows, tok)))
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        return {n: p.grad for n, p in model.named_parameters()}

    d0, info0, ulp = delta(0.0)
    d1, info1, _ = delta(1.0)
    g_forget, g_retain = reference_grad(forget), reference_grad(retain)
    assert info0["masked_steps"] == info1["masked_steps"] == 0 and info0["steps"] == info1["steps"] == 1
    for n in d0:
        tol = 2 * ulp[n] + 1e-4 * lr * float(g_retain[n].abs().max())  # float32 rounding of p + delta
        torch.testing.assert_close(d0[n], lr * g_forget[n], atol=tol, rtol=1e-3)  # ascent on F
        torch.testing.assert_close(d1[n] - d0[n], -lr * g_retain[n], atol=2 * tol, rtol=1e-3)  # descent on R
    assert sum(float((d1[n] - d0[n]).abs().sum()) for n in d0) > 0
    # with rho < 1 the mask applies to the combined (forget + retain) gradient
    model, tok = tiny()
    res = hf_unlearn.unlearn(
        model,
        ["u0", "u1"],
        method="partial_grad_ascent",
        tokenizer=tok,
        train_dataset=DATA,
        rho=0.2,
        alpha=1.0,
        max_steps=2,
        batch_size=2,
        learning_rate=1e-2,
    )
    assert res.details["masked_steps"] == 2 and res.details["rho"] == 0.2
    with pytest.raises(ValueError, match="retain"):
        hf_unlearn.unlearn(model, load_examples(DATA[:2]), method="partial_grad_ascent", tokenizer=tok, alpha=1.0)


def tok_of_tiny():
    return tiny()[1]


def test_topk_flat_indices_cpu_fast_path_is_exact():
    """The sampled-threshold CPU path selects exactly what plain topk + lowest-index ties selects."""
    from hf_unlearn.methods.partial.masks import top_fraction_count, topk_flat_indices

    def reference(flat, k):
        thr = torch.topk(flat, k, sorted=False).values.min()
        above = (flat > thr).nonzero().squeeze(1)
        ties = (flat == thr).nonzero().squeeze(1)[: k - above.numel()]
        return torch.cat([above, ties]).sort().values

    g = torch.Generator().manual_seed(0)
    for n in (8192, 50000):
        base = torch.randn(n, generator=g).abs()
        cases = {
            "random": base,
            "ascending": base.sort().values,  # the strided sample sees a skewed picture: the check must catch it
            "descending": base.sort(descending=True).values,
            "ties": (base * 3).round(),
            "constant": torch.ones(n),
        }
        for name, x in cases.items():
            for frac in (0.0001, 0.01, 0.1, 0.2):
                k = top_fraction_count(frac, n)
                assert torch.equal(topk_flat_indices(x, k), reference(x, k)), (n, name, frac)


def test_topk_flat_indices_numpy_selects_what_torch_selects():
    """The numpy selection (the recorder's writer thread) equals an independent stable-argsort reference."""
    import numpy as np

    from hf_unlearn.methods.partial.masks import topk_flat_indices_numpy

    def reference(flat, k):  # stable sort by descending value: ties keep the lower index first
        return torch.sort(torch.argsort(-flat, stable=True)[:k]).values

    g = torch.Generator().manual_seed(1)
    for n in (100, 8192, 50000):
        base = torch.randn(n, generator=g).abs()
        cases = {
            "random": base,
            "ascending": base.sort().values,
            "descending": base.sort(descending=True).values,
            "ties": (base * 3).round(),
            "constant": torch.ones(n),
        }
        for name, x in cases.items():
            for frac in (0.0001, 0.01, 0.1, 0.2, 0.5, 1.0):
                k = top_fraction_count(frac, n)
                got = topk_flat_indices_numpy(x.numpy(), k)
                assert got.dtype == np.int64
                assert torch.equal(torch.from_numpy(got), reference(x, k)), (n, name, frac)
                bits = x.numpy().view(np.int32)  # non-negative floats: the bit patterns order like the values
                assert torch.equal(torch.from_numpy(topk_flat_indices_numpy(bits, k)), reference(x, k))
    assert topk_flat_indices_numpy(np.zeros(5, dtype=np.int32), 0).size == 0


@pytest.mark.parametrize("kappa", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("value_dtype", ["float16", "float32"])
def test_amnesiac_host_selection_is_bitwise_the_torch_selection(tmp_path, kappa, value_dtype):
    """The writer's numpy path records exactly what the torch path (_select) records, down to the file bytes."""
    shapes = {"a": (128, 300), "b": (64,), "c": (3, 5000), "d": (7,)}
    rec = AmnesiacRecorder(tmp_path / "rec", kappa=kappa, value_dtype=value_dtype)
    rec._params = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in shapes.items()}
    numel = sum(math.prod(s) for s in shapes.values())
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(numel, generator=g) * 1e-3
    delta[::3] = (delta[::3] * 1e3).round() / 1e3  # many exact ties in magnitude, of both signs, at the threshold
    delta[1::11] = -delta[1::11]
    delta[2::13] = 0.0
    delta[3::17] = -0.0
    delta[4::19] = torch.randn(len(delta[4::19]), generator=g) * 1e-6  # float16 subnormals
    delta[5::23] = 7e4  # float16 overflow (inf), and the largest magnitudes
    delta[6::29] = float("inf")
    host = rec._select_host(delta)
    assert host is not None
    ref_tensors, ref_entries = rec._select(delta)
    tensors, entries = host
    assert entries == ref_entries and list(tensors) == list(ref_tensors)
    for key, ref in ref_tensors.items():
        got = torch.from_numpy(tensors[key])
        assert got.dtype == ref.dtype and got.shape == ref.shape, key
        assert torch.equal(got.view(torch.uint8), ref.contiguous().view(torch.uint8)), key  # bitwise
    from safetensors.numpy import save_file as save_np
    from safetensors.torch import save_file as save_pt

    save_np(tensors, str(tmp_path / "np.safetensors"))
    save_pt(ref_tensors, str(tmp_path / "pt.safetensors"))
    assert (tmp_path / "np.safetensors").read_bytes() == (tmp_path / "pt.safetensors").read_bytes()
    # a NaN (whose place in the order torch.topk defines) and non-float32 updates go to the torch path
    if kappa < 1:
        nan = delta.clone()
        nan[10] = float("nan")
        assert rec._select_host(nan) is None
    assert rec._select_host(delta.double()) is None
