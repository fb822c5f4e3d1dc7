"""The untrained model's evaluation (round 0), computed once per data setting and seed of a sweep.

Every method starts from ``W0`` plus adapters whose product is exactly zero (``B = 0``, or FFA-LoRA's ``B = 0``
with a frozen random ``A``) and the model's seeded initial head, so the round-0 model of a sweep's trials is
the same function for every method of one (model, data, seed): the base model. :func:`nonzero_deltas`
drops the zero deltas, so that model is evaluated as ``W0`` itself (no fold, bitwise the same computation for
every method), and :func:`untrained_key` names what the evaluation depends on:

- the model, data and seed sections of the config (the weights, the head, the test set and its tokenisation),
- the evaluation options of ``train`` (``eval_batch_size``, ``max_new_tokens``, ``autocast``),
- the initial head's values and the clients that get a personalized evaluation,
- the device kind the workers evaluate on (``cpu`` / ``cuda``: their kernels round differently).

Not the method, the ranks, the number of workers (an evaluation's shards are whole batches, so its results
do not depend on the split: ``workers.eval_results``) or the training options. A state with a non-zero
delta (a method whose initial product is not zero) has no key and is always evaluated.

:class:`UntrainedCache` keeps one file per key in a folder (a sweep's ``cache/untrained/``); trials of the
same key that run at once wait for the first one's result instead of computing it again (a POSIX file lock),
and a resumed sweep reuses the files it wrote before.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.files import atomic_write_bytes
from core.wire import Delta, DenseDelta, LowRankDelta

FORMAT = "untrained-eval-1"  # bump when the record's layout or the evaluation's semantics change
EVAL_TRAIN_FIELDS = ("eval_batch_size", "max_new_tokens", "autocast")


def is_zero(delta: Delta | Sequence[Delta]) -> bool:
    """Whether ``delta`` (or every delta of a sequence) is exactly the zero matrix.

    ``scale * B @ A`` is exactly zero when ``scale == 0``, ``B == 0`` or ``A == 0`` (every entry is a sum of
    products with a zero factor); a dense delta when all its entries are zero.
    """
    if isinstance(delta, list | tuple):
        return all(is_zero(d) for d in delta)
    if isinstance(delta, LowRankDelta):
        return delta.scale == 0 or not bool(delta.B.any()) or not bool(delta.A.any())
    if isinstance(delta, DenseDelta):
        return not bool(delta.W.any())
    raise TypeError(f"not a delta: {type(delta).__name__}")


def nonzero_deltas(deltas: Mapping[str, Delta | Sequence[Delta]]) -> dict[str, Delta | Sequence[Delta]]:
    """``deltas`` without the modules whose delta is exactly zero (the same function of the model)."""
    return {m: d for m, d in deltas.items() if not is_zero(d)}


def tensor_digest(tensors: Mapping[str, Tensor] | None) -> str:
    """SHA-256 of the names, dtypes, shapes and bytes of ``tensors`` (in name order); ``""`` for none."""
    h = hashlib.sha256()
    for name in sorted(tensors or {}):
        t = tensors[name].detach().to("cpu").contiguous()  # type: ignore[index]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def untrained_key(cfg: Any, head: Mapping[str, Tensor] | None, personal_clients: Sequence[int],
                  device: str = "cpu") -> str:
    """The cache key of a round-0 evaluation whose deltas are all zero (see the module docstring).

    ``cfg``: the run's :class:`orchestrator.config.RunConfig`; ``head``: the head it evaluates (``None`` for a
    causal LM); ``personal_clients``: the clients evaluated on their own test split; ``device``: where the
    workers run (``workers.resources.WorkerResources.device``).
    """
    train = dataclasses.asdict(cfg.train)
    parts = {"format": FORMAT, "model": dataclasses.asdict(cfg.model), "data": dataclasses.asdict(cfg.data),
             "seed": int(cfg.seed), "eval": {k: train[k] for k in EVAL_TRAIN_FIELDS},
             "head": tensor_digest(head), "personal": sorted(int(c) for c in personal_clients), "device": device}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class UntrainedCache:
    """Round-0 records by key, one pickle file each in ``folder``, computed once under a file lock."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pkl"

    def get_or_compute(self, key: str, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """The record of ``key`` and whether it came from the cache; ``compute()`` runs at most once per key.

        A caller that finds another one computing the same key waits for it (``flock`` on ``<key>.lock``).
        A file that cannot be read (cut short by a crash before the atomic rename is impossible, but a file
        from an older format is not) is computed again and replaced.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                cached = self._read(key)
                if cached is not None:
                    return cached, True
                record = compute()
                atomic_write_bytes(self.path(key), pickle.dumps({"format": FORMAT, "record": record}))
                return record, False
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            saved = pickle.loads(self.path(key).read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            return None
        return saved["record"]
