"""Retraining from scratch on the retain set: the gold standard every approximate method is compared with."""

from hf_unlearn.methods.retrain.method import Retrain, RetrainConfig
from hf_unlearn.registry import register_method

register_method(Retrain)

__all__ = ["Retrain", "RetrainConfig"]
