"""hf_unlearn: make Hugging Face causal LMs forget specific training data.

The public API (everything else is importable from its sub-package):

    >>> import hf_unlearn
    >>> sorted(hf_unlearn.list_methods())[:2]
    ['grad_ascent', 'grad_diff']
"""

from hf_unlearn.api import build_config, unlearn
from hf_unlearn.benchmarks import build_fictitious_authors, load_muse, load_tofu
from hf_unlearn.certificate import certificate_markdown, make_certificate
from hf_unlearn.config import UnlearnConfig
from hf_unlearn.evaluation import evaluate_unlearning
from hf_unlearn.hub import push_to_hub, save_unlearned
from hf_unlearn.ledger import Ledger, apply_request, apply_unlearning
from hf_unlearn.methods.s3t import S3TConfig, S3TModel, simulate_deletions
from hf_unlearn.models import load_model, load_smollm2_offline, tiny_causal_lm, train_bpe_tokenizer
from hf_unlearn.registry import get_method, list_methods, register_method
from hf_unlearn.result import UnlearnResult
from hf_unlearn.training import FinetuneResult, finetune, pretrained_tiny_lm
from hf_unlearn.utils.hashing import weights_hash

__version__ = "0.1.0"

__all__ = [
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
