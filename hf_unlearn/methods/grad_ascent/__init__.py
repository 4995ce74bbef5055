"""Gradient ascent baseline: maximise the NLL of the forget set."""

from hf_unlearn.methods.grad_ascent.method import GradAscent, GradAscentConfig, GradAscentTrainer
from hf_unlearn.registry import register_method

register_method(GradAscent)

__all__ = ["GradAscent", "GradAscentConfig", "GradAscentTrainer"]
