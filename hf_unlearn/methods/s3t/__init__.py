"""S3T: exact unlearning with sharded, sliced, sequence-aware LoRA training (arXiv 2406.16257)."""

from hf_unlearn.methods.s3t.config import S3TConfig
from hf_unlearn.methods.s3t.method import S3T
from hf_unlearn.methods.s3t.model import S3TEnsembleForCausalLM, S3TModel, assign_uid, stage_blocks, stage_seed
from hf_unlearn.methods.s3t.sequences import STRATEGIES, select_sequences
from hf_unlearn.methods.s3t.simulate import (
    capacity_curve,
    count_until_failure,
    plot_capacity,
    simulate_deletions,
    simulate_sisa,
)
from hf_unlearn.registry import register_method

register_method(S3T)

__all__ = [
    "S3T",
    "S3TConfig",
    "S3TEnsembleForCausalLM",
    "S3TModel",
    "STRATEGIES",
    "assign_uid",
    "capacity_curve",
    "count_until_failure",
    "plot_capacity",
    "select_sequences",
    "simulate_deletions",
    "simulate_sisa",
    "stage_blocks",
    "stage_seed",
]
