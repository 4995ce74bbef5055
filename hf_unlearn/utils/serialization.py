"""JSON helpers shared by results, model cards, the ledger, certificates and hub metadata (one implementation each)."""

from __future__ import annotations

from typing import Any


def jsonable(v: Any) -> Any:
    """``v`` as JSON-able data: sets become sorted lists, tuples lists, dict keys strings, enums their value, and
    anything else that is not a str / int / float / bool / None its ``repr``.

    Example:
        >>> jsonable({"a": (1, 2), 3: {"y", "x"}, "f": float})
        {'a': [1, 2], '3': ['x', 'y'], 'f': "<class 'float'>"}
    """
    if isinstance(v, (set, frozenset)):
        return sorted(jsonable(x) for x in v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if hasattr(v, "value") and hasattr(v, "name") and not isinstance(v, (str, int, float)):  # Enum
        return v.value
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


def numbers_only(obj: Any) -> Any:
    """Keep the structure of ``obj`` but drop free text longer than an identifier (adapter names stay): what a
    deletion record may keep without storing any example's text.

    Example:
        >>> numbers_only({"steps": 3, "adapter": "s0_t1", "note": "the answer was Paris"})
        {'steps': 3, 'adapter': 's0_t1', 'note': '<text omitted>'}
    """
    if isinstance(obj, dict):
        return {str(k): numbers_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [numbers_only(v) for v in obj]
    if isinstance(obj, str) and (len(obj) > 64 or " " in obj):
        return "<text omitted>"
    return obj
