"""Server-side checks of a client's upload before it is aggregated (shape, NaN/inf, unknown module)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.wire import ClientStart, ClientUpdate


class InvalidClientUpdate(ValueError):
    """A ClientUpdate that must not be aggregated (wrong shape, NaN/inf, unknown module...).

    The message is ``"client <id> in round <r>: <problem>"`` (``round_idx`` 1-based, as the logs count rounds;
    omitted when unknown). ``args`` are the constructor's own arguments, so the error survives pickling
    across the Driver actor's process boundary.
    """

    def __init__(self, client_id: int, message: str, round_idx: int | None = None):
        super().__init__(client_id, message, round_idx)
        self.client_id = client_id
        self.message = message
        self.round_idx = round_idx

    def __str__(self) -> str:
        where = f" in round {self.round_idx}" if self.round_idx is not None else ""
        return f"client {self.client_id}{where}: {self.message}"


def _all_finite(t: Tensor) -> bool:
    """NaN/inf check: one reduction (a NaN or inf makes the sum non-finite); the full check only if needed."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def validate_update(start: ClientStart, update: ClientUpdate) -> None:
    """Reject an update that does not match its ClientStart or carries NaN/inf (before aggregation)."""
    cid = start.client_id

    def bad(message: str) -> InvalidClientUpdate:
        return InvalidClientUpdate(cid, message, start.round + 1)

    if update.client_id != cid:
        raise bad(f"update is for client {update.client_id}")
    if update.n_examples < 0:
        raise bad(f"n_examples={update.n_examples} must be >= 0")
    if not math.isfinite(update.train_loss):
        raise bad(f"train_loss is {update.train_loss}")
    for name, per_module in start.adapters.items():
        got = update.adapters.get(name)
        if got is None:
            raise bad(f"adapter {name!r} missing from the update")
        if set(got) != set(per_module):
            raise bad(f"adapter {name!r}: modules {sorted(got)} != expected {sorted(per_module)}")
        for module, init in per_module.items():
            B, A = got[module]
            for label, t, ref in (("B", B, init.B), ("A", A, init.A)):
                if tuple(t.shape) != tuple(ref.shape):
                    raise bad(f"{name}.{module}.{label} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
                if not _all_finite(t):
                    raise bad(f"{name}.{module}.{label} contains NaN or inf")
    if update.head is not None:
        for key, t in update.head.items():
            if start.head is not None and key in start.head and start.head[key].shape != t.shape:
                raise bad(f"head.{key} has shape {tuple(t.shape)}, expected {tuple(start.head[key].shape)}")
            if not _all_finite(t):
                raise bad(f"head.{key} contains NaN or inf")
