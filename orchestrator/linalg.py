"""Exact linear algebra on sums of low-rank products (no dense d x k matrix is formed)."""

from __future__ import annotations

import math

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
    total drops the term). With no dense term left, the norm comes from the R factor of the stacked
    ``B = [B_1 ... B_T]`` (or of ``A^T = [A_1; ...; A_T]^T``, the shorter side): ``||B A||_F = ||R_B A||_F``
    (orthogonal invariance), exact to float64 rounding even when the sum cancels to ~0, in ``O((d + k) m^2)``.
    Dense terms are summed one block of rows at a time (no ``d x k`` float64 matrix is allocated).
    """
    combined: dict[int, list] = {}
    for W, c in dense:
        entry = combined.setdefault(id(W), [W, 0.0])
        entry[1] += c
    dense_left = [(W, c) for W, c in combined.values() if c != 0.0]
    if dense_left:
        B = A = None
        if low_rank:
            B = torch.cat([b.to(torch.float64) for b, _ in low_rank], 1)
            A = torch.cat([a.to(torch.float64) for _, a in low_rank], 0)
        return _dense_norm(dense_left, B, A)
    if not low_rank:
        return 0.0
    B = torch.cat([b.to(torch.float64) for b, _ in low_rank], 1)
    A = torch.cat([a.to(torch.float64) for _, a in low_rank], 0)
    return _qr_norm(B, A)


DENSE_BLOCK = 1 << 18  # float64 entries per row block of a dense sum (2 MiB: stays in cache)


def _dense_norm(dense: list[tuple[Tensor, float]], B: Tensor | None, A: Tensor | None) -> float:
    """``||sum_u c_u W_u + B A||_F`` in float64, formed one block of rows at a time.

    Each block ``sum_u c_u W_u[rows] + B[rows] A`` is formed in float64 in two reused buffers and its squared
    norm added; a block holds about ``DENSE_BLOCK`` entries, so no ``d x k`` float64 matrix is allocated and the
    block stays in the cache between the additions (the same sums as the whole-matrix form, row by row).
    """
    d, k = dense[0][0].shape
    step = min(d, max(1, DENSE_BLOCK // max(k, 1)))
    acc = torch.empty(step, k, dtype=torch.float64)
    tmp = torch.empty(step, k, dtype=torch.float64) if len(dense) > 1 else acc
    square = 0.0
    for r0 in range(0, d, step):
        r1 = min(d, r0 + step)
        a, t = acc[: r1 - r0], tmp[: r1 - r0]
        (W0, c0), rest = dense[0], dense[1:]
        a.copy_(W0[r0:r1])
        if c0 != 1.0:
            a.mul_(c0)
        for W, c in rest:
            t.copy_(W[r0:r1])
            a.add_(t, alpha=c)
        if B is not None:
            a.addmm_(B[r0:r1], A)
        square += float(torch.linalg.vector_norm(a)) ** 2
    return math.sqrt(square)


EPS64 = float(torch.finfo(torch.float64).eps)
ZERO_PIECE = -1  # the index :meth:`PieceUnion.add` gives a piece that is the zero matrix
GRAM_REL_TOL = 1e-8  # largest estimated relative rounding error of ||X||_F^2 the Gram route may report


class PieceUnion:
    """Norms of many sums of rank-1 pieces ``X = sum_t c_t b_t a_t`` that share pieces, from Gram matrices.

    Every low-rank term ``(B: (d, r), A: (r, k))`` is split into its ``r`` pieces ``(b_t, a_t)`` (a column of
    ``B``, the matching row of ``A``). A piece bitwise identical to one already held (same dtype, same values;
    e.g. Fed-PLoRA's folded slots and its clients' starting factors are copies of the global slots) is the
    same piece, so coefficients of copies add exactly (``c b a - c b a = 0``, no rounding). With
    ``H = (B_u^T B_u) * (A_u A_u^T)`` (elementwise product of the ``M x M`` Gram matrices of the ``M`` distinct
    pieces, float64, computed once for every sum):

        ``||sum_t c_t b_t a_t||_F^2 = sum_{s,t} c_s c_t (b_s . b_t)(a_s . a_t) = c^T H c``

    (``||X||_F^2 = tr(X^T X)``), in ``O((d + k) M^2)`` once plus ``O(M^2)`` per sum, instead of ``O(d k)``.
    The Gram route loses relative accuracy when the sum nearly cancels (rounding of about ``(sqrt(d + k) + M)
    eps S^2`` with ``S = sum_t |c_t| ||b_t|| ||a_t||``); when that estimate exceeds ``GRAM_REL_TOL`` of the
    value, the sum is recomputed from one QR factor of its pieces (``||B A||_F = ||R_B A||_F``, exact to float64
    rounding even when the sum cancels), so every returned norm is accurate to float64 rounding.
    """

    def __init__(self, d: int, k: int):
        self.d, self.k = d, k
        self._keys: dict[tuple, list[int]] = {}
        self._raw: list[tuple[Tensor, Tensor]] = []  # the pieces as given (bitwise comparison)
        self._where: list[tuple[int, int]] = []  # piece -> (its block, its column in the block's B)
        self._terms: dict[tuple[int, int], tuple[Tensor, Tensor, Tensor]] = {}  # (id B, id A) -> (B, A, indices)
        self._blocks: list[tuple[Tensor, Tensor, Tensor]] = []  # (B, A, columns that brought new pieces)
        self._H: Tensor | None = None
        self._Bu = self._Au = torch.zeros(0)

    def add(self, B: Tensor, A: Tensor) -> Tensor:
        """Indices ``(r,)`` of the pieces of ``B @ A`` in the union (copies of held pieces reuse their index).

        A zero piece (its column of ``B`` or its row of ``A`` is all zeros, e.g. LoRA's ``B = 0`` init) adds
        nothing to any sum. When the whole ``B`` or ``A`` is zero, its pieces get the index ``ZERO_PIECE`` and no
        row in the Gram matrices; a single zero column or row has a zero Gram diagonal and drops out in :meth:`norm`.
        """
        if B.shape[0] != self.d or A.shape[1] != self.k or B.shape[1] != A.shape[0]:
            raise ValueError(f"term B {tuple(B.shape)} / A {tuple(A.shape)} does not fit ({self.d}, {self.k})")
        seen = self._terms.get((id(B), id(A)))
        if seen is not None and seen[0] is B and seen[1] is A:  # the same tensors again (a shared global delta)
            return seen[2]
        idx = self._add_pieces(B, A)
        self._terms[(id(B), id(A))] = (B, A, idx)
        return idx

    def _add_pieces(self, B: Tensor, A: Tensor) -> Tensor:
        fb, fa = _fingerprints(B, 0), _fingerprints(A, 1)  # a zero B (or A) has zero fingerprints: checked then
        if (not any(fb) and not bool(B.any())) or (not any(fa) and not bool(A.any())):
            return torch.full((B.shape[1],), ZERO_PIECE, dtype=torch.long)  # every piece is the zero matrix
        keys = [(B.dtype, A.dtype, *key) for key in zip(fb, fa)]
        copied = self._copy_of_held(B, A, keys)
        if copied is not None:
            return copied
        out, new_cols = [], []
        for i, key in enumerate(keys):
            b, a = B[:, i], A[i]
            found = next((j for j in self._keys.get(key, ())
                          if torch.equal(self._raw[j][0], b) and torch.equal(self._raw[j][1], a)), None)
            if found is None:
                found = len(self._raw)
                self._raw.append((b, a))
                self._where.append((len(self._blocks), i))
                self._keys.setdefault(key, []).append(found)
                new_cols.append(i)
            out.append(found)
        if new_cols:
            self._blocks.append((B, A, torch.tensor(new_cols, dtype=torch.long)))
            self._H = None
        return torch.tensor(out, dtype=torch.long)

    def _copy_of_held(self, B: Tensor, A: Tensor, keys: list[tuple]) -> Tensor | None:
        """The indices of ``B @ A``'s pieces when the whole term is a bitwise copy of held pieces of one block.

        One comparison of the term against the block's columns (e.g. a client's slots copied from the global
        factors) instead of one per piece; ``None`` when any piece is not such a copy (then pieces are matched
        one by one).
        """
        first = [self._keys.get(key, [-1])[0] for key in keys]
        if -1 in first or len({self._where[j][0] for j in first}) != 1:
            return None
        block_B, block_A, _ = self._blocks[self._where[first[0]][0]]
        cols = torch.tensor([self._where[j][1] for j in first], dtype=torch.long)
        if torch.equal(B, block_B.index_select(1, cols)) and torch.equal(A, block_A.index_select(0, cols)):
            return torch.tensor(first, dtype=torch.long)
        return None

    def __len__(self) -> int:
        return len(self._raw)

    def gram(self) -> Tensor:
        """``H = (B_u^T B_u) * (A_u A_u^T)``, ``(M, M)`` float64."""
        if self._H is None:  # pieces in index order: blocks in the order they were added
            M = len(self)
            self._Bu = torch.empty(self.d, M, dtype=torch.float64)  # (d, M)
            self._Au = torch.empty(M, self.k, dtype=torch.float64)  # (M, k)
            at = 0
            for B, A, c in self._blocks:  # each block converted to float64 in place, one pass
                n = len(c)
                whole = n == B.shape[1]
                self._Bu[:, at:at + n].copy_(B if whole else B.index_select(1, c))
                self._Au[at:at + n].copy_(A if whole else A.index_select(0, c))
                at += n
            self._H = (self._Bu.T @ self._Bu) * (self._Au @ self._Au.T)
        return self._H

    def norm(self, terms: list[tuple[Tensor, float]]) -> float:
        """``||sum c * (pieces idx)||_F`` for ``terms = [(idx, c), ...]`` (indices from :meth:`add`)."""
        c = torch.zeros(len(self), dtype=torch.float64)
        for idx, coeff in terms:
            idx = idx[idx != ZERO_PIECE]
            c.index_add_(0, idx, torch.full((len(idx),), float(coeff), dtype=torch.float64))
        nz = torch.nonzero(c).flatten()
        if len(nz) == 0:
            return 0.0
        nz = nz[self.gram().diagonal()[nz] > 0]  # a zero piece (b = 0 or a = 0) adds nothing
        if len(nz) == 0:
            return 0.0
        every = len(nz) == len(self)  # no gathered copies when every held piece is in the sum
        H = self.gram() if every else self.gram()[nz][:, nz]
        cn = c[nz]
        value = _trusted_gram_value(cn @ H @ cn, cn.abs() * H.diagonal().clamp_min(0).sqrt(), self.d + self.k)
        if value is not None:
            return value
        return _qr_norm(self._Bu if every else self._Bu[:, nz], self._Au if every else self._Au[nz], cn)


def frobenius_of_factors(B: Tensor, A: Tensor) -> float:
    """``||B A||_F`` (``B: (d, m)``, ``A: (m, k)``) from ``sum((B^T B) * (A A^T))``, float64.

    The Gram route of :class:`PieceUnion` for one stacked pair (no piece matching): ``O((d + k) m^2)``; QR
    fallback when the estimated rounding exceeds ``GRAM_REL_TOL`` of the value.
    """
    B64, A64 = B.to(torch.float64), A.to(torch.float64)
    if B64.shape[1] == 0:
        return 0.0
    H = (B64.T @ B64) * (A64 @ A64.T)
    value = _trusted_gram_value(H.sum(), H.diagonal().clamp_min(0).sqrt(), B64.shape[0] + A64.shape[1])
    return value if value is not None else _qr_norm(B64, A64)


def _trusted_gram_value(square: Tensor, piece_norms: Tensor, d_plus_k: int) -> float | None:
    """``sqrt(square)`` when its estimated rounding ``(sqrt(d + k) + m) eps S^2`` is within ``GRAM_REL_TOL``."""
    value, S = float(square), float(piece_norms.sum())
    bound = (math.sqrt(d_plus_k) + len(piece_norms)) * EPS64 * S * S
    if value == 0.0 and S == 0.0:
        return 0.0
    return math.sqrt(value) if value > 0 and bound <= GRAM_REL_TOL * value else None


def _qr_norm(B: Tensor, A: Tensor, c: Tensor | None = None) -> float:
    """``||B diag(c) A||_F`` from one QR factorization: ``||B C A||_F = ||(R_B C) A||_F`` with ``B = Q_B R_B``.

    The R factor of the shorter side (``B: (d, m)`` when ``d <= k``, else ``A^T``, with
    ``||B C A||_F = ||B (C R_A^T)||_F``) and the ``m x k`` (or ``d x m``) product formed explicitly: the
    cancellation happens in its entries, to float64 rounding, in ``O((d + k) m^2)`` with one QR instead of the
    two of the symmetric form ``||R_B C R_A^T||_F``. ``c`` (default ones) scales the ``m x m`` factor only.
    """
    if B.shape[0] <= A.shape[1]:
        R = torch.linalg.qr(B, mode="r")[1]
        return float(((R if c is None else R * c) @ A).norm())
    Rt = torch.linalg.qr(A.T, mode="r")[1].T
    return float((B @ (Rt if c is None else c[:, None] * Rt)).norm())


def _fingerprints(t: Tensor, dim: int, samples: int = 64) -> list[int]:
    """Integer sums of the bit patterns of up to ``samples`` evenly spaced entries along ``dim``, per slice.

    Bitwise-equal slices give equal fingerprints (a candidate key only: matches are confirmed with
    ``torch.equal``, so a collision costs a comparison, never a wrong merge).
    """
    n = t.shape[dim]
    if n > samples:
        t = t.index_select(dim, torch.linspace(0, n - 1, samples).long())
    ints = {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.contiguous().view(ints).sum(dim, dtype=torch.int64).tolist()
