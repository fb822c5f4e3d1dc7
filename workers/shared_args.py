"""Resolve :class:`core.shared.SharedTensor` placeholders in a job's arguments, fetching each object once.

A worker keeps the tensors of the objects its last job used: the next job of the same round that names
the same objects (FLoRA's ``dW`` in every client start) gets the very same tensor objects without a fetch
or a copy, and :meth:`SharedArgs.fold_key` then lets the trainer skip re-folding weights it already holds
(:meth:`workers.local_training.LocalTrainer.restore_and_fold`). Objects no longer named are dropped, so
the cache holds at most one job's shared tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from core.shared import SharedTensor, iter_tensors, map_tensors


def _ray_get(handle: Any) -> Tensor:
    import ray

    return ray.get(handle)


class SharedArgs:
    """Per-worker cache of shared tensors; ``fetch(handle)`` gets one from the store (``ray.get``)."""

    def __init__(self, fetch: Callable[[Any], Tensor] = _ray_get):
        self.fetch = fetch
        self.cache: dict[str, Tensor] = {}
        self.fetches = 0

    def resolve(self, args: Any) -> Any:
        """``args`` with every placeholder replaced by its tensor (cached; others dropped)."""
        used: dict[str, Tensor] = {}

        def swap(x: Any) -> Any:
            if not isinstance(x, SharedTensor):
                return x
            if x.key not in used:
                if x.key in self.cache:
                    used[x.key] = self.cache[x.key]
                else:
                    used[x.key] = self.fetch(x.handle)
                    self.fetches += 1
            return used[x.key]

        out = map_tensors(args, swap)
        self.cache = used
        return out

    @staticmethod
    def fold_key(fold: Any) -> str | None:
        """A name for ``fold`` when every tensor in it is a shared object (``None`` otherwise or if empty).

        Two folds with the same key are the same tensors in the same places with the same scales, so weights
        folded for one are the weights of the other. Call it on the *unresolved* fold.
        """
        found = iter_tensors(fold)
        if not found or not all(isinstance(x, SharedTensor) for x in found):
            return None
        return repr(map_tensors(fold, lambda x: x.key))  # structure, scales and object keys
