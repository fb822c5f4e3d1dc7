"""The noise metrics as they were before the Gram-matrix route (commit 78c69c8), kept as the benchmark's baseline.

Per client and module: a dense-free sum of low-rank products whose norm comes from the full QR factors of the
stacked factors (``orchestrator.linalg.frobenius_of_sum`` then), the parameter-space noise by explicit zero
padding, Fed-PLoRA's rank-wise noise as dense ``d x k`` products per slot. ``bench_scale.py`` times these
against ``orchestrator.metrics`` on the same round and checks that both give the same values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.wire import ClientStart, ClientUpdate, Delta, LowRankDelta, ModuleName

F64 = torch.float64


def frobenius_of_sum(low_rank: list[tuple[Tensor, Tensor]], dense: list[tuple[Tensor, float]]) -> float:
    """``||sum_t B_t A_t + sum_u c_u W_u||_F`` in float64, without a dense matrix when there are no ``W_u``.

    Dense terms that are the same tensor object are combined first (their coefficients add; a zero
    total drops the term). With no dense term left, the norm comes from the QR factors of the stacked
    ``B = [B_1 ... B_T]`` and ``A^T = [A_1; ...; A_T]^T``: ``||B A||_F = ||R_B R_A^T||_F`` (orthogonal
    invariance), exact to float64 rounding even when the sum cancels to ~0, in ``O((d + k) m^2)``.
    """
    combined: dict[int, list] = {}
    for W, c in dense:
        entry = combined.setdefault(id(W), [W, 0.0])
        entry[1] += c
    dense_left = [(W, c) for W, c in combined.values() if c != 0.0]
    if dense_left:
        acc = torch.zeros(dense_left[0][0].shape, dtype=torch.float64)
        for W, c in dense_left:
            acc.add_(W.to(torch.float64), alpha=c)
        if low_rank:
            B = torch.cat([b.to(torch.float64) for b, _ in low_rank], 1)
            A = torch.cat([a.to(torch.float64) for _, a in low_rank], 0)
            acc.addmm_(B, A)
        return float(acc.norm())
    if not low_rank:
        return 0.0
    B = torch.cat([b.to(torch.float64) for b, _ in low_rank], 1)
    A = torch.cat([a.to(torch.float64) for _, a in low_rank], 0)
    _, R1 = torch.linalg.qr(B)
    _, R2 = torch.linalg.qr(A.T)
    return float((R1 @ R2.T).norm())


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


