"""SimNPO: reference-free, length-normalised Negative Preference Optimization with a margin."""

from hf_unlearn.methods.simnpo.method import SimNPO, SimNPOConfig, SimNPOTrainer, simnpo_loss
from hf_unlearn.registry import register_method

register_method(SimNPO)

__all__ = ["SimNPO", "SimNPOConfig", "SimNPOTrainer", "simnpo_loss"]
