"""Negative Preference Optimization (NPO) baseline."""

from hf_unlearn.methods.npo.method import NPO, NPOConfig, NPOTrainer
from hf_unlearn.registry import register_method

register_method(NPO)

__all__ = ["NPO", "NPOConfig", "NPOTrainer"]
