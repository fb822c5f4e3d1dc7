"""The method interface and the pieces of server math that several methods share.

A method is an object with paired steps (Flower's ``configure_fit`` / ``aggregate_fit``):
``client_start`` (one ClientStart per sampled client) and ``aggregate`` (updates in, new state out).
The driver never asks which algorithm it runs. State tensors are named ``"<module>/<factor>"``;
the classification head is ``"head/<param>"`` and is averaged with data-size weights by every method.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from core.rng import derive_seed, generator, kaiming_uniform_A
from core.wire import AdapterInit, ClientStart, ClientUpdate, Delta, LowRankDelta, ModuleName, ModuleSpec
from orchestrator.method_config import MethodConfig
from orchestrator.server_optimizer import MOMENT_PREFIX, step_parameters
from orchestrator.state import HEAD_PREFIX, Aggregation, GlobalState
from orchestrator.update_checks import InvalidClientUpdate, validate_update

Pair = tuple[ClientStart, ClientUpdate]
AdapterAggregate = tuple[GlobalState, dict[int, float]] | tuple[GlobalState, dict[int, float], dict[str, Any]]


@dataclass(frozen=True)
class StartCommon:
    """The ClientStart fields every method fills the same way (``ClientStart(..., **common.fields())``)."""

    client_id: int
    round: int
    seed: int
    rank: int
    head: dict[str, Tensor] | None
    train_head: bool

    def fields(self) -> dict[str, Any]:
        """The fields as keyword arguments (shallow: the head tensors are not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FederatedMethod(ABC):
    """Base class of every federated LoRA method.

    Subclasses implement ``init_adapters``, ``client_start``, ``aggregate_adapters`` and ``global_delta``;
    the head, validation and weights are handled here. ``client_ranks[i]`` is client ``i``'s LoRA rank and
    ``global_rank`` the rank R of the global adapter.
    """

    name: ClassVar[str]
    default_weighting: ClassVar[str] = "data"
    weightings: ClassVar[tuple[str, ...]] = ("data", "uniform")
    requires_homogeneous: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig, modules: list[ModuleSpec], client_ranks: list[int],
                 global_rank: int, seed: int):
        if not modules:
            raise ValueError("the method needs at least one target module")
        if global_rank < 1:
            raise ValueError(f"ranks.max_rank={global_rank} must be >= 1")
        for cid, r in enumerate(client_ranks):
            if not 1 <= int(r) <= global_rank:
                raise ValueError(f"client {cid} has rank {r}; ranks must be in [1, max_rank={global_rank}]")
        if self.requires_homogeneous and len(set(client_ranks)) > 1:
            raise ValueError(f"method {self.name!r} needs every client at the same rank; got ranks "
                             f"{sorted(set(client_ranks))} (use ranks.distribution='homogeneous')")
        self.cfg = cfg
        self.modules = {m.name: m for m in modules}
        self.client_ranks = [int(r) for r in client_ranks]
        self.global_rank = global_rank
        self.seed = seed
        self.scale = cfg.one_rank_scale(global_rank)
        self.weighting = cfg.weighting or self.default_weighting
        self.server_optimizer = cfg.server()
        if self.weighting not in self.weightings:
            raise ValueError(f"method.weighting={self.weighting!r} is not allowed for {self.name!r}; choose "
                             f"one of {list(self.weightings)}")

    # ---- the interface ------------------------------------------------------------------------------
    def init_global(self, head: dict[str, Tensor] | None = None) -> GlobalState:
        """Round-0 server state: the method's adapters plus the model's initial head."""
        state = self.init_adapters()
        for key, value in (head or {}).items():
            state.tensors[HEAD_PREFIX + key] = value.detach().to(torch.float32).clone()
        return state

    @abstractmethod
    def init_adapters(self) -> GlobalState:
        """Round-0 adapter state (no head)."""

    @abstractmethod
    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        """What client ``client_id`` starts round ``round_idx`` from."""

    @abstractmethod
    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]) -> AdapterAggregate:
        """New adapter state from validated (start, update) pairs, and the weight of each client.

        A third element, when returned, becomes :attr:`Aggregation.info` (e.g. ``"agg_noise"``: the aggregation
        noise per module, which a dense aggregation measures exactly as it rounds its float64 sum).
        """

    @abstractmethod
    def global_delta(self, state: GlobalState) -> dict[ModuleName, Delta]:
        """The delta on ``W0`` that the global model evaluates."""

    def global_terms(self, state: GlobalState) -> dict[ModuleName, tuple[Delta, ...]]:
        """The global delta as the sum of the terms the state holds, exact (what the noise metrics measure).

        Default: the one term :meth:`global_delta`. A method whose evaluated delta is a rounded dense sum of
        state tensors (FedEx-LoRA's ``dW + s B A``) returns the terms themselves, so that the metrics see the
        state's exact value and can cancel terms shared with the clients' starts (no dense ``d x k`` work).
        """
        return {m: (delta,) for m, delta in self.global_delta(state).items()}

    def personal_delta(self, state: GlobalState, client_id: int) -> dict[ModuleName, Delta] | None:
        """Deltas of client ``client_id``'s personalized model, or ``None`` for non-personalized methods."""
        return None

    def global_factors(self, state: GlobalState) -> dict[ModuleName, tuple[Tensor, Tensor]] | None:
        """Global (B, A) factors per module, rank slots in order (for the rank-wise init noise)."""
        return None

    def extra_noise(self, starts: list[ClientStart], updates: list[ClientUpdate]) -> dict[str, float]:
        """Method-specific noise metrics reported next to the common ones (none by default)."""
        return {}

    def client_rank(self, state: GlobalState, client_id: int) -> int:
        """Client ``client_id``'s rank in the round that starts from ``state``."""
        return self.client_ranks[client_id]

    def used_updates(self, new_state: GlobalState, pairs: list[Pair]) -> list[ClientUpdate]:
        """The updates as the aggregation that produced ``new_state`` used them (as received by default).

        A method that changes an update on the server before aggregating it (HETLoRA's pruning) returns
        the changed one: the aggregation noise is measured on these effective adapters.
        """
        return [u for _, u in pairs]

    def aggregate(self, state: GlobalState, starts: list[ClientStart],
                  updates: list[ClientUpdate]) -> Aggregation:
        """Validate every update against its start, then aggregate adapters and head into a new state.

        Raises :class:`InvalidClientUpdate` (naming the client) before any tensor is combined, so a bad
        update never reaches the state. ``state`` itself is never modified.
        """
        pairs = pair_updates(starts, updates)
        for start, update in pairs:
            validate_update(start, update)
        new_state, weights, *info = self.aggregate_adapters(state, pairs)
        new_state.tensors.update(aggregate_head(state, pairs))
        return Aggregation(new_state, weights, info=info[0] if info else {}, used=self.used_updates(new_state, pairs))

    # ---- server optimizer (orchestrator/server_optimizer.py) ------------------------------------------
    def server_parameters(self, state: GlobalState) -> dict[str, Tensor]:
        """The global parameters ``x`` the server optimizer steps on, by name (never modified).

        Default: the standard factored layout, every module's ``"<module>/B": (d, q)`` and
        ``"<module>/A": (q, k)``, plus the head tensors; the pseudo-gradient of a factor is then the
        difference of the factors (Reddi et al. 2021 apply the optimizer to whatever the clients train and
        the server averages). A method whose state is laid out otherwise overrides this and
        :meth:`with_server_parameters`.
        """
        params: dict[str, Tensor] = {}
        for m in self.modules:
            for factor in ("B", "A"):
                key = f"{m}/{factor}"
                if key not in state.tensors:
                    raise ValueError(f"method {self.name!r} has no state tensor {key!r}: a method whose state "
                                     "is not one (B, A) pair per module must override server_parameters to use "
                                     "method.server_optimizer")
                params[key] = state.tensors[key]
        params.update({k: v for k, v in state.tensors.items() if k.startswith(HEAD_PREFIX)})
        return params

    def with_server_parameters(self, state: GlobalState, params: dict[str, Tensor]) -> GlobalState:
        """A copy of ``state`` with the stepped parameters written back (default: under their own names)."""
        new = state.copy()
        new.tensors.update(params)
        return new

    def server_step(self, old: GlobalState, new: GlobalState) -> GlobalState:
        """The next global state: the server optimizer's step from ``old`` on the aggregate ``new``.

        ``avg`` returns ``new`` itself (no tensor touched). Otherwise ``Delta = server_parameters(new) -
        server_parameters(old)`` feeds the rule of ``method.server_optimizer``; its moments are read from
        ``old`` and stored in the returned state (:mod:`orchestrator.server_optimizer`). Neither input is
        modified.
        """
        if self.server_optimizer.name == "avg":
            return new
        moments = {k: v for k, v in old.tensors.items() if k.startswith(MOMENT_PREFIX)}
        params, moments = step_parameters(self.server_optimizer, self.server_parameters(old),
                                          self.server_parameters(new), moments)
        out = self.with_server_parameters(new, params)
        out.tensors.update(moments)
        return out

    # ---- helpers for subclasses -----------------------------------------------------------------------
    def start_common(self, state: GlobalState, client_id: int, round_idx: int) -> StartCommon:
        """ClientStart fields every method fills the same way."""
        return StartCommon(client_id=client_id, round=round_idx,
                           seed=derive_seed(self.seed, "local", round_idx, client_id),
                           rank=self.client_rank(state, client_id), head=state.head(),
                           train_head=self.cfg.train_head)

    def client_weights(self, pairs: list[Pair]) -> dict[int, float]:
        """Aggregation weights over the round's clients: ``n_i / sum n`` (data) or ``1 / v`` (uniform)."""
        return client_weights(pairs, self.weighting)

    def fresh_A(self, rank: int, module: ModuleName, *labels: object) -> Tensor:
        """PEFT-style ``A: (r, k)`` from the stream (seed, labels..., module)."""
        return kaiming_uniform_A(rank, self.modules[module].k_in, generator(self.seed, *labels, module))

    def init_factors(self, rank: int) -> dict[str, Tensor]:
        """``A`` Kaiming-uniform (seeded per module), ``B = 0``: the standard LoRA init, once, on the server."""
        tensors: dict[str, Tensor] = {}
        for name, spec in self.modules.items():
            tensors[f"{name}/A"] = self.fresh_A(rank, name, "init")
            tensors[f"{name}/B"] = torch.zeros(spec.d_out, rank)
        return tensors

    def factors(self, state: GlobalState, module: ModuleName) -> tuple[Tensor, Tensor]:
        return state.tensors[f"{module}/B"], state.tensors[f"{module}/A"]

    def slot_adapter(self, state: GlobalState, module: ModuleName, slots: list[int],
                     train_A: bool = True, train_B: bool = True) -> AdapterInit:
        """An adapter whose rank ``i`` starts as a copy of global slot ``slots[i]``.

        When ``slots`` is every slot in order the adapter holds the state's own tensors (no copy; states are
        never changed in place), so every client of the round shares them and they cross to the workers once
        (:mod:`orchestrator.broadcast`).
        """
        B, A = self.factors(state, module)
        if list(slots) == list(range(A.shape[0])):
            return AdapterInit(B, A, self.scale, train_A, train_B, tuple(slots))
        idx = torch.tensor(slots, dtype=torch.long)
        return AdapterInit(B.index_select(1, idx), A.index_select(0, idx), self.scale, train_A, train_B,
                           tuple(slots))

    def low_rank_global(self, state: GlobalState) -> dict[ModuleName, Delta]:
        return {m: LowRankDelta(*self.factors(state, m), self.scale) for m in self.modules}


class FactoredMethod(FederatedMethod):
    """A method whose server state is one ``(B: (d, q), A: (q, k))`` pair per module, evaluated as ``W0 + s B A``.

    ``state_rank`` is ``q`` at round 0 (the standard LoRA init: A Kaiming-uniform, B = 0).
    """

    @property
    def state_rank(self) -> int:
        return self.global_rank

    def init_adapters(self) -> GlobalState:
        return GlobalState(self.init_factors(self.state_rank))

    def global_delta(self, state: GlobalState) -> dict[ModuleName, Delta]:
        return self.low_rank_global(state)

    def global_factors(self, state: GlobalState) -> dict[ModuleName, tuple[Tensor, Tensor]]:
        return {m: self.factors(state, m) for m in self.modules}


def pair_updates(starts: list[ClientStart], updates: list[ClientUpdate]) -> list[Pair]:
    """Match updates to starts by client id (sorted by client id, so the order of arrival never matters)."""
    if not updates:
        raise ValueError("aggregate needs at least one client update; zero clients were sampled or all failed")
    by_id = {s.client_id: s for s in starts}
    if len(by_id) != len(starts):
        raise ValueError("two ClientStarts for the same client in one round")
    seen: set[int] = set()
    for u in updates:
        if u.client_id not in by_id:
            raise InvalidClientUpdate(u.client_id, "sent an update but was not started this round", u.round + 1)
        if u.client_id in seen:
            raise InvalidClientUpdate(u.client_id, "sent two updates in one round", u.round + 1)
        seen.add(u.client_id)
    return [(by_id[u.client_id], u) for u in sorted(updates, key=lambda u: u.client_id)]


def client_weights(pairs: list[Pair], weighting: str) -> dict[int, float]:
    """``n_i / sum_j n_j`` for ``"data"``; ``1 / v`` for ``"uniform"``."""
    if weighting == "uniform":
        return {s.client_id: 1.0 / len(pairs) for s, _ in pairs}
    total = sum(u.n_examples for _, u in pairs)
    if total <= 0:
        raise ValueError("data-size weighting needs at least one example among the round's clients")
    return {s.client_id: u.n_examples / total for s, u in pairs}


def aggregate_head(state: GlobalState, pairs: list[Pair]) -> dict[str, Tensor]:
    """Data-size weighted mean of the heads of the clients that trained theirs; unchanged otherwise."""
    trained = [(s, u) for s, u in pairs if s.train_head and u.head]
    if not trained:
        return {}
    weights = client_weights(trained, "data")
    out: dict[str, Tensor] = {}
    for key in trained[0][1].head:  # type: ignore[union-attr]
        acc = torch.zeros_like(trained[0][1].head[key], dtype=torch.float64)  # type: ignore[index]
        for s, u in trained:
            acc.add_(u.head[key].to(torch.float64), alpha=weights[s.client_id])  # type: ignore[index]
        out[HEAD_PREFIX + key] = acc.to(torch.float32)
    return out


def slot_average(old: Tensor, dim: int, uploads: list[tuple[list[int], Tensor, float]]) -> Tensor:
    """Per-slot weighted mean along ``dim`` over the uploads that hold each slot.

    ``uploads``: ``(slots, values, weight)`` where ``values`` has ``len(slots)`` entries along ``dim``.
    Slot ``j`` becomes ``sum_{i: j in slots_i} w_i v_ij / sum_{i: j in slots_i} w_i``; a slot that no
    upload holds keeps its ``old`` value (Fed-PLoRA's |Q_j| = 0 case, DESIGN.md section 3). Sums run in
    float64 in a fixed (client-id) order.
    """
    acc = torch.zeros_like(old, dtype=torch.float64)
    wsum = torch.zeros(old.shape[dim], dtype=torch.float64)
    for slots, values, weight in uploads:
        idx = torch.tensor(slots, dtype=torch.long)
        acc.index_add_(dim, idx, values.to(torch.float64), alpha=weight)
        wsum.index_add_(0, idx, torch.full((len(slots),), float(weight), dtype=torch.float64))
    held = wsum > 0
    shape = [1] * old.dim()
    shape[dim] = -1
    mean = acc / wsum.clamp_min(1e-300).view(shape)
    return torch.where(held.view(shape), mean, old.to(torch.float64)).to(old.dtype)


def padded_sum(old: Tensor, dim: int, uploads: list[tuple[list[int], Tensor, float]]) -> Tensor:
    """Zero-padded weighted sum along ``dim``: slot ``j`` becomes ``sum_{i: j in slots_i} w_i v_ij``.

    This is HETLoRA's aggregation (pad every client to rank R with zeros, then weighted-average with
    weights summing to 1 over all clients). Slots that no upload holds keep their ``old`` value.
    """
    acc = torch.zeros_like(old, dtype=torch.float64)
    held = torch.zeros(old.shape[dim], dtype=torch.bool)
    for slots, values, weight in uploads:
        idx = torch.tensor(slots, dtype=torch.long)
        acc.index_add_(dim, idx, values.to(torch.float64), alpha=weight)
        held[idx] = True
    shape = [1] * old.dim()
    shape[dim] = -1
    return torch.where(held.view(shape), acc, old.to(torch.float64)).to(old.dtype)


def main_slots(start: ClientStart, module: ModuleName, adapter: str = "main") -> list[int]:
    """The global slots of the client's adapter ranks (every rank must map to a slot)."""
    slots = start.adapters[adapter][module].slots
    if any(s is None for s in slots):
        raise ValueError(f"adapter {adapter!r} on {module} has fresh ranks; no slot to write back to")
    return list(slots)  # type: ignore[arg-type]


def rounded_with_noise(exact: Tensor, dtype: torch.dtype) -> tuple[Tensor, float]:
    """``(exact.to(dtype), ||exact - exact.to(dtype)||_F)``: a float64 sum stored in ``dtype``, and what that loses.

    A dense exact aggregation (FLoRA, FedEx-LoRA) computes the new ``dW`` as a float64 sum and stores it
    rounded; its aggregation noise is exactly this rounding (``orchestrator.metrics.noise_metrics`` reads it
    from ``Aggregation.info["agg_noise"]`` instead of forming the float64 sum a second time). The conversion
    runs by blocks of rows (the same rounding as ``.to(dtype)``), each block's difference taken while it is in
    the cache, so the norm costs no extra pass over memory. In ``exact``'s own dtype it is returned as is
    (nothing rounded: 0).
    """
    if dtype == exact.dtype:
        return exact, 0.0
    stored = torch.empty(exact.shape, dtype=dtype)
    rows = max(1, (1 << 16) // max(1, exact.shape[-1]))
    square = 0.0
    for r0 in range(0, exact.shape[0], rows):
        block = stored[r0:r0 + rows]
        block.copy_(exact[r0:r0 + rows])
        square += float(torch.linalg.vector_norm(exact[r0:r0 + rows] - block)) ** 2
    return stored, math.sqrt(square)
