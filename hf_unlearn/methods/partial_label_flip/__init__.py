"""Label-flipping unlearning with layer-wise partial (top-rho) updates (arXiv 2403.07611, reconstructed)."""

from hf_unlearn.methods.partial_label_flip.method import (
    PartialLabelFlip,
    PartialLabelFlipConfig,
    derangement,
    flip_labels,
)
from hf_unlearn.registry import register_method

register_method(PartialLabelFlip)

__all__ = ["PartialLabelFlip", "PartialLabelFlipConfig", "derangement", "flip_labels"]
