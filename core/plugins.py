"""User code that registers methods: the ``plugins`` of a run config, imported once in every process.

A plugin is a Python file (``examples/custom_method/my_method.py``; any entry ending in ``.py`` or holding a
path separator) or an importable module name (``mylab.methods``). Importing it runs its ``@register``
decorators, so a method defined in it is a valid ``method.name``. Every process that resolves method
names imports the run's plugins first: the command line and a sweep trial when they build the
:class:`~orchestrator.config.RunConfig` (which validates ``method.name``), and the Driver actor before it
builds the method. A file is imported under a module name derived from its resolved path, and a plugin
already imported in a process is not imported again (``sys.modules``), so registering happens once.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

FIELD = "plugins"


def is_file_plugin(entry: str) -> bool:
    """A file path (``*.py`` or holding a path separator) rather than a module name."""
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def resolve_plugin(entry: str, base: Path | None = None) -> str:
    """A file plugin as an absolute path (relative ones against ``base``, default the cwd); a module name as is."""
    if not is_file_plugin(entry):
        return entry
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return str(path.resolve())


def check_plugins(plugins: object, field: str = FIELD) -> tuple[str, ...]:
    """``plugins`` as a tuple of non-empty strings; a ValueError naming ``field`` otherwise."""
    if isinstance(plugins, str) or not isinstance(plugins, list | tuple):
        raise ValueError(f"{field}={plugins!r} must be a list of Python files or module names, "
                         "e.g. [examples/custom_method/my_method.py]")
    bad = [p for p in plugins if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"{field}: every entry must be a non-empty string (a .py file or a module name); bad: {bad}")
    return tuple(plugins)


def load_plugin(entry: str) -> ModuleType:
    """Import one plugin (file or module name) once per process; errors name the ``plugins`` entry."""
    if not is_file_plugin(entry):
        try:
            return importlib.import_module(entry)
        except ImportError as err:
            raise ValueError(f"{FIELD}: cannot import module {entry!r} ({err}); give a .py file path or a module "
                             "on the Python path") from err
    path = Path(resolve_plugin(entry))
    if not path.is_file():
        raise FileNotFoundError(f"{FIELD}: {entry!r} does not exist (resolved to {str(path)!r})")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"hetfedlora_plugin_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{FIELD}: {entry!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing it: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugins(plugins: Iterable[str]) -> list[ModuleType]:
    """Import every plugin in order (see :func:`load_plugin`)."""
    return [load_plugin(entry) for entry in plugins]
