"""The benchmark protocol (shared/BENCHMARK.md) end to end, used by ``hf-unlearn demo`` and ``benchmarks/run.py``.

1. Build the embedded fictitious-authors benchmark.
2. Fine-tune the target on ``full`` (with every training-time recorder the chosen methods declare) and the gold
   model on the matching retain split, with the same recipe (:mod:`~hf_unlearn.protocol.context`).
3. Unlearn the forget split from a copy of the target with each method: one generic runner drives every registered
   method from what its class declares (:mod:`~hf_unlearn.protocol.runner`).
4. Evaluate every model and report quality (:mod:`~hf_unlearn.protocol.nll`, the evaluation suite) and cost
   (:mod:`~hf_unlearn.protocol.costs`), as JSON and markdown (:mod:`~hf_unlearn.protocol.markdown`).

Settings live in :mod:`~hf_unlearn.protocol.settings`. Nothing below this package imports it.

Example:
    >>> from hf_unlearn.protocol import SETTINGS, paired_splits
    >>> paired_splits(SETTINGS["test"].forget_split)
    ('retain90', 'holdout10')
"""

from hf_unlearn.benchmarks.corpus import qa_corpus, tokenizer_corpus
from hf_unlearn.protocol.context import Context, autocast_for, prepare, pretrained_base
from hf_unlearn.protocol.costs import forward_backward_seconds
from hf_unlearn.protocol.markdown import markdown_table
from hf_unlearn.protocol.nll import mean_answer_nll, nll_row
from hf_unlearn.protocol.runner import (
    CAL,
    NOCAL,
    RETRAINED,
    MethodRunner,
    bf16_option,
    builtin_runners,
    can_calibrate,
    evaluation_kwargs,
    method_config,
    method_runner,
    register_runner,
    retrained_row,
    run_protocol,
    run_uncalibrated,
    s3t_retrained,
    was_calibrated,
)
from hf_unlearn.protocol.settings import SETTINGS, Setting, paired_splits

__all__ = [
    "CAL",
    "NOCAL",
    "RETRAINED",
    "SETTINGS",
    "Context",
    "MethodRunner",
    "Setting",
    "autocast_for",
    "bf16_option",
    "builtin_runners",
    "can_calibrate",
    "evaluation_kwargs",
    "forward_backward_seconds",
    "markdown_table",
    "mean_answer_nll",
    "method_config",
    "method_runner",
    "nll_row",
    "paired_splits",
    "prepare",
    "pretrained_base",
    "qa_corpus",
    "register_runner",
    "retrained_row",
    "run_protocol",
    "run_uncalibrated",
    "s3t_retrained",
    "tokenizer_corpus",
    "was_calibrated",
]
