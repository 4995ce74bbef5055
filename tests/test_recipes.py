"""recipes/run.py: YAML loading and overrides, shipped configs, and a 2-process CPU run matching 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import hf_unlearn

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


def test_recipe_loading_overrides_and_errors(tmp_path, script):
    run = script("recipes/run.py")
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump({"method": "npo", "finetune": {"batch_size": 8}, "method_config": {"beta": 0.1}}))
    r = run.load_recipe(cfg, ["--method_config.beta", "0.5", "--finetune.learning_rate=1e-4", "--output_dir", "x"])
    assert r["method_config"] == {"beta": 0.5} and r["finetune"]["learning_rate"] == 1e-4 and r["output_dir"] == "x"
    assert r["finetune"]["batch_size"] == 8 and r["finetune"]["max_length"] == 96  # defaults filled in
    assert r["push"] == {"repo_id": None, "private": True, "dry_run": True}
    with pytest.raises(KeyError, match="unknown recipe key"):
        run.load_recipe(cfg, ["--modle.arch", "gpt2"])
    with pytest.raises(KeyError, match="unknown finetune option"):
        run.load_recipe(cfg, ["--finetune.epochs", "3"])
    with pytest.raises(ValueError, match="no value"):
        run.load_recipe(cfg, ["--seed"])
    cfg.write_text(yaml.safe_dump({"model": {"arch": "gpt2"}}))
    with pytest.raises(ValueError, match="names no method"):
        run.load_recipe(cfg)
    assert (
        run.per_device(8, 4, 1) == (4, 2)
        and run.per_device(8, 4, 2) == (4, 1)
        and run.per_device(8, None, 2) == (4, 1)
    )
    with pytest.raises(ValueError, match="multiple of per_device_batch_size"):
        run.per_device(8, 3, 2)


@pytest.mark.parametrize("path", sorted((RECIPES / "baselines").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_baseline_recipes_load(path, script):
    run = script("recipes/run.py")
    r = run.load_recipe(path)
    assert r["method"] in hf_unlearn.list_methods()
    spec = hf_unlearn.get_method(r["method"])
    cfg = {k: v for k, v in r["method_config"].items() if k != "per_device_batch_size"}
    spec.config_cls.from_dict(cfg)  # every method_config key is a real config field with a valid value


def test_accelerate_configs_cover_single_multi_gpu_multi_cpu():
    cfgs = {p.stem: yaml.safe_load(p.read_text()) for p in (RECIPES / "accelerate").glob("*.yaml")}
    assert set(cfgs) == {"single", "multi_gpu", "multi_cpu", "fsdp", "deepspeed_zero3"}
    assert cfgs["single"]["num_processes"] == 1 and cfgs["single"]["distributed_type"] == "NO"
    assert cfgs["multi_cpu"]["num_processes"] == 2
    assert "ACCELERATE_USE_CPU=1" in (RECIPES / "accelerate" / "multi_cpu.yaml").read_text()


@pytest.mark.parametrize(
    "recipe_name, method",
    [("tiny_test", "grad_ascent"), ("idk_dpo_tiny_test", "idk_dpo")],
    ids=["grad_ascent", "idk_dpo"],
)
def test_two_process_cpu_run_matches_single_process(tmp_path, recipe_name, method):
    """1 process (gradient accumulation 2) and 2 gloo processes (accumulation 1) see the same global batches:
    the benchmark, the base model, the fine-tuned and the unlearned weights are bit-identical (idk_dpo: its refusal
    draws and its frozen reference too)."""
    env = {
        **os.environ,
        "HF_HOME": tempfile.mkdtemp(prefix="hf_home_"),  # no stale accelerate default config
        "ACCELERATE_USE_CPU": "1",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    recipe = str(RECIPES / "baselines" / f"{recipe_name}.yaml")
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    one = subprocess.Popen(
        [sys.executable, str(RECIPES / "run.py"), "--config", recipe, "--output_dir", str(tmp_path / "one")],
        env={k: v for k, v in env.items() if k != "ACCELERATE_USE_CPU"},
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    two = subprocess.Popen(
        [
            accelerate,
            "launch",
            "--config_file",
            str(RECIPES / "accelerate" / "multi_cpu.yaml"),
            str(RECIPES / "run.py"),
            "--config",
            recipe,
            "--output_dir",
            str(tmp_path / "two"),
        ],  # fmt: skip
        env=env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out_one, out_two = one.communicate(timeout=400)[0], two.communicate(timeout=400)[0]
    assert one.returncode == 0, out_one[-4000:]
    assert two.returncode == 0, out_two[-4000:]

    s1 = json.loads((tmp_path / "one" / "run_summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "run_summary.json").read_text())
    assert (s1["num_processes"], s1["gradient_accumulation_steps"]) == (1, 2)
    assert (s2["num_processes"], s2["gradient_accumulation_steps"]) == (2, 1)  # really two ranks
    ranks = [json.loads((tmp_path / "two" / f"hashes_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == s2["hashes"]  # DDP kept the replicas identical
    for key in ("data_sha256", "base_weights", "finetuned_weights", "unlearned_weights"):
        assert s1["hashes"][key] == s2["hashes"][key], key
    assert s1["hashes"]["finetuned_weights"] != s1["hashes"]["base_weights"] != s1["hashes"]["unlearned_weights"]

    # rank 0 saved a standard folder; the push dry run listed exactly its files
    model_dir = tmp_path / "two" / "model"
    meta = json.loads((model_dir / "hf_unlearn.json").read_text())
    assert meta["method"] == method and meta["forget_set"]["size"] == s2["n_forget"]
    assert s2["push"] == sorted(p.name for p in model_dir.iterdir())


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["--method_config.learnig_rate", "1e-3"], "'learnig_rate' (did you mean 'learning_rate'?)"),
        (["--method_config.learning_rate", "fast"], "learning_rate must be a number, got 'fast'"),
        (["--finetune.num_epochs", "[3]"], "finetune.num_epochs must be a number, got [3]"),
    ],
)
def test_recipe_errors_come_before_any_training(script, monkeypatch, capsys, override, fragment):
    run = script("recipes/run.py")

    def must_not_run(recipe):
        raise AssertionError("training started")

    monkeypatch.setattr(run, "run", must_not_run)
    with pytest.raises(SystemExit) as exc:
        run.main(["--config", str(RECIPES / "baselines" / "npo.yaml"), *override])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_run_recipe_passes_the_checks(path, script):
    run = script("recipes/run.py")
    if path.parent.name == "accelerate" or "record" in yaml.safe_load(path.read_text()):
        pytest.skip("not a recipes/run.py recipe")
    run.load_recipe(path)  # types, method name and method_config validated (as before a run)
