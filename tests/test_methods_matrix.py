"""Every registered method, end to end on the embedded benchmark, through the benchmark harness.

``benchmarks/run.py`` (the protocol of shared/BENCHMARK.md plus the cost accounting) runs once on the tiny ``test``
setting with two forget splits; every case reads its outputs. The matrix is parametrised over
``hf_unlearn.list_methods()``: a newly registered method without a benchmark runner fails here.
"""

import json
import math

import pytest

import hf_unlearn
from hf_unlearn.pipeline import builtin_runners, paired_splits

METHODS = hf_unlearn.list_methods()
SPLITS = ["forget05", "forget10"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, script):
    out = tmp_path_factory.mktemp("bench")
    harness = script("benchmarks/run.py")
    assert harness.main(["--setting", "test", "--splits", ",".join(SPLITS), "--out", str(out)]) == 0
    return json.loads((out / "test.json").read_text()), out


def test_every_registered_method_has_a_benchmark_runner():
    missing = set(METHODS) - set(builtin_runners())
    assert not missing, f"registered methods without a pipeline runner: {sorted(missing)}"


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("method", METHODS)
def test_method_row_is_finite_and_forgets(run, method, split):
    rows = run[0]["splits"][split]["rows"]
    row = rows[method]
    for key in ("forget_nll", "retain_nll", "holdout_nll", "unlearn_seconds"):
        assert math.isfinite(row[key]), (method, key, row[key])
    # every method moves the forget set away from the target's memorised state
    assert row["forget_nll"] > rows["target"]["forget_nll"], (method, row, rows["target"])


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("method", METHODS)
def test_method_evaluation_is_complete(run, method, split):
    ev = run[0]["splits"][split]["evaluation"][method]
    assert 0.0 <= ev["forget_quality"] <= 1.0
    assert 0.0 <= ev["model_utility"] <= 1.0
    for attack, vals in ev["mia"].items():
        assert 0.0 <= vals["auc"] <= 1.0, (method, attack)
        assert vals["privleak"] is None or math.isfinite(vals["privleak"]), (method, attack)
    cost = run[0]["costs"]["splits"][split]["methods"][method]
    assert cost["seconds"] > 0 and math.isfinite(cost["vs_retrain"]) and math.isfinite(cost["vs_forward_backward"])


def test_each_split_has_its_own_gold_model_and_data(run):
    report, _ = run
    n_full = report["finetune"]["n_full"]
    for split in SPLITS:
        entry = report["splits"][split]
        assert entry["n_forget"] + entry["n_retain"] == n_full
        assert report["finetune"]["gold_seconds_per_split"][split] > 0
        ev = entry["evaluation"]
        # the target memorised the forget set: its forget-set NLL is below the gold model's, which never saw it
        assert entry["rows"]["target"]["forget_nll"] < entry["rows"]["gold (retrain)"]["forget_nll"]
        assert ev["gold"]["forget_quality"] is None  # the reference itself is evaluated without one
        assert ev["target"]["forget_quality"] is not None
    assert paired_splits("forget05") == ("retain95", "holdout05")
    with pytest.raises(ValueError, match="not a forget split"):
        paired_splits("retain90")


def test_costs_and_artefacts(run, script):
    report, out = run
    costs = report["costs"]
    assert math.isfinite(costs["recording_overhead"]) and costs["recording_overhead"] > 0
    # methods that record at training time report what they stored
    for m in ("embedding_ga", "partial_amnesiac", "rum"):
        assert costs["recorded_bytes"][m] > 0, m
    # one S3T system, trained ahead of time, serves every split
    trained = {costs["splits"][s]["methods"]["s3t"]["training_s"] for s in SPLITS}
    assert len(trained) == 1
    for split in SPLITS:
        s3t = costs["splits"][split]["methods"]["s3t"]
        assert 0 < s3t["delete_s"] <= s3t["seconds"]  # the deletion latency, inside the request's wall time
    for name in ("costs.png", "scaling_forget.png"):
        assert (out / "test" / name).stat().st_size > 0, name
    summary = (out / "test.md").read_text()
    for split in SPLITS:
        assert (out / "test" / "eval" / split / "report.png").stat().st_size > 0
        assert f"## {split}" in summary and f"### {split}" in summary  # quality and cost sections
    # the markdown and plots are a function of the JSON alone
    (out / "test.md").unlink()
    assert script("benchmarks/run.py").main(["--from-json", str(out / "test.json"), "--out", str(out)]) == 0
    assert (out / "test.md").read_text() == summary


def test_scaling_against_training_set_size(tmp_path, script):
    mod = script("benchmarks/scaling.py")
    args = ["--setting", "test", "--sizes", "5,8", "--methods", "grad_ascent,s3t", "--epochs", "2"]
    result = mod.main([*args, "--out", str(tmp_path)])
    small, large = result["points"]
    assert small["n_full"] < large["n_full"] and small["n_forget"] == large["n_forget"]  # F fixed, D grows
    assert large["retrain_s"] > 0 and set(large["methods"]) == {"grad_ascent", "s3t"}
    for p in result["points"]:
        for m in p["methods"].values():
            assert m["seconds"] > 0 and math.isfinite(m["vs_retrain"])
    assert "training_s" in large["methods"]["s3t"]
    assert (tmp_path / "test" / "scaling_train.png").stat().st_size > 0
    assert "D = " in (tmp_path / "test" / "scaling_train.md").read_text()
