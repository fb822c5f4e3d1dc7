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
  after HETLoRA's pruning); ``dW_new`` is the new global delta. For
  Fed-PLoRA this differs from the paper's rank-wise form when some slot is not trained by every client
  (reference notes section 5, caveat 3); that form is :func:`fedplora_rankwise_noise`.
- Per-round values are sums over the round's clients (init noise, as the paper's ``sum_{i in [v]}``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from core.wire import ClientStart, ClientUpdate, Delta, LowRankDelta, ModuleName
from orchestrator.linalg import frobenius_of_sum

F64 = torch.float64


def init_noise_function(global_delta: dict[ModuleName, Delta], start: ClientStart) -> float:
    """``sum_m ||dW_global,m - dW_start,m||_F`` for one client (factored; see :func:`frobenius_of_sum`)."""
    total = 0.0
    for module, delta in global_delta.items():
        low_rank, dense = [], []
        _add_term(delta, 1.0, low_rank, dense)
        if module in start.fold:
            _add_term(start.fold[module], -1.0, low_rank, dense)
        for name in start.upload:
            init = start.adapters.get(name, {}).get(module)
            if init is not None:
                _add_term(init.as_delta(), -1.0, low_rank, dense)
        total += frobenius_of_sum(low_rank, dense)
    return total


def _add_term(delta: Delta, coeff: float, low_rank: list, dense: list) -> None:
    """Append ``coeff * delta`` as factors ``(coeff * scale * B, A)`` or as a dense ``(W, coeff)``."""
    if isinstance(delta, LowRankDelta):
        low_rank.append((delta.B.to(F64) * (coeff * delta.scale), delta.A))
    else:
        dense.append((delta.W, coeff))


def init_noise_param(global_factors: dict[ModuleName, tuple[Tensor, Tensor]] | None,
                     start: ClientStart) -> float | None:
    """The paper's rank-wise ``sum_m ||A_g (-) A_i||_F + ||B_g (-) B_i||_F`` for one client."""
    if global_factors is None:
        return None
    total = 0.0
    for module, (Bg, Ag) in global_factors.items():
        Bg, Ag = Bg.to(F64), Ag.to(F64)
        B_pad, A_pad = torch.zeros_like(Bg), torch.zeros_like(Ag)
        fresh_B, fresh_A = [], []
        for name in start.upload:
            init = start.adapters.get(name, {}).get(module)
            if init is None:
                continue
            for i, slot in enumerate(init.slots or range(init.rank)):
                if slot is None or slot >= Ag.shape[0]:
                    fresh_B.append(init.B[:, i].to(F64))
                    fresh_A.append(init.A[i].to(F64))
                else:
                    B_pad[:, slot], A_pad[slot] = init.B[:, i].to(F64), init.A[i].to(F64)
        for slot in start.folded_slots.get(module, ()):
            B_pad[:, slot], A_pad[slot] = Bg[:, slot], Ag[slot]
        dA = (Ag - A_pad).norm() ** 2 + sum(float(a.norm() ** 2) for a in fresh_A)
        dB = (Bg - B_pad).norm() ** 2 + sum(float(b.norm() ** 2) for b in fresh_B)
        total += float(torch.sqrt(torch.as_tensor(dA))) + float(torch.sqrt(torch.as_tensor(dB)))
    return total


def aggregation_noise(new_global: dict[ModuleName, Delta], starts: list[ClientStart],
                      updates: list[ClientUpdate], weights: dict[int, float]) -> float:
    """``sum_m ||sum_i p_i (fold_i + s B_i A_i) - dW_new||_F`` (factored; see :func:`frobenius_of_sum`)."""
    by_id = {s.client_id: s for s in starts}
    total = 0.0
    for module, delta in new_global.items():
        low_rank, dense = [], []
        _add_term(delta, -1.0, low_rank, dense)
        for u in updates:
            start, p = by_id[u.client_id], weights[u.client_id]
            if module in start.fold:
                _add_term(start.fold[module], p, low_rank, dense)
            for name in start.upload:
                if module in u.adapters.get(name, {}):
                    B, A = u.adapters[name][module]
                    low_rank.append((B.to(F64) * (p * start.adapters[name][module].scale), A))
        total += frobenius_of_sum(low_rank, dense)
    return total


def noise_metrics(method: Any, old_state: Any, starts: list[ClientStart], agg: Any) -> dict[str, float]:
    """One round's noise metrics: ``init_noise_fn``, ``init_noise_param``, ``agg_noise`` and the method's extras.

    ``method`` is a :class:`~orchestrator.methods.base.FederatedMethod`, ``old_state`` the state the round
    started from and ``agg`` its :class:`~orchestrator.state.Aggregation`. The aggregation noise uses the
    updates as the server aggregated them (``agg.used``, e.g. HETLoRA's pruned adapters), not as uploaded.
    """
    glob, factors = method.global_delta(old_state), method.global_factors(old_state)
    out = {"init_noise_fn": sum(init_noise_function(glob, s) for s in starts)}
    params = [init_noise_param(factors, s) for s in starts]
    out["init_noise_param"] = float("nan") if None in params else sum(params)  # type: ignore[arg-type]
    out["agg_noise"] = aggregation_noise(method.global_delta(agg.state), starts, agg.used, agg.weights)
    out.update(method.extra_noise(starts, agg.used))
    return out


def fedplora_rankwise_noise(starts: list[ClientStart], updates: list[ClientUpdate]) -> float:
    """The paper's Fed-PLoRA aggregation noise, ``sum_m ||sum_j (1/|Q_j|) sum_{i in Q_j} (B_ij - B_j)(A_ij - A_j)||_F``.

    By the identity ``(1/|Q|) sum_i (B_i - B)(A_i - A) = mean_i(B_i A_i) - B A`` (B, A the per-slot means),
    its ideal averages each slot's products over the clients that trained that slot.
    """
    by_id = {s.client_id: s for s in starts}
    modules = next(iter(starts)).adapters["main"].keys()
    total = 0.0
    for module in modules:
        per_slot: dict[int, list[tuple[Tensor, Tensor]]] = {}
        for u in updates:
            init = by_id[u.client_id].adapters["main"][module]
            B, A = u.adapters["main"][module]
            for i, slot in enumerate(init.slots):
                per_slot.setdefault(slot, []).append((B[:, i].to(F64), A[i].to(F64)))
        acc = None
        for pieces in per_slot.values():
            Bs = torch.stack([b for b, _ in pieces], 1)  # (d, q)
            As = torch.stack([a for _, a in pieces], 0)  # (q, k)
            Bc, Ac = Bs - Bs.mean(1, keepdim=True), As - As.mean(0, keepdim=True)
            term = (Bc @ Ac) / len(pieces)
            acc = term if acc is None else acc + term
        total += float(acc.norm()) if acc is not None else 0.0
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
    "init_noise_param",
    "module_cosine_similarity",
    "noise_metrics",
    "round_bytes",
]
