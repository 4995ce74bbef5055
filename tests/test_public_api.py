"""The lean public API of ``hf_unlearn`` (issue 16): what a user needs, at the top; the rest in its module."""

import warnings

import pytest

import hf_unlearn

LEAN = {
    "unlearn": "hf_unlearn.api",
    "evaluate": "hf_unlearn.evaluation",
    "finetune": "hf_unlearn.training",
    "load_model": "hf_unlearn.models",
    "pretrained_tiny_lm": "hf_unlearn.training",
    "list_methods": "hf_unlearn.registry",
    "get_method": "hf_unlearn.registry",
    "UnlearnResult": "hf_unlearn.result",
    "FinetuneResult": "hf_unlearn.training",
}


@pytest.mark.parametrize("name", sorted(LEAN))
def test_the_public_api_is_at_the_top(name):
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation on the public names
        value = getattr(hf_unlearn, name)
    source = "evaluate_unlearning" if name == "evaluate" else name
    assert value is getattr(importlib.import_module(LEAN[name]), source)
    assert name in hf_unlearn.__all__ and name in dir(hf_unlearn)


def test_all_lists_only_what_resolves_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in hf_unlearn.__all__:
            getattr(hf_unlearn, name)
    # toy-model and benchmark builders, S3T internals and helpers are not part of it
    for moved in ("tiny_causal_lm", "build_fictitious_authors", "S3TModel", "weights_hash", "build_config"):
        assert moved not in hf_unlearn.__all__ and moved not in dir(hf_unlearn)


@pytest.mark.parametrize(
    "name, module",
    [("tiny_causal_lm", "hf_unlearn.models"), ("build_fictitious_authors", "hf_unlearn.benchmarks"),
     ("S3TModel", "hf_unlearn.methods.s3t"), ("evaluate_unlearning", "hf_unlearn.evaluation")],
)  # fmt: skip
def test_moved_names_still_import_with_a_deprecation_warning(name, module):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"import it from {module}"):
        value = getattr(hf_unlearn, name)
    assert value is getattr(importlib.import_module(module), name)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'unlearnn'"):
        hf_unlearn.unlearnn  # noqa: B018
