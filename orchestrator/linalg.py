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
