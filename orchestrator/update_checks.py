"""Server-side checks of a client's upload before it is aggregated (shape, NaN/inf, unknown module)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.wire import ClientStart, ClientUpdate


class InvalidClientUpdate(ValueError):
    """A ClientUpdate that must not be aggregated (wrong shape, NaN/inf, unknown module...)."""

    def __init__(self, client_id: int, message: str):
        super().__init__(f"client {client_id}: {message}")
        self.client_id = client_id



def _all_finite(t: Tensor) -> bool:
    """NaN/inf check: one reduction (a NaN or inf makes the sum non-finite); the full check only if needed."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def validate_update(start: ClientStart, update: ClientUpdate) -> None:
    """Reject an update that does not match its ClientStart or carries NaN/inf (before aggregation)."""
    cid = start.client_id
    if update.client_id != cid:
        raise InvalidClientUpdate(cid, f"update is for client {update.client_id}")
    if update.n_examples < 0:
        raise InvalidClientUpdate(cid, f"n_examples={update.n_examples} must be >= 0")
    if not math.isfinite(update.train_loss):
        raise InvalidClientUpdate(cid, f"train_loss is {update.train_loss}")
    for name, per_module in start.adapters.items():
        got = update.adapters.get(name)
        if got is None:
            raise InvalidClientUpdate(cid, f"adapter {name!r} missing from the update")
        if set(got) != set(per_module):
            raise InvalidClientUpdate(cid, f"adapter {name!r}: modules {sorted(got)} != expected "
                                           f"{sorted(per_module)}")
        for module, init in per_module.items():
            B, A = got[module]
            for label, t, ref in (("B", B, init.B), ("A", A, init.A)):
                if tuple(t.shape) != tuple(ref.shape):
                    raise InvalidClientUpdate(cid, f"{name}.{module}.{label} has shape {tuple(t.shape)}, "
                                                   f"expected {tuple(ref.shape)}")
                if not _all_finite(t):
                    raise InvalidClientUpdate(cid, f"{name}.{module}.{label} contains NaN or inf")
    if update.head is not None:
        for key, t in update.head.items():
            if start.head is not None and key in start.head and start.head[key].shape != t.shape:
                raise InvalidClientUpdate(cid, f"head.{key} has shape {tuple(t.shape)}, expected "
                                               f"{tuple(start.head[key].shape)}")
            if not _all_finite(t):
                raise InvalidClientUpdate(cid, f"head.{key} contains NaN or inf")
