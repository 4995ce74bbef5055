"""Selective Synaptic Dampening (SSD, Foster et al. AAAI 2024): retrain-free unlearning by dampening the
parameters far more important to the forget set than to the whole training data."""

from __future__ import annotations

from hf_unlearn.methods.ssd.cache import ImportanceCache, weights_sha256
from hf_unlearn.methods.ssd.config import SSDConfig
from hf_unlearn.methods.ssd.method import (
    SSD,
    auto_alpha,
    compute_importance,
    dampen,
    label_free_loss,
    target_parameters,
)
from hf_unlearn.registry import register_method

register_method(SSD)


__all__ = [
    "SSD",
    "SSDConfig",
    "ImportanceCache",
    "auto_alpha",
    "compute_importance",
    "dampen",
    "label_free_loss",
    "target_parameters",
    "weights_sha256",
]
