"""The retain term has one implementation, ``UnlearnTrainer.retain_term`` (issue 16 item 4), used by every method
with a retain set."""

from __future__ import annotations

import inspect

import pytest
import torch

import hf_unlearn
from hf_unlearn.config import UnlearnConfig
from hf_unlearn.data import collator_for, load_examples, tokenize_any
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.registry import get_method
from hf_unlearn.training.losses import batch_nll
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs

#: the methods whose loss has a retain term (RMU's is an activation loss, not this one)
RETAIN_METHODS = ("grad_diff", "npo", "simnpo", "wga", "undial", "idk_dpo", "rum", "partial_grad_ascent")


def test_retain_term_is_the_nll_or_the_kl_to_the_reference(qa_rows, tmp_path):
    model, tok = tiny_causal_lm("llama", texts=[r["question"] + r["answer"] for r in qa_rows], num_layers=1,
                                hidden_size=16, vocab_size=200)  # fmt: skip
    rows = tokenize_any(load_examples(qa_rows[:3]), tok, max_length=32)
    batch = collator_for(tok)([rows[i] for i in range(3)])
    batch = {k: v for k, v in batch.items() if k != "uid"}
    trainer = UnlearnTrainer(model=model, args=UnlearnConfig().training_arguments(str(tmp_path / "o")))
    with torch.no_grad():
        expected = batch_nll(model(**model_inputs(batch)).logits, batch["labels"])
        assert torch.equal(trainer.retain_term(model, batch, "nll"), expected)
        assert torch.equal(trainer.retain_term(model, batch), expected)  # "nll" by default
        # the reference is a frozen copy of the same weights: the KL to it is exactly 0
        assert trainer.retain_term(model, batch, "kl").item() == 0.0
        next(model.parameters()).add_(0.05)
        assert trainer.retain_term(model, batch, "kl").item() > 0  # the copy stayed where it was
    with pytest.raises(ValueError, match="'nll' or 'kl', got 'mse'"):
        trainer.retain_term(model, batch, "mse")


@pytest.mark.parametrize("method", RETAIN_METHODS)
def test_retain_methods_use_the_shared_retain_term(method):
    """No method writes its own retain NLL / KL: the trainer module of each calls ``self.retain_term``."""
    assert method in hf_unlearn.list_methods()
    module = inspect.getmodule(get_method(method).method_cls)
    source = inspect.getsource(module)
    if method == "partial_grad_ascent":  # trains through the shared partial-update engine
        from hf_unlearn.methods.partial import engine

        source = inspect.getsource(engine)
    assert "self.retain_term(model, retain" in source, method
    assert "kl_to_reference(" not in source and "self.nll(model, retain)" not in source, method


@pytest.mark.parametrize(
    "method, fields",
    [
        ("grad_diff", {"retain_loss": "kl", "gamma": 0.5, "alpha": 2.0}),
        ("simnpo", {"beta": 3.0, "gamma": 0.5, "forget_weight": 0.7, "alpha": 2.0, "retain_loss": "none"}),
        ("undial", {"gamma": 4.0, "forget_weight": 0.7, "alpha": 2.0, "retain_loss": "nll"}),
        ("wga", {"beta": 3.0, "forget_weight": 0.7, "alpha": 2.0, "retain_loss": "kl"}),
    ],
)
def test_loss_methods_share_one_unlearn_glue(monkeypatch, method, fields):
    """The ``unlearn`` of these methods is the base class's: the method's trainer, its config, and the config fields
    it names as trainer arguments; the retain set is paired unless ``retain_loss == "none"``."""
    from hf_unlearn.methods.base import UnlearningMethod
    from hf_unlearn.training import engine

    calls = []
    monkeypatch.setattr(engine, "run_unlearning", lambda *a, **kw: calls.append((a, kw)) or ("out", {"tokens": 3}))
    spec = get_method(method)
    assert spec.method_cls.unlearn is UnlearningMethod.unlearn  # no copy of the glue in the method
    cfg = spec.config_cls(**fields)
    out = spec.method_cls(cfg).unlearn("model", "tok", "F", "R")
    ((args, kw),) = calls
    assert args == (spec.method_cls.trainer_cls, "model", "tok", "F", "R", cfg)
    assert kw == {"use_retain": fields["retain_loss"] != "none", **fields}
    assert (out.model, out.details, out.tokens_processed) == ("out", {"tokens": 3}, 3)
