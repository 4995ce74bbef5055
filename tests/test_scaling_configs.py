"""The path to large models: the shipped FSDP / DeepSpeed accelerate configs are valid, and method configs (which ARE
TrainingArguments) take its features, e.g. gradient checkpointing, also through the legacy ``training_args``. No GPU,
no launch."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

import hf_unlearn
from hf_unlearn.config import UnlearnConfig

REPO = Path(__file__).resolve().parents[1]
ACC = REPO / "recipes" / "accelerate"


def _launch_args(name: str):
    """What ``accelerate launch --config_file recipes/accelerate/<name>.yaml x.py`` resolves the config to."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(ACC / f"{name}.yaml"), "x.py"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


@pytest.mark.parametrize("name", ["fsdp", "deepspeed_zero3"])
def test_large_model_configs_load_with_accelerates_own_classes(name, tmp_path, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no default config from elsewhere
    cfg = ClusterConfig.from_yaml_file(str(ACC / f"{name}.yaml"))  # rejects unknown top-level keys
    raw = yaml.safe_load((ACC / f"{name}.yaml").read_text())
    section = raw["fsdp_config"] if name == "fsdp" else raw["deepspeed_config"]
    dests = {a.dest for a in launch_command_parser()._actions}
    unknown = sorted(set(section) - dests)
    assert not unknown, f"{name}: keys accelerate launch does not know: {unknown}"
    assert cfg.distributed_type.value == ("FSDP" if name == "fsdp" else "DEEPSPEED")
    assert cfg.mixed_precision == "bf16" and cfg.num_machines == 1


def test_fsdp_config_builds_accelerates_fsdp_plugin(tmp_path, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    args, _ = _launch_args("fsdp")
    assert args.use_fsdp and not args.use_deepspeed
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()  # what the Trainer's Accelerator builds under this launch
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.cpu_ram_efficient_loading is True


def test_deepspeed_config_resolves_to_zero3_launch_env(tmp_path, monkeypatch):
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    args, defaults = _launch_args("deepspeed_zero3")
    assert args.use_deepspeed and not args.use_fsdp
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as `accelerate launch`
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"


def test_training_args_reach_the_trainer_gradient_checkpointing(qa_rows):
    """grad_diff with gradient checkpointing on (a TrainingArguments field of its config, or the legacy
    ``training_args`` dict): the Trainer turns it on, and the result equals the run without it (recomputing
    activations changes memory, not the math)."""
    from hf_unlearn.models import tiny_causal_lm

    model, tok = tiny_causal_lm("llama", texts=[r["question"] + r["answer"] for r in qa_rows], num_layers=2,
                                hidden_size=32, vocab_size=300)  # fmt: skip
    forget, retain = qa_rows[:4], qa_rows[4:12]
    kw = dict(method="grad_diff", tokenizer=tok, max_steps=2, batch_size=2, learning_rate=1e-2, max_length=48)

    plain = hf_unlearn.unlearn(copy.deepcopy(model), forget, retain, **kw)
    ckpt = hf_unlearn.unlearn(copy.deepcopy(model), forget, retain, gradient_checkpointing=True, **kw)
    legacy = hf_unlearn.unlearn(
        copy.deepcopy(model), forget, retain, training_args={"gradient_checkpointing": True}, **kw
    )
    assert ckpt.model.is_gradient_checkpointing and legacy.model.is_gradient_checkpointing
    assert not plain.model.is_gradient_checkpointing
    assert ckpt.config.gradient_checkpointing is True and ckpt.config.to_dict()["gradient_checkpointing"] is True
    assert legacy.config == ckpt.config
    a, b = plain.model.state_dict(), ckpt.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in model.state_dict().items())  # it trained


def test_training_args_errors_name_the_bad_field():
    with pytest.raises(KeyError, match="gradient_checkpointing"):
        UnlearnConfig(training_args={"gradient_checkpoint": True})
    with pytest.raises(ValueError, match="must be a dict"):
        UnlearnConfig(training_args=["gradient_checkpointing"])
    # the legacy dict now sets the config's own fields (every TrainingArguments field is one)
    assert UnlearnConfig(training_args={"learning_rate": 1e-3}).learning_rate == 1e-3
    assert UnlearnConfig(training_args={"optim": "adafactor"}).to_dict()["optim"] == "adafactor"
