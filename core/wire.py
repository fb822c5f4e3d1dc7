"""The wire protocol between the driver (methods) and the client workers: deltas, ClientStart, ClientUpdate.

Every federated LoRA method is expressed as *"fold this delta into the frozen weights, then train these
adapters from these initial values"* (DESIGN.md section 2). Workers know nothing about methods; methods
know nothing about Ray. The pieces here are plain dataclasses of CPU tensors so that they pickle cheaply
through the Ray object store and can be checked in milliseconds.

Conventions (PEFT's): a target module has frozen weight ``W0`` of shape ``(d, k)`` (out x in);
an adapter of rank ``r`` has ``B: (d, r)`` and ``A: (r, k)`` and contributes ``scale * B @ A``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

ModuleName = str


@dataclass(frozen=True)
class ModuleSpec:
    """Shape of one adapted linear layer: ``W0: (d_out, k_in)``."""

    name: ModuleName
    d_out: int
    k_in: int


@dataclass(frozen=True)
class LowRankDelta:
    """``delta = scale * B @ A`` with ``B: (d, r)``, ``A: (r, k)``."""

    B: Tensor
    A: Tensor
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.B.dim() != 2 or self.A.dim() != 2 or self.B.shape[1] != self.A.shape[0]:
            raise ValueError(f"LowRankDelta needs B (d, r) and A (r, k); got {tuple(self.B.shape)} and "
                             f"{tuple(self.A.shape)}")

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.B.shape[0], self.A.shape[1])

    def dense(self, dtype: torch.dtype | None = None) -> Tensor:
        """The ``(d, k)`` matrix ``scale * B @ A`` (the single definition of a low-rank delta)."""
        B, A = (self.B, self.A) if dtype is None else (self.B.to(dtype), self.A.to(dtype))
        return (B @ A) * self.scale

    def nbytes(self) -> int:
        return tensor_bytes(self.B) + tensor_bytes(self.A)


@dataclass(frozen=True)
class DenseDelta:
    """A full ``(d, k)`` delta (FLoRA's merged global update)."""

    W: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.W.shape)  # type: ignore[return-value]

    def dense(self, dtype: torch.dtype | None = None) -> Tensor:
        return self.W if dtype is None else self.W.to(dtype)

    def nbytes(self) -> int:
        return tensor_bytes(self.W)


Delta = LowRankDelta | DenseDelta


def sum_deltas(deltas: list[Delta], dtype: torch.dtype | None = None) -> Tensor | None:
    """Dense sum of several deltas of one module (``None`` when the list is empty)."""
    total: Tensor | None = None
    for delta in deltas:
        dense = delta.dense(dtype)
        total = dense.clone() if total is None else total.add_(dense)
    return total


@dataclass(frozen=True)
class AdapterInit:
    """Initial value of one client adapter on one target module.

    ``slots[i]`` is the index of the global rank slot that the adapter's rank ``i`` starts from, or
    ``None`` for a fresh (randomly initialised) rank; it lets the metrics compute the paper's rank-wise
    initialization noise and lets a method write uploads back to the right global slots. ``local_B``: ``B``
    is client-local state (FedSA-LoRA): trained, kept on the client between rounds and never shipped in
    either direction, so neither :meth:`nbytes` nor :meth:`ClientUpdate.nbytes` counts it.
    """

    B: Tensor  # (d, r)
    A: Tensor  # (r, k)
    scale: float = 1.0
    train_A: bool = True
    train_B: bool = True
    slots: tuple[int | None, ...] = ()
    local_B: bool = False

    def __post_init__(self) -> None:
        if self.B.dim() != 2 or self.A.dim() != 2 or self.B.shape[1] != self.A.shape[0]:
            raise ValueError(f"AdapterInit needs B (d, r) and A (r, k); got {tuple(self.B.shape)} and "
                             f"{tuple(self.A.shape)}")
        if self.slots and len(self.slots) != self.rank:
            raise ValueError(f"AdapterInit.slots has {len(self.slots)} entries for rank {self.rank}")

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def as_delta(self) -> LowRankDelta:
        return LowRankDelta(self.B, self.A, self.scale)

    def nbytes(self) -> int:
        """Bytes the server ships for this adapter (a client-local ``B`` stays on the client)."""
        return (0 if self.local_B else tensor_bytes(self.B)) + tensor_bytes(self.A)


@dataclass(frozen=True)
class LocalStage:
    """One stage of local training: which named adapters are trainable, and its share of the steps."""

    train: tuple[str, ...]
    fraction: float = 1.0


@dataclass(frozen=True)
class TailPenalty:
    """HETLoRA's rank self-pruning regulariser, added to the local loss.

    ``lam * sum_m ||B_m[:, s_m:]||_F * ||A_m[s_m:, :]||_F`` over target modules ``m`` of ``adapter``,
    with ``s_m = start[m]`` (``floor(gamma * r)``). Source: Cho et al., HetLoRA (EMNLP 2024), sec. 3.
    """

    lam: float
    start: dict[ModuleName, int]
    adapter: str = "main"


@dataclass(frozen=True)
class ClientStart:
    """Everything a worker needs to start one client's local training in one round.

    ``fold``: per-module delta to add to pristine ``W0`` before training (frozen). ``adapters``: named
    adapters (``"main"``; pFedLoRA uses ``"private"`` and ``"shared"``), each a per-module
    :class:`AdapterInit`. ``upload``: the adapter names the client ships back to the server (the rest is
    client-local state). ``folded_slots``: global rank slots whose value the fold carries exactly
    (Fed-PLoRA). ``head``: classification-head tensors to load (``None`` keeps the model's).
    """

    client_id: int
    round: int
    seed: int
    rank: int
    fold: dict[ModuleName, Delta]
    adapters: dict[str, dict[ModuleName, AdapterInit]]
    folded_slots: dict[ModuleName, tuple[int, ...]] = field(default_factory=dict)
    upload: tuple[str, ...] = ("main",)
    stages: tuple[LocalStage, ...] = (LocalStage(("main",)),)
    head: dict[str, Tensor] | None = None
    train_head: bool = True
    penalty: TailPenalty | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start_delta(self, module: ModuleName, uploaded_only: bool = True,
                    dtype: torch.dtype | None = None) -> Tensor | None:
        """Dense start-of-round delta the client's model applies on ``module``: fold + adapter inits."""
        parts: list[Delta] = [self.fold[module]] if module in self.fold else []
        for name, per_module in self.adapters.items():
            if (not uploaded_only or name in self.upload) and module in per_module:
                parts.append(per_module[module].as_delta())
        return sum_deltas(parts, dtype)

    def nbytes(self) -> int:
        """Bytes the server ships to the client: fold + shipped adapter inits + head.

        Adapters that are not uploaded are client-local state (pFedLoRA's private adapter), kept on the
        client between rounds, and are not counted.
        """
        total = sum(d.nbytes() for d in self.fold.values())
        for name in self.upload:
            total += sum(a.nbytes() for a in self.adapters.get(name, {}).values())
        if self.head:
            total += sum(tensor_bytes(t) for t in self.head.values())
        return total


@dataclass(frozen=True)
class ClientUpdate:
    """What comes back from one client's local training. Only adapter/head tensors and counts.

    ``adapters[name][module] = (B, A)`` after training, for every adapter of the ClientStart (including
    client-local ones, which the driver keeps as the client's persistent state on its behalf).
    """

    client_id: int
    round: int
    adapters: dict[str, dict[ModuleName, tuple[Tensor, Tensor]]]
    n_examples: int
    train_loss: float
    head: dict[str, Tensor] | None = None
    compute_seconds: float = 0.0
    steps: int = 0
    upload: tuple[str, ...] = ("main",)
    peak_memory_bytes: int | None = None  # peak GPU memory of the job (None off CUDA)

    def nbytes(self, start: ClientStart) -> int:
        """Bytes the client ships to the server: the trainable factors of uploaded adapters + head.

        A frozen factor (FFA-LoRA's A) is known to the server and is not shipped back; a client-local
        ``B`` (FedSA-LoRA) never leaves the client.
        """
        total = 0
        for name in self.upload:
            inits = start.adapters.get(name, {})
            for module, (B, A) in self.adapters.get(name, {}).items():
                init = inits.get(module)
                total += tensor_bytes(B) if init is None or (init.train_B and not init.local_B) else 0
                total += tensor_bytes(A) if init is None or init.train_A else 0
        if self.head and start.train_head:
            total += sum(tensor_bytes(t) for t in self.head.values())
        return total


def tensor_bytes(t: Tensor) -> int:
    """Bytes of a tensor's data as shipped (numel x element size)."""
    return t.numel() * t.element_size()
