"""``embedding_ga``: first-epoch gradient ascent on the embedding layer (Zagardo, arXiv 2406.09391; reconstructed).

Record per-example input-embedding gradients during fine-tuning with :class:`EmbeddingGradientRecorder`, then
unlearn with ``hf_unlearn.unlearn(..., method="embedding_ga")``. See docs/methods/embedding_ga.md.
"""

from hf_unlearn.methods.embedding_ga.config import EmbeddingGAConfig
from hf_unlearn.methods.embedding_ga.influence import activation_scores, lissa_inverse_hvp, lissa_scores
from hf_unlearn.methods.embedding_ga.method import EmbeddingGA, fuzzy_match, mean_nll, untie_embeddings
from hf_unlearn.methods.embedding_ga.recorder import (
    EmbeddingGradientRecorder,
    EmbeddingGradientStore,
    MissingRecordingError,
)
from hf_unlearn.registry import register_method

register_method(EmbeddingGA)

__all__ = [
    "EmbeddingGA",
    "EmbeddingGAConfig",
    "EmbeddingGradientRecorder",
    "EmbeddingGradientStore",
    "MissingRecordingError",
    "activation_scores",
    "fuzzy_match",
    "lissa_inverse_hvp",
    "lissa_scores",
    "mean_nll",
    "untie_embeddings",
]
