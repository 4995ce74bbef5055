"""Calibrated early stopping (hf_unlearn.training.calibration): the stopping rule on scripted measurements, exact
rollback in a real Trainer run, config validation, and a 2-process accelerate run in which every rank stops at the
same step."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import TrainerControl, TrainerState

import hf_unlearn
from hf_unlearn.config import UnlearnConfig
from hf_unlearn.training import calibration as cal

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- hand-built stopping rule
class Scripted:
    """Stands in for evaluate_rows: returns the next scripted value for each evaluation set."""

    def __init__(self, forget, retain, holdout=None, forget_mkpp=None, holdout_mkpp=None):
        self.values = {"forget": list(forget), "retain": list(retain), "holdout": list(holdout or [])}
        self.mkpp = {"forget": list(forget_mkpp or []), "holdout": list(holdout_mkpp or [])}

    def __call__(self, model, rows, collator, *, batch_size=16, min_k=None):
        name = rows[0]["set"]
        value = self.values[name].pop(0)
        scores = None
        if min_k is not None:
            scores = torch.tensor(self.mkpp[name].pop(0), dtype=torch.float64).numpy()
        return torch.full((len(rows),), value, dtype=torch.float64).numpy(), scores


def drive(callback, model, max_steps):
    """Run the callback's events the way Trainer does, moving the parameters at every step."""
    state, control = TrainerState(max_steps=max_steps), TrainerControl()
    callback.on_train_begin(None, state, control, model=model)
    states = {0: {n: p.detach().clone() for n, p in model.named_parameters()}}
    for step in range(1, max_steps + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.125 * step)
        state.global_step = step
        states[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
        callback.on_step_end(None, state, control, model=model)
        if control.should_training_stop:
            break
    return callback.report(), states


def rows(name, n=2):
    return [{"input_ids": [1, 2, 3], "set": name} for _ in range(n)]


def make(criterion="nll", **kw):
    return cal.CalibrationCallback(
        forget=rows("forget"),
        retain=rows("retain"),
        holdout=rows("holdout", 3),
        collator=None,
        criterion=criterion,
        **kw,
    )


def test_stops_at_the_first_check_that_reaches_the_holdout_target(monkeypatch):
    # holdout NLL 2.0 is the target; forget NLL climbs 0.1 -> 0.8 -> 1.5 -> 2.1 -> 2.5; retain stays flat
    monkeypatch.setattr(cal, "evaluate_rows", Scripted([0.1, 0.8, 1.5, 2.1, 2.5], [0.3] * 5, [2.0]))
    model = torch.nn.Linear(2, 2)
    report, states = drive(make(), model, max_steps=10)
    assert report["target_nll"] == 2.0 and report["target_source"] == "holdout"
    assert (report["stop_reason"], report["stopped_at_step"], report["kept_step"]) == ("target_reached", 3, 3)
    assert all(torch.equal(p, states[3][n]) for n, p in model.named_parameters())
    assert [h["step"] for h in report["history"]] == [0, 1, 2, 3] and report["checks"] == 4


def test_retain_tolerance_restores_the_last_state_inside_it_exactly(monkeypatch):
    # retain NLL 0.30 at the start; +0.2 tolerance: step 2 (0.45) is inside, step 3 (0.55) is not
    monkeypatch.setattr(cal, "evaluate_rows", Scripted([0.1, 0.5, 0.9, 1.2], [0.30, 0.40, 0.45, 0.55], [5.0]))
    model = torch.nn.Linear(3, 2)
    report, states = drive(make(retain_tolerance=0.2), model, max_steps=10)
    assert (report["stop_reason"], report["stopped_at_step"], report["kept_step"]) == ("retain_tolerance", 3, 2)
    assert report["rolled_back_steps"] == 1
    for n, p in model.named_parameters():
        assert torch.equal(p, states[2][n]) and not torch.equal(p, states[3][n])


def test_eval_every_checks_every_kth_step_and_always_the_last(monkeypatch):
    monkeypatch.setattr(cal, "evaluate_rows", Scripted([0.1, 0.2, 0.3, 0.4], [0.3] * 4, [9.0]))
    report, _ = drive(make(eval_every=2), torch.nn.Linear(2, 2), max_steps=5)
    assert [h["step"] for h in report["history"]] == [0, 2, 4, 5]
    assert (report["stop_reason"], report["kept_step"]) == ("end", 5)


def test_non_finite_forget_nll_rolls_back(monkeypatch):
    monkeypatch.setattr(cal, "evaluate_rows", Scripted([0.1, 0.5, float("nan")], [0.3] * 3, [9.0]))
    model = torch.nn.Linear(2, 2)
    report, states = drive(make(retain_tolerance=None), model, max_steps=10)
    assert (report["stop_reason"], report["kept_step"]) == ("non_finite", 1)
    assert all(torch.equal(p, states[1][n]) for n, p in model.named_parameters())


def test_target_already_met_undoes_the_first_step(monkeypatch):
    monkeypatch.setattr(cal, "evaluate_rows", Scripted([3.0], [0.3], [2.0]))
    model = torch.nn.Linear(2, 2)
    report, states = drive(make(), model, max_steps=10)
    assert (report["stop_reason"], report["kept_step"]) == ("target_already_met", 0)
    assert all(torch.equal(p, states[0][n]) for n, p in model.named_parameters())


def test_membership_criterion_stops_when_the_auc_reaches_one_half(monkeypatch):
    # Min-K%++ scores (higher = looks like a non-member): forget starts below every holdout item (AUC 1), then mixes
    hold = [[1.0, 2.0, 3.0]] * 3
    forget = [[0.0, 0.5], [1.5, 1.5], [2.0, 2.0]]  # AUC 1.0, then 4/6 = 0.667, then 3/6 = 0.5
    monkeypatch.setattr(
        cal, "evaluate_rows", Scripted([0.1, 0.2, 0.3], [0.3] * 3, [2.0] * 4, forget_mkpp=forget, holdout_mkpp=hold)
    )
    report, _ = drive(make("mia", mia_epsilon=0.05, target_nll=1.0), torch.nn.Linear(2, 2), max_steps=10)
    assert report["mia_auc_before"] == 1.0
    assert [round(h["mia_auc"], 3) for h in report["history"]] == [1.0, 0.667, 0.5]
    assert (report["stop_reason"], report["kept_step"]) == ("mia_reached", 2)


def test_budget_rows_and_config_validation():
    data = [{"input_ids": [0] * n} for n in (5, 7, 9, 11)]
    picked = cal.budget_rows(data, 20, seed=1)
    assert sum(len(r["input_ids"]) for r in picked) <= 20 and picked == cal.budget_rows(data, 20, seed=1)
    assert len(cal.budget_rows(data, 1)) == 1  # always at least one row
    with pytest.raises(ValueError, match="calibration_criterion must be one of"):
        UnlearnConfig(calibration_criterion="auc")
    with pytest.raises(ValueError, match="eval_every"):
        UnlearnConfig(eval_every=0)
    with pytest.raises(ValueError, match="retain_tolerance"):
        UnlearnConfig(retain_tolerance=-1)
    with pytest.raises(ValueError, match="needs a holdout|holdout="):
        cal.CalibrationCallback(forget=rows("forget"), collator=None, criterion="mia")
    assert cal.build_calibration(UnlearnConfig(), None, data) is None  # no holdout, no target: behaviour unchanged


# ------------------------------------------------------------------------------------------- real Trainer runs
ROWS = [
    {"uid": f"u{i:03d}", "question": f"What is the secret code of item {i}?", "answer": f"Code K{i * 7 % 13}R{i}."}
    for i in range(24)
]


def ds(items):
    from datasets import Dataset

    return Dataset.from_list(items)


@pytest.fixture(scope="module")
def target():
    """A tiny Llama fine-tuned on ROWS[:18]; ROWS[18:] are never seen (the holdout)."""
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in ROWS]
    model, tok = hf_unlearn.tiny_causal_lm(
        "llama", texts=texts, vocab_size=400, hidden_size=48, num_layers=2, num_heads=4
    )
    return hf_unlearn.finetune(model, tok, ROWS[:18], num_epochs=40, learning_rate=5e-3, batch_size=8).model, tok


def test_rollback_in_a_trainer_run_equals_the_saved_in_tolerance_state(target):
    from transformers import TrainerCallback

    from hf_unlearn.methods.grad_ascent.method import GradAscentConfig, GradAscentTrainer
    from hf_unlearn.training.engine import run_unlearning

    class Saver(TrainerCallback):  # runs before the calibration callback at every step: the state after step k
        def __init__(self):
            self.states = {}

        def on_step_end(self, args, state, control, model=None, **kw):
            self.states[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    model, tok = copy.deepcopy(target[0]), target[1]
    saver = Saver()
    cfg = GradAscentConfig(learning_rate=2e-3, max_steps=40, batch_size=2, retain_tolerance=0.3, target_nll=50.0)
    model, info = run_unlearning(
        GradAscentTrainer, model, tok, ds(ROWS[:6]), ds(ROWS[6:18]), cfg, use_retain=False, callbacks=[saver]
    )
    c = info["calibration"]
    assert c["stop_reason"] == "retain_tolerance" and c["target_source"] == "target_nll"
    assert 1 <= c["kept_step"] < c["stopped_at_step"] == info["steps"]
    kept, broke = saver.states[c["kept_step"]], saver.states[c["stopped_at_step"]]
    for n, p in model.named_parameters():
        assert torch.equal(p, kept[n]), n  # bitwise the state saved at the last in-tolerance check
    assert any(not torch.equal(p, broke[n]) for n, p in model.named_parameters())
    inside = [h for h in c["history"] if h["step"] == c["kept_step"]][0]
    rise = [h["retain_nll"] - c["retain_nll_before"] for h in (inside, c["history"][-1])]
    assert rise[0] <= 0.3 < rise[1]


def test_unlearn_with_holdout_calibrates_and_the_card_says_where_it_stopped(target):
    from hf_unlearn.model_card import model_card_from_result

    model, tok = target
    kw = dict(tokenizer=tok, inplace=False, num_epochs=8, learning_rate=3e-3, batch_size=2)
    res = hf_unlearn.unlearn(model, ROWS[:6], ROWS[6:18], method="grad_diff", holdout=ROWS[18:], **kw)
    c = res.details["calibration"]
    assert c["target_source"] == "holdout" and c["stop_reason"] in ("target_reached", "retain_tolerance")
    assert res.details["steps"] < 24  # 8 epochs x 3 steps without calibration
    card = str(model_card_from_result(res, versions={}, date="2025-01-01"))
    assert "| Stopping rule | calibrated: forget NLL >=" in card and f"kept step {c['kept_step']}" in card
    plain = hf_unlearn.unlearn(model, ROWS[:6], ROWS[6:18], method="grad_diff", **kw)  # no holdout: unchanged
    assert "calibration" not in plain.details and plain.details["steps"] == 24
    assert "Stopping rule" not in str(model_card_from_result(plain, versions={}, date="2025-01-01"))
    off = hf_unlearn.unlearn(model, ROWS[:6], ROWS[6:18], method="grad_diff", holdout=ROWS[18:], calibrate=False, **kw)
    assert "calibration" not in off.details and off.details["steps"] == 24
    for a, b in zip(off.model.parameters(), plain.model.parameters()):
        assert torch.equal(a, b)  # calibrate=False with a holdout trains exactly like no holdout
    assert hf_unlearn.get_method("npo").config_cls().calibrate is False  # NPO: off unless asked (measured)
    assert hf_unlearn.get_method("rum").config_cls().calibrate is False
    for name in ("grad_ascent", "grad_diff", "partial_grad_ascent", "partial_label_flip"):
        assert hf_unlearn.get_method(name).config_cls().calibrate is True, name


# ------------------------------------------------------------------------------------------- 2 processes
SCRIPT = r"""
import json, os, sys, hashlib
import torch
import hf_unlearn
from hf_unlearn.training.engine import run_unlearning
from hf_unlearn.methods.grad_diff.method import GradDiffConfig, GradDiffTrainer
from datasets import Dataset
rows = [{"uid": f"u{i:03d}", "question": f"What is the secret code of item {i}?",
         "answer": f"The code is K{i * 7 % 13}R{i}."} for i in range(24)]
texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
model, tok = hf_unlearn.tiny_causal_lm("llama", texts=texts, vocab_size=300, hidden_size=32, num_layers=2,
                                       num_heads=4, seed=0)
model = hf_unlearn.finetune(model, tok, rows[:18], num_epochs=15, learning_rate=1e-2, batch_size=8).model
cfg = GradDiffConfig(learning_rate=3e-3, max_steps=30, batch_size=2, retain_tolerance=0.25)
model, info = run_unlearning(GradDiffTrainer, model, tok, Dataset.from_list(rows[:8]),
                             Dataset.from_list(rows[8:18]), cfg, holdout=rows[18:])
c = info["calibration"]
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
out = {k: c[k] for k in ("stop_reason", "stopped_at_step", "kept_step", "target_nll", "history")}
out.update(world=world, steps=info["steps"], digest=digest)
open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w").write(json.dumps(out))
"""


def test_two_process_run_stops_every_rank_at_the_same_step(tmp_path):
    script = tmp_path / "calib_ddp.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "HF_HOME": tempfile.mkdtemp(prefix="hf_home_"),  # no stale accelerate default config
        "ACCELERATE_USE_CPU": "1",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0", str(script)]
    proc = subprocess.run(cmd + [str(tmp_path)], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["stop_reason"] != "end" and r0["stopped_at_step"] < 30  # calibration, not the schedule, stopped it
    for key in ("stop_reason", "stopped_at_step", "kept_step", "steps", "target_nll", "history", "digest"):
        assert r0[key] == r1[key], key


# ------------------------------------------------------------------------------------------- harness
def test_harness_passes_the_holdout_and_runs_an_uncalibrated_variant(monkeypatch):
    from types import SimpleNamespace

    from hf_unlearn import api, pipeline

    calls = []
    monkeypatch.setattr(api, "unlearn", lambda *a, **kw: calls.append((a, kw)) or SimpleNamespace(details={}))
    bench = {"forget10": "F", "retain90": "R", "holdout10": "H"}
    setting = pipeline.Setting("x", method_overrides={"npo": {"beta": 0.2}})
    ctx = pipeline.Context(setting=setting, bench=bench, tokenizer="tok", base_model=None, target="model")
    runner = pipeline.builtin_runners()["npo"]
    runner.run(ctx)
    pipeline.run_uncalibrated(runner, ctx, "npo")
    pipeline.run_uncalibrated(runner, ctx, "npo", calibrate=True)
    (args, kw), (_, kw_nocal), (_, kw_cal) = calls
    assert kw_cal["calibrate"] is True and kw_cal["beta"] == 0.2 and kw_cal["holdout"] == "H"
    assert args[1:3] == ("F", "R") and kw["holdout"] == "H" and kw["beta"] == 0.2 and "calibrate" not in kw
    assert kw_nocal["calibrate"] is False and kw_nocal["beta"] == 0.2 and kw_nocal["holdout"] == "H"
    assert ctx.setting is setting and setting.method_overrides == {"npo": {"beta": 0.2}}  # restored, untouched
    assert pipeline.was_calibrated(SimpleNamespace(details={"calibration": {"kept_step": 3}}))
    assert pipeline.was_calibrated(SimpleNamespace(details={"groups": [{"calibration": None}, {"calibration": {}}]}))
    assert not pipeline.was_calibrated(SimpleNamespace(details={"steps": 3, "groups": [{"calibration": None}]}))


def test_calibration_variants_add_a_calibrated_npo_row_and_an_uncalibrated_ga_row():
    """NPO is uncalibrated by default, so the variants run it calibrated ("npo-cal"); grad_ascent is calibrated by
    default, so they run it without ("grad_ascent-nocal"). Each variant row must really differ in calibration."""
    from dataclasses import replace

    from hf_unlearn import pipeline

    s = replace(pipeline.SETTINGS["test"], name="variants", n_authors=20, qa_per_author=2, ft_epochs=2, hidden_size=32,
                calibration_variants=True)  # fmt: skip
    rep = pipeline.run_protocol(s, methods=["grad_ascent", "npo"], forget_splits=["forget10"], progress=False)
    assert list(rep["rows"]) == ["target", "gold (retrain)", "grad_ascent", "grad_ascent-nocal", "npo", "npo-cal"]
    res = rep["_results"]
    assert pipeline.was_calibrated(res["grad_ascent"]) and not pipeline.was_calibrated(res["grad_ascent-nocal"])
    assert pipeline.was_calibrated(res["npo-cal"]) and not pipeline.was_calibrated(res["npo"])
