"""Gradient ascent with layer-wise partial (top-rho) updates (arXiv 2403.07611, reconstructed)."""

from hf_unlearn.methods.partial_grad_ascent.method import PartialGradAscent, PartialGradAscentConfig
from hf_unlearn.registry import register_method

register_method(PartialGradAscent)

__all__ = ["PartialGradAscent", "PartialGradAscentConfig"]
