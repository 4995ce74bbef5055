"""Registry of unlearning methods.

Each method lives in ``hf_unlearn/methods/<name>/`` and registers itself on import with
:func:`register_method`, which reads everything it needs from the method class: its name, config class, paper,
capabilities (needs a retain set, needs a recording, exact, uids only), the keyword arguments its ``unlearn`` takes,
and how the benchmark protocol runs it (defaults and hooks). :func:`get_method` and :func:`list_methods` import the
built-in methods lazily, so ``import hf_unlearn`` stays cheap.

Example:
    >>> import hf_unlearn
    >>> "grad_ascent" in hf_unlearn.list_methods()
    True
    >>> spec = hf_unlearn.get_method("npo")
    >>> spec.config_cls.__name__
    'NPOConfig'
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Any

_REGISTRY: dict[str, MethodSpec] = {}
_BUILTINS_LOADED = False


@dataclass(frozen=True)
class Paper:
    """The paper a method implements, for model cards and citations (``title=None``: no paper, e.g. retrain)."""

    title: str | None = None
    authors: str = ""
    arxiv: str = ""
    year: int | None = None
    venue: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, config dataclass and implementation class (which describes itself)."""

    name: str
    config_cls: type
    method_cls: type

    @property
    def exact(self) -> bool:
        """Whether the method gives an exact guarantee (its result equals retraining without the forget set)."""
        return bool(getattr(self.method_cls, "exact", False))

    @property
    def paper(self) -> str | None:
        """One-line citation of the method's paper."""
        return getattr(self.method_cls, "paper", None)

    @property
    def reference(self) -> Paper | None:
        """The paper's bibliographic record (title, authors, arXiv id, year, venue)."""
        return getattr(self.method_cls, "reference", None)

    @property
    def description(self) -> str | None:
        """The method paragraph of model cards."""
        return getattr(self.method_cls, "description", None) or None

    @property
    def needs_retain(self) -> bool:
        return bool(getattr(self.method_cls, "needs_retain", False))

    @property
    def needs_recording(self) -> bool:
        return bool(getattr(self.method_cls, "needs_recording", False))

    @property
    def uids_only(self) -> bool:
        return bool(getattr(self.method_cls, "uids_only", False))

    @property
    def unlearn_arguments(self) -> tuple[str, ...]:
        """Keyword arguments the method's ``unlearn`` takes besides the config (``base_model`` for retrain...)."""
        return tuple(getattr(self.method_cls, "unlearn_arguments", ()))

    @property
    def benchmark_defaults(self) -> dict[str, Any]:
        """Config overrides the benchmark protocol starts from (the tiny CPU settings)."""
        return dict(getattr(self.method_cls, "benchmark_defaults", {}))


def register_method(method_cls: type, config_cls: type | None = None, legacy_cls: type | None = None) -> type:
    """Register an unlearning method class; it carries its ``name`` and ``config_cls`` (and everything else).

    Args:
        method_cls: a subclass of :class:`hf_unlearn.methods.base.UnlearningMethod` with the class attributes
            ``name`` (lower-case registry key) and ``config_cls`` (a dataclass subclassing
            :class:`hf_unlearn.config.UnlearnConfig`). The old form ``register_method(name, config_cls,
            method_cls)`` still works (with a DeprecationWarning).

    Returns:
        ``method_cls``, so the function can be used as a class decorator.

    Raises:
        ValueError: a bad or missing name, a missing config class, or a name already registered to another class.

    Example:
        >>> from hf_unlearn.methods.grad_ascent import GradAscent
        >>> register_method(GradAscent) is GradAscent
        True
    """
    if isinstance(method_cls, str):  # the old form register_method(name, config_cls, method_cls)
        warnings.warn(
            "register_method(name, config_cls, method_cls) is deprecated: set `name` and `config_cls` on the class "
            "and call register_method(method_cls)",
            DeprecationWarning,
            stacklevel=2,
        )
        name, cfg_cls, cls = method_cls, config_cls, legacy_cls
    else:
        if config_cls is not None or legacy_cls is not None:
            raise TypeError("register_method(method_cls) takes the class only; it carries name and config_cls")
        cls = method_cls
        name = getattr(cls, "name", "")
        cfg_cls = getattr(cls, "config_cls", None)
        if cfg_cls is None:
            raise ValueError(f"{getattr(cls, '__qualname__', cls)!r} has no `config_cls` class attribute")
    if not isinstance(name, str) or not name or name != name.lower() or " " in name:
        raise ValueError(f"method name must be a non-empty lower-case identifier, got {name!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and (existing.method_cls is not cls or existing.config_cls is not cfg_cls):
        if (existing.method_cls.__qualname__, existing.method_cls.__module__) != (cls.__qualname__, cls.__module__):
            raise ValueError(f"method {name!r} is already registered to {existing.method_cls.__qualname__}")
    _REGISTRY[name] = MethodSpec(name=name, config_cls=cfg_cls, method_cls=cls)
    return cls


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("hf_unlearn.methods")


def get_method(name: str) -> MethodSpec:
    """Return the :class:`MethodSpec` registered under ``name``.

    Raises:
        ValueError: naming the unknown method and listing the valid names.
    """
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown unlearning method {name!r}; valid methods: {', '.join(list_methods())}")
    return _REGISTRY[name]


def list_methods() -> list[str]:
    """Names of every registered method, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def method_summary() -> list[dict[str, Any]]:
    """One row per method (name, exact, paper, config class) for docs and the CLI."""
    return [
        {
            "name": n,
            "exact": get_method(n).exact,
            "paper": get_method(n).paper,
            "config": get_method(n).config_cls.__name__,
        }
        for n in list_methods()
    ]
