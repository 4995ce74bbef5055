"""hf_unlearn: make Hugging Face causal LMs forget specific training data.

The public API (everything else is importable from its sub-package):

    >>> import hf_unlearn
    >>> sorted(hf_unlearn.list_methods())[:2]
    ['grad_ascent', 'grad_diff']
"""

import importlib
from typing import TYPE_CHECKING, Any

# The public API is imported lazily (PEP 562): ``import hf_unlearn`` and ``hf-unlearn --help`` stay fast, and torch,
# transformers and datasets load only when a name that needs them is first used.
_EXPORTS = {
    "build_config": "hf_unlearn.api",
    "unlearn": "hf_unlearn.api",
    "build_fictitious_authors": "hf_unlearn.benchmarks",
    "load_muse": "hf_unlearn.benchmarks",
    "load_tofu": "hf_unlearn.benchmarks",
    "certificate_markdown": "hf_unlearn.certificate",
    "make_certificate": "hf_unlearn.certificate",
    "UnlearnConfig": "hf_unlearn.config",
    "UnknownOptionError": "hf_unlearn.config",
    "evaluate_unlearning": "hf_unlearn.evaluation",
    "push_to_hub": "hf_unlearn.hub",
    "save_unlearned": "hf_unlearn.hub",
    "Ledger": "hf_unlearn.ledger",
    "apply_request": "hf_unlearn.ledger",
    "apply_unlearning": "hf_unlearn.ledger",
    "S3TConfig": "hf_unlearn.methods.s3t",
    "S3TModel": "hf_unlearn.methods.s3t",
    "simulate_deletions": "hf_unlearn.methods.s3t",
    "load_model": "hf_unlearn.models",
    "load_smollm2_offline": "hf_unlearn.models",
    "tiny_causal_lm": "hf_unlearn.models",
    "train_bpe_tokenizer": "hf_unlearn.models",
    "get_method": "hf_unlearn.registry",
    "list_methods": "hf_unlearn.registry",
    "register_method": "hf_unlearn.registry",
    "UnlearnResult": "hf_unlearn.result",
    "FinetuneResult": "hf_unlearn.training",
    "finetune": "hf_unlearn.training",
    "pretrained_tiny_lm": "hf_unlearn.training",
    "DivergenceError": "hf_unlearn.training.guard",
    "weights_hash": "hf_unlearn.utils.hashing",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_unlearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from hf_unlearn.api import build_config, unlearn  # noqa: F401
    from hf_unlearn.benchmarks import build_fictitious_authors, load_muse, load_tofu  # noqa: F401
    from hf_unlearn.certificate import certificate_markdown, make_certificate  # noqa: F401
    from hf_unlearn.config import UnknownOptionError, UnlearnConfig  # noqa: F401
    from hf_unlearn.evaluation import evaluate_unlearning  # noqa: F401
    from hf_unlearn.hub import push_to_hub, save_unlearned  # noqa: F401
    from hf_unlearn.ledger import Ledger, apply_request, apply_unlearning  # noqa: F401
    from hf_unlearn.methods.s3t import S3TConfig, S3TModel, simulate_deletions  # noqa: F401
    from hf_unlearn.models import load_model, load_smollm2_offline, tiny_causal_lm, train_bpe_tokenizer  # noqa: F401
    from hf_unlearn.registry import get_method, list_methods, register_method  # noqa: F401
    from hf_unlearn.result import UnlearnResult  # noqa: F401
    from hf_unlearn.training import FinetuneResult, finetune, pretrained_tiny_lm  # noqa: F401
    from hf_unlearn.training.guard import DivergenceError  # noqa: F401
    from hf_unlearn.utils.hashing import weights_hash  # noqa: F401

from hf_unlearn._version import __version__  # noqa: E402, F401

__all__ = [
    "DivergenceError",
    "UnknownOptionError",
    "Ledger",
    "apply_request",
    "apply_unlearning",
    "certificate_markdown",
    "make_certificate",
    "push_to_hub",
    "save_unlearned",
    "weights_hash",
    "FinetuneResult",
    "S3TConfig",
    "S3TModel",
    "simulate_deletions",
    "UnlearnConfig",
    "UnlearnResult",
    "build_config",
    "build_fictitious_authors",
    "evaluate_unlearning",
    "finetune",
    "get_method",
    "list_methods",
    "load_model",
    "load_muse",
    "load_tofu",
    "load_smollm2_offline",
    "pretrained_tiny_lm",
    "register_method",
    "tiny_causal_lm",
    "train_bpe_tokenizer",
    "unlearn",
]
