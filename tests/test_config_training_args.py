"""Configs the TRL way (issue 16 item 1): the config of every method that trains through a Trainer IS a
``transformers.TrainingArguments``; the short aliases stay; ``--set`` / recipe overrides are parsed by
``HfArgumentParser`` from the same dataclasses. The Trainer-side proof (gradient checkpointing really on during
unlearning) is ``tests/test_scaling_configs.py::test_training_args_reach_the_trainer_gradient_checkpointing``; the
2-process run of grad_diff configured through these fields is ``tests/test_multiproc.py`` (``-m multiproc``)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from transformers import HfArgumentParser, TrainingArguments

import hf_unlearn
from hf_unlearn.config import MethodConfig, TrainConfig, UnknownOptionError, UnlearnConfig
from hf_unlearn.registry import get_method

METHODS = hf_unlearn.list_methods()
#: Methods that run no Trainer: a small config without training fields.
NO_TRAINER = {"ssd"}


def test_aliases_are_accepted_everywhere_and_map_to_the_hf_fields():
    cfg = UnlearnConfig(num_epochs=2, batch_size=4, warmup_ratio=0.25)
    assert (cfg.num_train_epochs, cfg.per_device_train_batch_size, cfg.warmup_steps) == (2, 4, 0.25)
    assert (cfg.num_epochs, cfg.batch_size, cfg.warmup_ratio) == (2, 4, 0.25)  # read as properties
    cfg.num_epochs = 5  # and written
    assert cfg.num_train_epochs == 5
    assert UnlearnConfig.from_dict({"num_epochs": 2, "batch_size": 4}) == UnlearnConfig(
        num_train_epochs=2, per_device_train_batch_size=4
    )
    replaced = dataclasses.replace(cfg, batch_size=16)  # the alias wins over the field's old value
    assert (replaced.per_device_train_batch_size, replaced.num_train_epochs) == (16, 5)
    d = cfg.to_dict()
    assert d["num_train_epochs"] == 5 and "num_epochs" not in d and "batch_size" not in d
    # a record written before the change (old names, training_args) still loads
    old = {"num_epochs": 1, "batch_size": 2, "warmup_ratio": 0.0, "training_args": None, "learning_rate": 1e-3}
    assert UnlearnConfig.from_dict(old) == UnlearnConfig(num_train_epochs=1, per_device_train_batch_size=2,
                                                         learning_rate=1e-3)  # fmt: skip
    with pytest.raises(ValueError, match="warmup_ratio must be <= 1"):
        UnlearnConfig(warmup_ratio=2.0)


@pytest.mark.parametrize("method", METHODS)
def test_every_trainer_method_takes_any_training_arguments_field(method):
    cls = get_method(method).config_cls
    if method in NO_TRAINER:
        assert issubclass(cls, MethodConfig) and not issubclass(cls, TrainingArguments)
        names = set(cls.option_names())
        assert not names & {"learning_rate", "num_epochs", "num_train_epochs", "gradient_checkpointing", "bf16"}
        with pytest.raises(UnknownOptionError, match="learnig_rate"):
            cls.from_dict({"learnig_rate": 1e-3})
        return
    assert issubclass(cls, UnlearnConfig) and issubclass(cls, TrainingArguments)
    extra = dict(gradient_checkpointing=True, optim="adafactor", report_to="tensorboard", logging_first_step=True,
                 adam_beta2=0.95, gradient_checkpointing_kwargs={"use_reentrant": False})  # fmt: skip
    cfg = cls(**extra)
    args = cfg.training_arguments("/tmp/hf_unlearn_never_created")
    assert isinstance(args, TrainingArguments) and type(args) is cls
    assert args.activation_checkpointing is True and args.optim.value == "adafactor"
    assert args.report_to == ["tensorboard"] and args.logging_first_step and args.adam_beta2 == 0.95
    assert args.output_dir == "/tmp/hf_unlearn_never_created"
    for k, v in extra.items():
        assert cfg.to_dict()[k] == v, k
    assert cls.from_dict(json.loads(cfg.to_json())) == cfg  # JSON round trip, every field
    assert copy.deepcopy(cfg) == cfg


def test_config_creation_is_cheap_and_side_effect_free(tmp_path):
    out = tmp_path / "scratch"
    cfg = UnlearnConfig(output_dir=str(out), lr_scheduler_type=None)
    assert not out.exists()
    assert "_setup_devices" not in vars(cfg) and not hasattr(cfg, "distributed_state")  # no accelerator state
    before = cfg.to_dict()
    args = cfg.training_arguments()
    assert not out.exists()  # the Trainer creates what it needs, not the config
    assert args.output_dir == str(out) and args.lr_scheduler_type.value == "constant" and args.data_seed == cfg.seed
    assert cfg.to_dict() == before and cfg.lr_scheduler_type is None and cfg.report_to == "none"  # cfg unchanged
    assert UnlearnConfig(warmup_ratio=0.1).training_arguments("x").lr_scheduler_type.value == "linear"
    assert UnlearnConfig(lr_scheduler_type="cosine").training_arguments("x").lr_scheduler_type.value == "cosine"


def test_run_defaults_match_the_former_hand_built_arguments():
    """What run_unlearning used to build by hand (training/engine.py before issue 16)."""
    args = UnlearnConfig(learning_rate=1e-3, num_epochs=2, batch_size=4, seed=3).training_arguments("o")
    assert (args.num_train_epochs, args.per_device_train_batch_size, args.learning_rate, args.seed) == (2, 4, 1e-3, 3)
    assert args.data_seed == 3 and args.save_strategy.value == "no" and args.report_to == []
    assert args.remove_unused_columns is False and args.disable_tqdm is True and args.logging_steps == 10
    assert args.include_num_input_tokens_seen == "no" and args.max_grad_norm == 1.0 and args.warmup_steps == 0


def test_unknown_options_name_the_closest_valid_name():
    with pytest.raises(UnknownOptionError) as err:
        UnlearnConfig.from_dict({"gradient_checkpoint": True})
    msg = str(err.value)
    assert "did you mean 'gradient_checkpointing'?" in msg and "any transformers.TrainingArguments field" in msg
    assert len(msg) < 1200  # our options are listed, not the ~150 TrainingArguments fields
    with pytest.raises(UnknownOptionError, match="did you mean 'num_epochs'"):
        UnlearnConfig.parse_overrides({"num_epoch": "2"})
    from hf_unlearn.api import check_options

    with pytest.raises(KeyError, match="did you mean 'gradient_checkpointing'"):
        check_options("grad_diff", {"gradient_checkpoint": True})


def test_set_overrides_are_parsed_by_hfargumentparser_from_the_config_dataclass():
    cls = get_method("grad_diff").config_cls
    typed = cls.parse_overrides({
        "num_epochs": "2", "learning_rate": "1e-3", "bf16": "false", "gradient_checkpointing": "true",
        "target_nll": "null", "lora": "{r: 4, lora_alpha: 8}", "retain_loss": "kl", "optim": "sgd",
    })  # fmt: skip
    assert typed == {
        "num_train_epochs": 2.0, "learning_rate": 1e-3, "bf16": False, "gradient_checkpointing": True,
        "target_nll": None, "lora": {"r": 4, "lora_alpha": 8}, "retain_loss": "kl", "optim": "sgd",
    }  # fmt: skip
    # the same values from a YAML file (already typed) give the same config: --set and YAML cannot drift apart
    from_yaml = cls.from_dict({"num_epochs": 2, "learning_rate": 0.001, "bf16": False, "gradient_checkpointing": True,
                               "target_nll": None, "lora": {"r": 4, "lora_alpha": 8}, "retain_loss": "kl",
                               "optim": "sgd"})  # fmt: skip
    assert cls.from_dict(typed) == from_yaml
    with pytest.raises(ValueError, match="learning_rate must be a number, got 'fast'"):
        cls.parse_overrides({"learning_rate": "fast"})
    with pytest.raises(ValueError, match=r"optim must be one of \['adamw_torch', .*\], got 'adamw_foo'"):
        cls.parse_overrides({"optim": "adamw_foo"})
    # the plain HfArgumentParser accepts every method's config too (a TRL-style script can parse it directly)
    (cfg,) = HfArgumentParser(cls).parse_args_into_dataclasses(["--num_epochs", "3", "--gradient_checkpointing"])
    assert cfg.num_train_epochs == 3 and cfg.gradient_checkpointing is True


@pytest.mark.parametrize("method", METHODS)
def test_every_method_config_parses_overrides(method):
    cls = get_method(method).config_cls
    assert cls.parse_overrides({"seed": "7", "max_length": "64"}) == {"seed": 7, "max_length": 64}
    assert cls.from_dict(cls.parse_overrides({"seed": "7"})).seed == 7


def test_cli_set_types_config_fields_and_keeps_other_keys_as_json():
    from hf_unlearn.cli import _parse_sets

    cls = get_method("retrain").config_cls
    out = _parse_sets(["num_epochs=2", "report_to=none", "base_model=/m", "max_steps=3"], cls)
    assert out == {"num_train_epochs": 2.0, "report_to": "none", "base_model": "/m", "max_steps": 3}


def test_rum_groups_inherit_every_training_arguments_field():
    rum = get_method("rum")
    method = rum.method_cls(rum.config_cls(gradient_checkpointing=True, optim="sgd", num_epochs=2))
    group = method._group_config(0, 3, "neggrad_plus")
    assert group["gradient_checkpointing"] is True and group["optim"] == "sgd"
    assert rum.config_cls.from_dict({k: v for k, v in group.items() if k != "alpha"}).optim == "sgd"


def test_finetune_arguments_come_from_the_same_config_class():
    from hf_unlearn.training.finetune import training_arguments

    args = training_arguments("o", num_epochs=1, learning_rate=1e-3, batch_size=2, seed=5, optim="sgd")
    assert isinstance(args, TrainConfig) and args.optim.value == "sgd" and args.data_seed == 5
    assert args.include_num_input_tokens_seen == "non_padding" and args.lr_scheduler_type.value == "linear"
