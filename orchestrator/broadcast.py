"""Broadcast once: a tensor that several jobs of one call share crosses to the object store once.

:func:`share_tensors` looks at the arguments of a batch of jobs (a round's client starts, an
evaluation's shards). A tensor *object* that appears in the arguments of two or more jobs and is at least
``min_bytes`` large is put in the object store once (``put``, ``ray.put`` in the pool) and replaced in
every job by a :class:`core.shared.SharedTensor` placeholder; the workers resolve placeholders through a
per-worker cache (:mod:`workers.shared_args`), so each worker fetches each object once. Sharing is by
identity: methods that hand every client the same state tensor (FLoRA's ``dW``, the global head) and the
evaluation jobs (one ``deltas`` dict for all shards) are covered without any method knowing about it.
The values the workers see are the same tensors, so results are bitwise unchanged.

:class:`BroadcastStats` counts the tensor bytes the jobs' arguments carry inline and the bytes put once,
against the bytes that per-job serialisation would have copied. A tensor object that one job's arguments
hold twice (two client starts of a packed job sharing FLoRA's ``dW``) is serialised once in that job (pickle
keeps one copy of an object per call), so it counts once in ``inline``; ``per_job`` counts every occurrence,
i.e. the bytes of one job per client.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from core.shared import SharedTensor, iter_tensors, map_tensors
from core.wire import tensor_bytes

DEFAULT_MIN_BYTES = 64 * 1024
_LOCAL_KEYS = itertools.count()


@dataclass(frozen=True)
class BroadcastStats:
    """Tensor bytes of one batch of jobs: ``per_job`` without sharing, ``inline`` + ``shared`` with it.

    ``per_job`` counts each tensor once per place it appears (one job per client start); ``inline`` counts
    each tensor object once per job that carries it inline.
    """

    per_job: int
    inline: int
    shared: int
    objects: int

    @property
    def serialized(self) -> int:
        """Tensor bytes serialised with sharing: each job's inline tensors plus each shared object once."""
        return self.inline + self.shared


def share_tensors(jobs_args: Sequence[tuple], put: Callable[[Tensor], Any],
                  min_bytes: int | None = DEFAULT_MIN_BYTES) -> tuple[list[tuple], BroadcastStats]:
    """Replace tensors shared by >= 2 jobs (and >= ``min_bytes``) with placeholders put once.

    ``min_bytes=None`` shares nothing (every job keeps its arguments) and only counts the bytes.
    ``jobs_args``: each job's positional arguments. Returns the new argument tuples (a job with nothing
    shared keeps its own tuple) and the byte counts. ``put(tensor)`` returns the store's handle; the
    placeholder's key is ``handle.hex()`` when the handle has one (a Ray ``ObjectRef``), else a counter
    unique in this process; either way no two objects ever share a key.
    """
    holders: dict[int, set[int]] = {}
    tensors: dict[int, Tensor] = {}
    per_job = 0
    for j, args in enumerate(jobs_args):
        for t in iter_tensors(args):
            if isinstance(t, Tensor):
                per_job += tensor_bytes(t)
                holders.setdefault(id(t), set()).add(j)
                tensors[id(t)] = t
    chosen = [] if min_bytes is None else [
        i for i, js in holders.items() if len(js) >= 2 and tensor_bytes(tensors[i]) >= min_bytes]
    placeholders: dict[int, SharedTensor] = {}
    for i in chosen:
        handle = put(tensors[i])
        key = handle.hex() if hasattr(handle, "hex") else f"local-{next(_LOCAL_KEYS)}"
        placeholders[i] = SharedTensor(handle, key, tensor_bytes(tensors[i]))

    def swap(t: Any) -> Any:
        return placeholders.get(id(t), t) if isinstance(t, Tensor) else t

    out = [map_tensors(args, swap) if placeholders else args for args in jobs_args]
    shared = sum(p.nbytes for p in placeholders.values())
    inline = sum(tensor_bytes(t) for args in out for t in {id(t): t for t in iter_tensors(args)}.values()
                 if isinstance(t, Tensor))
    return out, BroadcastStats(per_job=per_job, inline=inline, shared=shared, objects=len(placeholders))
