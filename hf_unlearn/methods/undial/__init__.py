"""UNDIAL: self-distillation toward the frozen model's logits with the target token's logit lowered by gamma."""

from hf_unlearn.methods.undial.method import UNDIAL, UNDIALConfig, UNDIALTrainer, undial_loss
from hf_unlearn.registry import register_method

register_method(UNDIAL)

__all__ = ["UNDIAL", "UNDIALConfig", "UNDIALTrainer", "undial_loss"]
