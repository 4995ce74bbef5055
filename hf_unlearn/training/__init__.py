"""Fine-tuning and the training machinery unlearning methods share."""

from hf_unlearn.training.calibration import CalibrationCallback, holdout_scope
from hf_unlearn.training.engine import ReferenceModel, precompute_sequence_nll, prepare_model, run_unlearning
from hf_unlearn.training.finetune import FinetuneResult, finetune, training_arguments
from hf_unlearn.training.guard import DivergenceError, DivergenceGuard, check_weights, weight_norm
from hf_unlearn.training.lora import make_lora_config
from hf_unlearn.training.losses import batch_nll, kl_to_reference, sequence_nll, token_logprobs
from hf_unlearn.training.pretrain import pretrained_tiny_lm
from hf_unlearn.training.trainer import UidTrainer, UnlearnTrainer, model_inputs

__all__ = [
    "DivergenceError",
    "DivergenceGuard",
    "check_weights",
    "weight_norm",
    "CalibrationCallback",
    "FinetuneResult",
    "ReferenceModel",
    "UidTrainer",
    "UnlearnTrainer",
    "batch_nll",
    "finetune",
    "holdout_scope",
    "kl_to_reference",
    "make_lora_config",
    "model_inputs",
    "precompute_sequence_nll",
    "pretrained_tiny_lm",
    "prepare_model",
    "run_unlearning",
    "sequence_nll",
    "token_logprobs",
    "training_arguments",
]
