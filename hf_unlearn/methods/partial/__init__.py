"""Shared helpers of layer-wise partial unlearning (Gogineni et al., arXiv 2403.07611): registers no method.

The registered methods live in ``partial_amnesiac``, ``partial_label_flip`` and ``partial_grad_ascent``.
"""

from hf_unlearn.methods.partial.engine import PartialTrainer, PartialUpdateConfig, run_partial
from hf_unlearn.methods.partial.masks import TopRhoGradMask, top_fraction_count, topk_flat_indices
from hf_unlearn.methods.partial.recorder import (
    AmnesiacRecorder,
    AmnesiacRecording,
    MissingRecordingError,
    isolate_sensitive,
)
from hf_unlearn.registry import Paper

PAPER = (
    "Gogineni & Nadimi, Efficient Knowledge Deletion from Trained Models through Layer-wise Partial Machine "
    "Unlearning (arXiv 2403.07611); reconstructed from the abstract"
)
REFERENCE = Paper(
    title="Efficient Knowledge Deletion from Trained Models through Layer-wise Partial Machine Unlearning",
    authors="Vinay Chakravarthi Gogineni and Esmaeil S. Nadimi",
    arxiv="2403.07611",
    year=2024,
    venue="arXiv",
)

__all__ = [
    "PAPER",
    "REFERENCE",
    "AmnesiacRecorder",
    "AmnesiacRecording",
    "MissingRecordingError",
    "PartialTrainer",
    "PartialUpdateConfig",
    "TopRhoGradMask",
    "isolate_sensitive",
    "run_partial",
    "top_fraction_count",
    "topk_flat_indices",
]
