"""Exact linear algebra on sums of low-rank products (no dense d x k matrix is formed)."""

from __future__ import annotations

import torch
from torch import Tensor


def factored_svd(B: Tensor, A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD of ``M = B @ A`` from its factors ``B: (d, m)``, ``A: (m, k)``.

    With ``B = Q1 R1`` and ``A^T = Q2 R2`` (reduced QR), ``M = Q1 (R1 R2^T) Q2^T``; the SVD of the small
    core ``R1 R2^T = U' S V'^T`` gives ``M = (Q1 U') S (Q2 V')^T``. Cost ``O((d + k) m^2 + m^3)`` instead of
    a dense ``O(d k min(d, k))`` SVD. Returns ``U: (d, q)``, ``S: (q,)`` descending, ``Vh: (q, k)`` with
    ``q = min(d, k, m)``, computed in float64.
    """
    B64, A64 = B.to(torch.float64), A.to(torch.float64)
    Q1, R1 = torch.linalg.qr(B64)
    Q2, R2 = torch.linalg.qr(A64.T)
    U_core, S, Vh_core = torch.linalg.svd(R1 @ R2.T, full_matrices=False)
    return Q1 @ U_core, S, Vh_core @ Q2.T


def frobenius_of_product(B: Tensor, A: Tensor) -> Tensor:
    """``||B A||_F`` without forming ``B A``: ``sqrt(trace((B^T B)(A A^T)))``."""
    B64, A64 = B.to(torch.float64), A.to(torch.float64)
    return torch.sqrt(torch.clamp(torch.trace((B64.T @ B64) @ (A64 @ A64.T)), min=0.0))


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
