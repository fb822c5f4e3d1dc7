"""Tensors that several jobs share, shipped once: a placeholder type and a walker over job arguments.

A round's jobs often carry the *same* tensor object: FLoRA's dense fold ``dW`` is in every client's
ClientStart, the global deltas are in every evaluation shard's arguments, the global head is in every
start. Serialising each job's arguments separately would copy such a tensor once per job. The driver
instead puts it in the object store once (:mod:`orchestrator.broadcast`) and ships a
:class:`SharedTensor` placeholder in its place; a worker resolves placeholders from its own cache
(:mod:`workers.shared_args`), fetching each object once. Ray-free: the placeholder's ``handle`` is opaque
here (an ``ObjectRef`` in practice).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from torch import Tensor


@dataclasses.dataclass(frozen=True)
class SharedTensor:
    """Stands for a tensor held once in a shared store: ``handle`` fetches it, ``key`` names it uniquely."""

    handle: Any
    key: str
    nbytes: int


def map_tensors(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """``obj`` with every tensor or :class:`SharedTensor` ``x`` inside it replaced by ``fn(x)``.

    Walks dicts, lists, tuples and dataclass instances (rebuilt by a shallow copy with the fields set
    directly, so ``__post_init__`` shape checks never see a placeholder). Containers with nothing to
    replace are returned as they are (same object), everything else is untouched.
    """
    if isinstance(obj, Tensor | SharedTensor):
        return fn(obj)
    if isinstance(obj, dict):
        items = {k: map_tensors(v, fn) for k, v in obj.items()}
        return obj if all(items[k] is v for k, v in obj.items()) else type(obj)(items)
    if isinstance(obj, list | tuple):
        mapped = [map_tensors(v, fn) for v in obj]
        if all(a is b for a, b in zip(mapped, obj)):
            return obj
        return type(obj)(mapped)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            new = map_tensors(value, fn)
            if new is not value:
                changed[f.name] = new
        if not changed:
            return obj
        out = copy.copy(obj)
        for name, value in changed.items():
            object.__setattr__(out, name, value)
        return out
    return obj


def iter_tensors(obj: Any) -> list[Any]:
    """Every tensor and :class:`SharedTensor` inside ``obj``, in walk order (repeats included)."""
    found: list[Any] = []

    def visit(x: Any) -> Any:
        found.append(x)
        return x

    map_tensors(obj, visit)
    return found
