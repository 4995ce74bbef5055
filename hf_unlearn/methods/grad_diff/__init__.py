"""Gradient difference baseline: ascend on the forget set, descend (NLL) or stay close (KL) on the retain set."""

from hf_unlearn.methods.grad_diff.method import GradDiff, GradDiffConfig, GradDiffTrainer
from hf_unlearn.registry import register_method

register_method(GradDiff)

__all__ = ["GradDiff", "GradDiffConfig", "GradDiffTrainer"]
