"""Backward-compatible alias of :mod:`hf_unlearn.protocol` (the benchmark protocol, split into a package).

New code imports from ``hf_unlearn.protocol``; every name this module used to define is re-exported here.
"""

from hf_unlearn.protocol import *  # noqa: F403
from hf_unlearn.protocol import __all__  # noqa: F401
from hf_unlearn.protocol.runner import _evaluate_all, _short  # noqa: F401
