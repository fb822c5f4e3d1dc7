"""Methods registered by name. A new method is one new file in this package with ``@register``."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from core.validation import check_choice

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
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in ("base", "registry"):
            importlib.import_module(f"{__package__}.{info.name}")
    _LOADED = True


def available_methods() -> list[str]:
    """Names of every registered method."""
    _load_all()
    return sorted(_METHODS)


def check_method_name(name: object) -> None:
    """The one check of ``method.name``: a ValueError naming the field and the registered methods."""
    try:
        check_choice("method.name", name, tuple(available_methods()))
    except ValueError as err:
        raise ValueError(f"{err} (a method of your own: list its file under `plugins:` in the run or sweep "
                         "YAML, or pass --plugin FILE)") from None


def method_class(name: str) -> type[FederatedMethod]:
    """The class registered as ``name``; a clear error listing the known names otherwise."""
    check_method_name(name)
    return _METHODS[name]
