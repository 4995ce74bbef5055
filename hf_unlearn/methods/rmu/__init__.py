"""RMU: representation misdirection (steer a layer's activations on forget data toward a scaled random vector)."""

from hf_unlearn.methods.rmu.method import (
    RMU,
    RMUConfig,
    RMUTrainer,
    random_control_vector,
    resolve_layers,
    rmu_activation_loss,
)
from hf_unlearn.registry import register_method

register_method(RMU)

__all__ = ["RMU", "RMUConfig", "RMUTrainer", "random_control_vector", "resolve_layers", "rmu_activation_loss"]
