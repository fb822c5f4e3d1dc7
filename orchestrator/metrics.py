"""Noise, similarity and communication metrics as pure functions (float64, summed over target modules).

Definitions (Fed-PLoRA paper sec. 3.1 and 3.4; DESIGN.md section 4):

- **Function-space initialization noise** of client i: ``sum_m ||dW_global,m - dW_start_i,m||_F``, where
  ``dW_start_i = fold + s B_i^0 A_i^0`` is the delta the client's model applies before its first step
  (shipped adapters only). Zero exactly when the client starts from the global model's function.
- **Parameter-space initialization noise** (the paper's Eq. 2): ``||A_g (-) A_i||_F + ||B_g (-) B_i||_F``
  per module, rank-wise: the client's starting factors are placed in the global rank slots they start
  from; a slot the fold carries exactly (Fed-PLoRA) counts as held; slots the client neither holds nor
  folds count with their full global value; fresh ranks (FLoRA, new ranks of FlexLoRA) count with their
  own value. Needs the method's global factors (FLoRA's are the last round's stacked factors).
- **Aggregation noise** (the paper's Eq. 3 on effective adapters): ``sum_m ||ideal_m - dW_new,m||_F`` with
  ``ideal = sum_i p_i (fold_i + s B_i A_i)``, the weighted mean (the method's aggregation weights
  ``p_i``) of the clients' effective end-of-round deltas (the adapters as the server aggregated them, e.g.
  after HETLoRA's pruning); ``dW_new`` is the new global delta (``global_terms``). For
  Fed-PLoRA this differs from the paper's rank-wise form when some slot is not trained by every client
  (reference notes section 5, caveat 3); that form is :func:`fedplora_rankwise_noise`.
- Per-round values are sums over the round's clients (init noise, as the paper's ``sum_{i in [v]}``).

Cost: no ``d x k`` matrix is formed for low-rank deltas. Per module, every term is split into rank-1 pieces
held once in a :class:`~orchestrator.linalg.PieceUnion` (bitwise copies, such as Fed-PLoRA's folded and
selected slots, are one piece, so they cancel exactly); a norm is ``sqrt(c^T H c)`` with ``H`` the elementwise
product of the pieces' Gram matrices, computed once per module for all clients, and a QR fallback where the
sum nearly cancels (exact to float64 rounding). Every piece of a module's sums enters the union before the
first norm (one Gram matrix per module and metric); a term whose ``B`` or ``A`` is zero (LoRA's ``B = 0`` init,
FLoRA's fresh adapters) holds no Gram row. Only a dense delta that does not cancel (FLoRA's and FedEx-LoRA's
aggregation noise: ``dW_old`` and ``dW_new`` are different dense tensors) is summed densely, one block of rows
at a time (:func:`~orchestrator.linalg.frobenius_of_sum`); in a round, :func:`noise_metrics` takes those two
from the aggregation itself, which forms the ideal as its float64 ``dW`` and measures what storing it in float32
loses (``Aggregation.info["agg_noise"]``), so no second dense ``d x k`` product is formed; FlexLoRA, whose
aggregation noise is only the float32 rounding of the SVD factors it stores, reports it the same way (a sum that
cancels to rounding would otherwise need the QR fallback on every module). The global delta is
the method's ``global_terms`` (FedEx-LoRA: ``dW`` and ``s B A`` as held, so a client starting from them has exactly zero
init noise). In the parameter-space noise, clients whose adapters hold the global factors themselves, slot for
slot, are exactly zero without arithmetic, and clients sharing one adapter's tensors are computed once.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from core.wire import ClientStart, ClientUpdate, Delta, LowRankDelta, ModuleName
from orchestrator.linalg import PieceUnion, frobenius_of_factors, frobenius_of_sum

F64 = torch.float64


GlobalDelta = dict[ModuleName, Delta | tuple[Delta, ...]]  # per module: the delta, or its terms (summed)


def _terms(delta: Delta | tuple[Delta, ...]) -> tuple[Delta, ...]:
    return delta if isinstance(delta, tuple) else (delta,)


def init_noise_function(global_delta: GlobalDelta, start: ClientStart) -> float:
    """``sum_m ||dW_global,m - dW_start,m||_F`` for one client (see :func:`init_noise_functions`)."""
    return init_noise_functions(global_delta, [start])[0]


def init_noise_functions(global_delta: GlobalDelta, starts: list[ClientStart]) -> list[float]:
    """``sum_m ||dW_global,m - dW_start_i,m||_F`` for every client ``i`` of ``starts``.

    Per module, the global delta and every client's fold and shipped adapter inits are pieces of one
    :class:`~orchestrator.linalg.PieceUnion` (Gram matrices computed once for all clients; a client's slots
    that are bitwise copies of the global's cancel exactly), see :func:`norms_of_sums`.
    """
    totals = [0.0] * len(starts)
    for module, delta in global_delta.items():
        sums = []
        for start in starts:
            terms: list[tuple[Delta, float]] = [(t, 1.0) for t in _terms(delta)]
            if module in start.fold:
                terms.append((start.fold[module], -1.0))
            for name in start.upload:
                init = start.adapters.get(name, {}).get(module)
                if init is not None:
                    terms.append((init.as_delta(), -1.0))
            sums.append(terms)
        for i, value in enumerate(norms_of_sums(sums)):
            totals[i] += value
    return totals


def norms_of_sums(sums: list[list[tuple[Delta, float]]]) -> list[float]:
    """``||sum_t c_t delta_t||_F`` for each list of ``(delta, c_t)`` (deltas of one module), float64.

    Low-rank deltas enter one shared :class:`~orchestrator.linalg.PieceUnion` (``c^T H c`` from Gram matrices,
    QR fallback where the sum nearly cancels: accurate to float64 rounding). Dense deltas that are the same
    tensor object are combined first (their coefficients add; FLoRA's fold and global ``dW`` cancel); a sum
    with a dense term left is computed densely (:func:`~orchestrator.linalg.frobenius_of_sum`).
    """
    shape = next((tuple(d.shape) for terms in sums for d, _ in terms), None)
    if shape is None:
        return [0.0] * len(sums)
    union = PieceUnion(*shape)
    split = []  # every piece enters the union before the first norm: one Gram matrix for all the sums
    for terms in sums:
        low: list[tuple[Tensor, float]] = []
        dense: dict[int, list] = {}
        for delta, coeff in terms:
            if isinstance(delta, LowRankDelta):
                low.append((union.add(delta.B, delta.A), coeff * delta.scale))
            else:
                dense.setdefault(id(delta.W), [delta.W, 0.0])[1] += coeff
        split.append((low, [(W, c) for W, c in dense.values() if c != 0.0]))
    out = []
    for terms, (low, dense_left) in zip(sums, split):
        if dense_left:
            factors = [(d.B.to(F64) * (c * d.scale), d.A) for d, c in terms if isinstance(d, LowRankDelta)]
            out.append(frobenius_of_sum(factors, dense_left))
        else:
            out.append(union.norm(low))
    return out


def init_noise_param(global_factors: dict[ModuleName, tuple[Tensor, Tensor]] | None,
                     start: ClientStart) -> float | None:
    """The paper's rank-wise ``sum_m ||A_g (-) A_i||_F + ||B_g (-) B_i||_F`` for one client."""
    values = init_noise_params(global_factors, [start])
    return None if values is None else values[0]


def init_noise_params(global_factors: dict[ModuleName, tuple[Tensor, Tensor]] | None,
                      starts: list[ClientStart]) -> list[float] | None:
    """:func:`init_noise_param` of every client, one pass over the modules (``None`` without global factors).

    Per module, slot by slot: a slot the client starts from contributes ``||A_g[j] - A_i[row]||^2``, a folded
    slot 0 (it carries the global value exactly), any other global slot ``||A_g[j]||^2``, a fresh rank its own
    ``||A_i[row]||^2`` (B alike, columns); when several of the client's adapters name a slot the last one
    holds it and a fold overrides them. ``||.||_F`` of the zero-padded difference is the square root.
    """
    if global_factors is None:
        return None
    totals = [0.0] * len(starts)
    for module, (Bg0, Ag0) in global_factors.items():
        Bg, Ag = Bg0.to(F64), Ag0.to(F64)
        R = Ag.shape[0]
        norms_B, norms_A = (Bg * Bg).sum(0), (Ag * Ag).sum(1)  # (R,) squared slot norms
        held_cache: dict[tuple, tuple[float, float]] = {}  # clients sharing an adapter's tensors: computed once
        for c, start in enumerate(starts):
            holder: dict[int, tuple[Any, int] | None] = {}  # slot -> (init, row), None when folded
            fresh: dict[int, tuple[Any, list[int]]] = {}  # id(init) -> (init, its fresh rows)
            for name in start.upload:
                init = start.adapters.get(name, {}).get(module)
                if init is None:
                    continue
                for i, slot in enumerate(init.slots or range(init.rank)):
                    if slot is None or slot >= R:
                        fresh.setdefault(id(init), (init, []))[1].append(i)
                    else:
                        holder[slot] = (init, i)
            for slot in start.folded_slots.get(module, ()):
                holder[slot] = None
            free = [j for j in range(R) if j not in holder]
            dB, dA = float(norms_B[free].sum()), float(norms_A[free].sum())
            groups: dict[int, tuple[Any, list[int], list[int]]] = {}
            for slot, held in holder.items():
                if held is not None:
                    entry = groups.setdefault(id(held[0]), (held[0], [], []))
                    entry[1].append(slot)
                    entry[2].append(held[1])
            for init, slots, rows in groups.values():
                key = (id(init.B), id(init.A), tuple(slots), tuple(rows))
                if key not in held_cache:
                    held_cache[key] = _held_distance(Bg0, Ag0, Bg, Ag, init.B, init.A, slots, rows)
                dB, dA = dB + held_cache[key][0], dA + held_cache[key][1]
            for init, rows in fresh.values():
                i = torch.tensor(rows)
                dB += float((init.B.index_select(1, i).to(F64) ** 2).sum())
                dA += float((init.A.index_select(0, i).to(F64) ** 2).sum())
            totals[c] += math.sqrt(dA) + math.sqrt(dB)
    return totals


def _held_distance(Bg0: Tensor, Ag0: Tensor, Bg: Tensor, Ag: Tensor, B: Tensor, A: Tensor, slots: list[int],
                   rows: list[int]) -> tuple[float, float]:
    """``(sum_j ||Bg[:, slots_j] - B[:, rows_j]||^2, sum_j ||Ag[slots_j] - A[rows_j]||^2)`` in float64.

    Exactly ``(0, 0)`` without arithmetic when the adapter holds the global tensors themselves, slot for slot
    (every client of FedIT-like methods). ``Bg0, Ag0`` are the global factors as stored, ``Bg, Ag`` in float64.
    """
    if B is Bg0 and A is Ag0 and slots == rows:
        return 0.0, 0.0
    j, i = torch.tensor(slots), torch.tensor(rows)
    return (float(((Bg.index_select(1, j) - B.index_select(1, i).to(F64)) ** 2).sum()),
            float(((Ag.index_select(0, j) - A.index_select(0, i).to(F64)) ** 2).sum()))


def aggregation_noise(new_global: GlobalDelta, starts: list[ClientStart],
                      updates: list[ClientUpdate], weights: dict[int, float]) -> float:
    """``sum_m ||sum_i p_i (fold_i + s B_i A_i) - dW_new||_F`` (one sum per module, see :func:`norms_of_sums`).

    The clients' folds are copies of the same global slots (Fed-PLoRA): they are one set of pieces whose
    coefficients add, so the Gram matrices hold each folded slot once.
    """
    by_id = {s.client_id: s for s in starts}
    total = 0.0
    for module, delta in new_global.items():
        terms: list[tuple[Delta, float]] = [(t, -1.0) for t in _terms(delta)]
        for u in updates:
            start, p = by_id[u.client_id], weights[u.client_id]
            if module in start.fold:
                terms.append((start.fold[module], p))
            for name in start.upload:
                if module in u.adapters.get(name, {}):
                    B, A = u.adapters[name][module]
                    terms.append((LowRankDelta(B, A, start.adapters[name][module].scale), p))
        total += norms_of_sums([terms])[0]
    return total


def noise_metrics(method: Any, old_state: Any, starts: list[ClientStart], agg: Any) -> dict[str, float]:
    """One round's noise metrics: ``init_noise_fn``, ``init_noise_param``, ``agg_noise`` and the method's extras.

    ``method`` is a :class:`~orchestrator.methods.base.FederatedMethod`, ``old_state`` the state the round
    started from and ``agg`` its :class:`~orchestrator.state.Aggregation`. The aggregation noise uses the
    updates as the server aggregated them (``agg.used``, e.g. HETLoRA's pruned adapters), not as uploaded. A
    method whose aggregation holds the ideal exactly in float64 (FLoRA's and FedEx-LoRA's dense ``dW``,
    FlexLoRA's SVD) reports the aggregation noise per module in ``agg.info["agg_noise"]`` (the float32
    rounding of what it stores), used as is.
    """
    glob, factors = method.global_terms(old_state), method.global_factors(old_state)
    out = {"init_noise_fn": sum(init_noise_functions(glob, starts))}
    params = init_noise_params(factors, starts)
    out["init_noise_param"] = float("nan") if params is None else sum(params)
    out["agg_noise"] = round_aggregation_noise(method, starts, agg)
    out.update(method.extra_noise(starts, agg.used))
    return out


def round_aggregation_noise(method: Any, starts: list[ClientStart], agg: Any) -> float:
    """The round's ``agg_noise`` (``agg``: its :class:`~orchestrator.state.Aggregation`).

    ``agg.info["agg_noise"]`` summed over the modules when the aggregation measured it, else
    :func:`aggregation_noise` on the new global's terms and the updates as used.
    """
    if "agg_noise" in agg.info:  # measured by the aggregation itself (a dense exact sum and its rounding)
        return float(sum(agg.info["agg_noise"].values()))
    return aggregation_noise(method.global_terms(agg.state), starts, agg.used, agg.weights)


def fedplora_rankwise_noise(starts: list[ClientStart], updates: list[ClientUpdate]) -> float:
    """The paper's Fed-PLoRA aggregation noise, ``sum_m ||sum_j (1/|Q_j|) sum_{i in Q_j} (B_ij - B_j)(A_ij - A_j)||_F``.

    By the identity ``(1/|Q|) sum_i (B_i - B)(A_i - A) = mean_i(B_i A_i) - B A`` (B, A the per-slot means),
    its ideal averages each slot's products over the clients that trained that slot.
    """
    by_id = {s.client_id: s for s in starts}
    modules = next(iter(starts)).adapters["main"].keys()
    total = 0.0
    for module in modules:
        inits = [by_id[u.client_id].adapters["main"][module] for u in updates]
        B = torch.cat([u.adapters["main"][module][0].to(F64) for u in updates], 1)  # (d, n): every trained rank
        A = torch.cat([u.adapters["main"][module][1].to(F64) for u in updates], 0)  # (n, k)
        slot = torch.tensor([j for init in inits for j in init.slots], dtype=torch.long)
        count = torch.bincount(slot).to(F64)  # |Q_j|
        B_mean = torch.zeros(B.shape[0], len(count), dtype=F64).index_add_(1, slot, B) / count.clamp_min(1)
        A_mean = torch.zeros(len(count), A.shape[1], dtype=F64).index_add_(0, slot, A) / count.clamp_min(1)[:, None]
        # sum_j (1/|Q_j|) Bc_j Ac_j as one stacked product, never formed densely
        total += frobenius_of_factors((B - B_mean[:, slot]) / count[slot], A - A_mean[slot])
    return total


def module_cosine_similarity(starts: list[ClientStart], updates: list[ClientUpdate], module: ModuleName,
                             rank: int, adapter: str = "main") -> Tensor:
    """``(R, R)`` mean cosine similarity of trained ``A_j`` rows across *pairs of different clients*.

    Entry ``(j, j')`` averages ``cos(A_{i,j}, A_{i',j'})`` over client pairs ``i != i'`` where ``i``
    trained slot ``j`` and ``i'`` trained ``j'`` (the paper's Fig. 2 on the Query module of layer 1).
    NaN where no pair exists.
    """
    by_id = {s.client_id: s for s in starts}
    rows, slots, owners = [], [], []
    for u in updates:
        init = by_id[u.client_id].adapters[adapter][module]
        A = u.adapters[adapter][module][1].to(F64)
        for i, slot in enumerate(init.slots):
            if slot is not None and slot < rank:
                rows.append(A[i] / A[i].norm().clamp_min(1e-300))
                slots.append(slot)
                owners.append(u.client_id)
    sums = torch.zeros(rank, rank, dtype=F64)
    counts = torch.zeros(rank, rank, dtype=F64)
    if rows:  # one Gram matrix of all trained rows; pairs of different clients summed into their (j, j') cell
        unit = torch.stack(rows)
        slot, owner = torch.tensor(slots), torch.tensor(owners)
        other = (owner[:, None] != owner[None, :]).to(F64)
        cell = (slot[:, None] * rank + slot[None, :]).flatten()
        sums.view(-1).index_add_(0, cell, ((unit @ unit.T) * other).flatten())
        counts.view(-1).index_add_(0, cell, other.flatten())
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


def round_bytes(starts: list[ClientStart], updates: list[ClientUpdate]) -> tuple[int, int]:
    """(bytes down, bytes up) of one round, as shipped: ClientStarts and ClientUpdates."""
    by_id = {s.client_id: s for s in starts}
    down = sum(s.nbytes() for s in starts)
    up = sum(u.nbytes(by_id[u.client_id]) for u in updates)
    return down, up


__all__ = [
    "aggregation_noise",
    "fedplora_rankwise_noise",
    "init_noise_function",
    "init_noise_functions",
    "init_noise_param",
    "init_noise_params",
    "module_cosine_similarity",
    "noise_metrics",
    "norms_of_sums",
    "round_aggregation_noise",
    "round_bytes",
]
