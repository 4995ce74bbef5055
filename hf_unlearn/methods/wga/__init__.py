"""WGA: weighted gradient ascent (per-token weights p(y_t)^beta), as in OpenUnlearning."""

from hf_unlearn.methods.wga.method import WGA, WGAConfig, WGATrainer, wga_loss
from hf_unlearn.registry import register_method

register_method(WGA)

__all__ = ["WGA", "WGAConfig", "WGATrainer", "wga_loss"]
