"""hf_unlearn: make Hugging Face causal LMs forget specific training data.

The public API: what a user needs to fine-tune, unlearn, evaluate and save. Everything else lives in its module
(toy models: :mod:`hf_unlearn.models`; benchmarks: :mod:`hf_unlearn.benchmarks`; S3T: :mod:`hf_unlearn.methods.s3t`;
the benchmark protocol: :mod:`hf_unlearn.protocol`).

    >>> import hf_unlearn
    >>> sorted(hf_unlearn.list_methods())[:2]
    ['grad_ascent', 'grad_diff']
"""

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from hf_unlearn._version import __version__

# The public API is imported lazily (PEP 562): ``import hf_unlearn`` and ``hf-unlearn --help`` stay fast, and torch,
# transformers and datasets load only when a name that needs them is first used.
_EXPORTS = {
    "unlearn": ("hf_unlearn.api", "unlearn"),
    "evaluate": ("hf_unlearn.evaluation", "evaluate_unlearning"),
    "finetune": ("hf_unlearn.training", "finetune"),
    "load_model": ("hf_unlearn.models", "load_model"),
    "pretrained_tiny_lm": ("hf_unlearn.training", "pretrained_tiny_lm"),
    "list_methods": ("hf_unlearn.registry", "list_methods"),
    "get_method": ("hf_unlearn.registry", "get_method"),
    "register_method": ("hf_unlearn.registry", "register_method"),
    "UnlearnResult": ("hf_unlearn.result", "UnlearnResult"),
    "FinetuneResult": ("hf_unlearn.training", "FinetuneResult"),
    "save_unlearned": ("hf_unlearn.hub", "save_unlearned"),
    "push_to_hub": ("hf_unlearn.hub", "push_to_hub"),
    "Ledger": ("hf_unlearn.ledger", "Ledger"),
    "DivergenceError": ("hf_unlearn.training.guard", "DivergenceError"),
    "UnknownOptionError": ("hf_unlearn.config", "UnknownOptionError"),
}

# Former top-level names: still importable, with a DeprecationWarning naming their module.
_MOVED = {
    "build_config": "hf_unlearn.api",
    "build_fictitious_authors": "hf_unlearn.benchmarks",
    "load_muse": "hf_unlearn.benchmarks",
    "load_tofu": "hf_unlearn.benchmarks",
    "certificate_markdown": "hf_unlearn.certificate",
    "make_certificate": "hf_unlearn.certificate",
    "UnlearnConfig": "hf_unlearn.config",
    "evaluate_unlearning": "hf_unlearn.evaluation",
    "apply_request": "hf_unlearn.ledger",
    "apply_unlearning": "hf_unlearn.ledger",
    "S3TConfig": "hf_unlearn.methods.s3t",
    "S3TModel": "hf_unlearn.methods.s3t",
    "simulate_deletions": "hf_unlearn.methods.s3t",
    "load_smollm2_offline": "hf_unlearn.models",
    "tiny_causal_lm": "hf_unlearn.models",
    "train_bpe_tokenizer": "hf_unlearn.models",
    "weights_hash": "hf_unlearn.utils.hashing",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # cache: the next access is a plain attribute
        return value
    if name in _MOVED:
        warnings.warn(
            f"hf_unlearn.{name} is deprecated: import it from {_MOVED[name]} (from {_MOVED[name]} import {name})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'hf_unlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from hf_unlearn.api import unlearn  # noqa: F401
    from hf_unlearn.config import UnknownOptionError  # noqa: F401
    from hf_unlearn.evaluation import evaluate_unlearning as evaluate  # noqa: F401
    from hf_unlearn.hub import push_to_hub, save_unlearned  # noqa: F401
    from hf_unlearn.ledger import Ledger  # noqa: F401
    from hf_unlearn.models import load_model  # noqa: F401
    from hf_unlearn.registry import get_method, list_methods, register_method  # noqa: F401
    from hf_unlearn.result import UnlearnResult  # noqa: F401
    from hf_unlearn.training import FinetuneResult, finetune, pretrained_tiny_lm  # noqa: F401
    from hf_unlearn.training.guard import DivergenceError  # noqa: F401

__all__ = [
    "__version__",
    "DivergenceError",
    "FinetuneResult",
    "Ledger",
    "UnknownOptionError",
    "UnlearnResult",
    "evaluate",
    "finetune",
    "get_method",
    "list_methods",
    "load_model",
    "pretrained_tiny_lm",
    "push_to_hub",
    "register_method",
    "save_unlearned",
    "unlearn",
]
