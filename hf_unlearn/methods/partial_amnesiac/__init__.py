"""Partial amnesiac unlearning (arXiv 2403.07611, reconstructed): subtract recorded, layer-wise pruned updates."""

from hf_unlearn.methods.partial_amnesiac.method import (
    PartialAmnesiac,
    PartialAmnesiacConfig,
    resolve_recording,
)
from hf_unlearn.registry import register_method

register_method(PartialAmnesiac)

__all__ = ["PartialAmnesiac", "PartialAmnesiacConfig", "resolve_recording"]
