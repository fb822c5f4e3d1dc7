"""Methods registered by name. A new method is one new file in this package with ``@register``."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.methods.base import FederatedMethod

_METHODS: dict[str, type[FederatedMethod]] = {}
_LOADED = False


def register(cls: type[FederatedMethod]) -> type[FederatedMethod]:
    """Class decorator: make ``cls`` available as ``method.name = cls.name``."""
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    _METHODS[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import orchestrator.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "registry"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _LOADED = True


def available_methods() -> list[str]:
    """Names of every registered method."""
    _load_all()
    return sorted(_METHODS)


def method_class(name: str) -> type[FederatedMethod]:
    """The class registered as ``name``; a clear error listing the known names otherwise."""
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"method.name={name!r} is not a known method; choose one of {available_methods()}")
    return _METHODS[name]
