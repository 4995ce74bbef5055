"""Registry, configs, the unlearn() dispatcher's input checks."""

import pytest
import torch

import hf_unlearn
from hf_unlearn.config import UnlearnConfig
from hf_unlearn.registry import get_method, list_methods, register_method

BASELINES = {"retrain", "grad_ascent", "grad_diff", "npo"}


def test_list_methods_contains_baselines():
    assert BASELINES <= set(list_methods())


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_method("forget_everything")
    msg = str(err.value)
    assert "forget_everything" in msg
    for name in list_methods():
        assert name in msg


def test_register_rejects_bad_names_and_conflicts():
    with pytest.raises(ValueError, match="lower-case"):
        register_method("Bad Name", UnlearnConfig, object)

    class Other:
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_method("grad_ascent", UnlearnConfig, Other)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"num_epochs": -1}, "num_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"template": "fancy"}, "template"),
        ({"max_steps": 0}, "max_steps"),
        ({"warmup_ratio": 2.0}, "warmup_ratio"),
    ],
)
def test_config_out_of_range_names_the_field(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        UnlearnConfig(**kwargs)


def test_method_config_validation():
    cfg_cls = get_method("npo").config_cls
    with pytest.raises(ValueError, match="beta"):
        cfg_cls(beta=0)
    with pytest.raises(ValueError, match="retain_loss"):
        get_method("grad_diff").config_cls(retain_loss="mse")


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(KeyError, match="lerning_rate"):
        UnlearnConfig.from_dict({"lerning_rate": 1e-3})
    assert UnlearnConfig.from_dict({"num_epochs": 2}).num_epochs == 2


def test_build_config_routes_kwargs():
    cfg, rest = hf_unlearn.build_config("npo", beta=0.2, base_model="x")
    assert cfg.beta == 0.2 and rest == {"base_model": "x"}
    with pytest.raises(TypeError, match="NPOConfig"):
        hf_unlearn.build_config("npo", get_method("grad_diff").config_cls())


def test_unlearn_rejects_wrong_model_type(qa_rows):
    with pytest.raises(TypeError, match="causal LM"):
        hf_unlearn.unlearn(object(), qa_rows[:2], method="grad_ascent", tokenizer=object())


def test_unlearn_input_errors(tiny_llama_trained, qa_rows):
    model, tok = tiny_llama_trained
    with pytest.raises(KeyError, match="unknown uid"):
        hf_unlearn.unlearn(model, ["nope"], method="grad_ascent", tokenizer=tok, train_dataset=qa_rows)
    with pytest.raises(ValueError, match="empty"):
        hf_unlearn.unlearn(model, [], method="grad_ascent", tokenizer=tok, train_dataset=qa_rows)
    with pytest.raises(ValueError, match="train_dataset"):
        hf_unlearn.unlearn(model, ["u000"], method="grad_ascent", tokenizer=tok)
    with pytest.raises(ValueError, match="retain"):
        hf_unlearn.unlearn(model, qa_rows[:2], method="grad_diff", tokenizer=tok)
    with pytest.raises(ValueError, match="tokenizer"):
        hf_unlearn.unlearn(model, qa_rows[:2], method="grad_ascent")


# ------------------------------------------------------------------------------------------------ unknown options
def _trains(method: str) -> bool:
    return "learning_rate" in get_method(method).config_cls.option_names()


@pytest.mark.parametrize("method", list_methods())
def test_misspelled_option_is_an_error_for_every_method(method, tiny_llama_trained, qa_rows):
    model, tok = tiny_llama_trained
    # a method that trains nothing (SSD) has no learning_rate: its closest option to a typo of max_length
    typo, right = ("learnig_rate", "learning_rate") if _trains(method) else ("max_lenght", "max_length")
    with pytest.raises(KeyError) as err:  # before any work: the model is untouched
        hf_unlearn.unlearn(model, qa_rows[:2], method=method, tokenizer=tok, **{typo: 1e-3})
    msg = str(err.value)
    assert "unknown option for method" in msg and f"'{typo}' (did you mean '{right}'?)" in msg
    assert not msg.startswith("'")  # the plain message, not a KeyError repr


def test_config_from_dict_suggests_the_closest_name():
    with pytest.raises(KeyError, match=r"'lerning_rate' \(did you mean 'learning_rate'\?\)"):
        UnlearnConfig.from_dict({"lerning_rate": 1e-3})


# ------------------------------------------------------------------------------------------------ divergence guard
def _tiny(qa_texts):
    return hf_unlearn.tiny_causal_lm("llama", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=1)


@pytest.mark.parametrize("method", ["grad_ascent", "npo", "partial_grad_ascent"])
def test_exploding_weights_stop_every_training_method(method, qa_rows, qa_texts):
    from hf_unlearn.training.guard import DivergenceError

    model, tok = _tiny(qa_texts)
    with pytest.raises(DivergenceError) as err:  # lr=1e6 used to blow the weights up to ~1e6, unnoticed
        hf_unlearn.unlearn(model, ["u001", "u002"], method=method, tokenizer=tok, train_dataset=qa_rows,
                           learning_rate=1e6, num_epochs=2)  # fmt: skip
    assert err.value.step == 1 and err.value.what == "weights"
    assert "diverged at step 1" in str(err.value) and "max_weight_growth=100" in str(err.value)
    assert "not saved" in str(err.value)


def test_non_finite_training_is_stopped_in_finetune(qa_rows, qa_texts):
    from hf_unlearn.training.guard import DivergenceError

    model, tok = _tiny(qa_texts)
    with pytest.raises(DivergenceError) as err:  # lr=1e30 used to give all-NaN weights, a finite loss and rc 0
        hf_unlearn.finetune(model, tok, qa_rows, num_epochs=3, learning_rate=1e30, max_weight_growth=0)
    # step 1 moves the weights to ~1e30 (finite: the growth check is off); step 2's loss is NaN
    assert (err.value.what, err.value.step) == ("loss", 2)
    assert "training diverged at step 2: the loss is nan" in str(err.value)


def test_guard_rollback_restores_the_last_finite_weights(qa_rows, qa_texts):
    from hf_unlearn.training.guard import DivergenceError, DivergenceGuard

    model, tok = _tiny(qa_texts)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(DivergenceError, match="rolled back to step 0"):
        hf_unlearn.finetune(model, tok, qa_rows, num_epochs=1, learning_rate=1e6,
                            callbacks=[DivergenceGuard(rollback=True)])  # fmt: skip
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


def test_retrain_free_methods_are_checked_after_they_ran(qa_rows, qa_texts):
    """A method without a training loop (SSD, embedding_ga, partial_amnesiac...) is checked by unlearn() itself."""
    from hf_unlearn import registry
    from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
    from hf_unlearn.training.guard import DivergenceError

    class Corrupting(UnlearningMethod):
        def unlearn(self, model, tokenizer, forget, retain=None, **kwargs):
            with torch.no_grad():
                next(model.parameters())[0, 0] = float("nan")
            return MethodOutput(model=model)

    register_method("test_corrupting", UnlearnConfig, Corrupting)
    try:
        model, tok = _tiny(qa_texts)
        with pytest.raises(DivergenceError, match="diverged in test_corrupting: 1 non-finite value"):
            hf_unlearn.unlearn(model, qa_rows[:2], method="test_corrupting", tokenizer=tok)
    finally:
        registry._REGISTRY.pop("test_corrupting", None)


def test_check_weights_growth_is_relative_to_the_start():
    from hf_unlearn.training.guard import DivergenceError, check_weights, weight_norm

    m = torch.nn.Linear(4, 4)
    start = weight_norm(m)
    with torch.no_grad():
        m.weight.mul_(50.0)
    check_weights(m, start_norm=start, max_weight_growth=100.0)  # 50x < 100x: fine
    with pytest.raises(DivergenceError, match="grew from"):
        check_weights(m, start_norm=start, max_weight_growth=10.0)
    check_weights(m, start_norm=start, max_weight_growth=0)  # growth check off: finite is enough
    with torch.no_grad():
        m.weight.mul_(1e30)  # huge but finite: the norm is computed without overflow
    with pytest.raises(DivergenceError, match="grew from"):
        check_weights(m, start_norm=start)


# ------------------------------------------------------------------------------------------------ tokenizer leak
def test_saving_a_locally_trained_tokenizer_warns(tmp_path, qa_rows, qa_texts, caplog):
    from transformers import AutoTokenizer

    from hf_unlearn.hub import warn_if_local_tokenizer
    from hf_unlearn.models import LOCAL_TOKENIZER_MARK

    model, tok = _tiny(qa_texts)
    res = hf_unlearn.unlearn(model, ["u001"], method="grad_ascent", tokenizer=tok, train_dataset=qa_rows, max_steps=1)
    with caplog.at_level("WARNING", logger="hf_unlearn"):
        hf_unlearn.save_unlearned(res, tmp_path / "out")
    assert "tokenizer that hf_unlearn trained on local text" in caplog.text and "forget-set words" in caplog.text
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "out")  # the mark survives a save / load round trip
    assert reloaded.init_kwargs.get(LOCAL_TOKENIZER_MARK) is True
    reloaded.init_kwargs.pop(LOCAL_TOKENIZER_MARK)
    assert warn_if_local_tokenizer(reloaded, tmp_path) is False  # e.g. a pretrained Hub tokenizer: no warning


def test_guard_stops_on_non_finite_gradients():
    from transformers import TrainerState

    from hf_unlearn.training.guard import DivergenceError, DivergenceGuard

    m = torch.nn.Linear(3, 2)
    m.weight.grad = torch.zeros_like(m.weight)
    guard = DivergenceGuard()
    guard.on_pre_optimizer_step(None, TrainerState(global_step=4), None, model=m)  # finite: nothing happens
    m.weight.grad[0, 1] = float("inf")
    with pytest.raises(DivergenceError, match="at step 5: 1 non-finite gradient value") as err:
        guard.on_pre_optimizer_step(None, TrainerState(global_step=4), None, model=m)
    assert err.value.what == "gradients"


def test_lora_finetune_is_a_function_of_its_seed_not_of_earlier_rng_use(qa_rows, qa_texts):
    """LoRA adapters are initialised from ``seed``: two fine-tunes with the same seed are identical even when the
    global RNG was used differently before (a benchmark fine-tunes each gold model after other methods ran)."""
    import torch

    from hf_unlearn.models import tiny_causal_lm
    from hf_unlearn.training import finetune

    def run(consume: int):
        base, tok = tiny_causal_lm("llama", texts=qa_texts, num_layers=2, hidden_size=16, vocab_size=200, seed=0)
        torch.manual_seed(consume)
        torch.rand(1000)  # earlier, unrelated use of the global RNG
        res = finetune(base, tok, qa_rows[:8], num_epochs=1, batch_size=4, seed=3, lora={"r": 4, "lora_alpha": 8})
        return {k: v.detach().clone() for k, v in res.model.state_dict().items() if "lora_" in k}

    a, b = run(1), run(2)
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
