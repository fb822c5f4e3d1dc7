"""FlexLoRA: SVD redistribution of the full-size aggregate (Bai et al., NeurIPS 2024, arXiv 2402.11505).

The server keeps ``dW_g = sum_i p_i s B_i A_i`` (data-size weights by default; the official code) and
hands client i of rank r the best rank-r approximation (Eckart-Young): ``B = U_r S_r / s``,
``A = V_r^T`` -- all singular values in B, as the official ``distribute_weight_fast``. ``W0`` is never
modified, and the evaluated model is ``W0 + dW_g`` (dense, as the official code saves it).

``dW_g`` is stored exactly as its SVD factors ``(U S / s, V^T)`` of rank ``q <= sum_i r_i``, computed from
the stacked client factors by :func:`orchestrator.linalg.factored_svd` (no dense d x k SVD). Before the
first aggregation the state is the standard LoRA init of rank R (A random, B = 0). When ``dW_g`` has fewer
components than a client's rank, the extra ranks start fresh (A Kaiming-uniform, B = 0), so they can learn.

Server optimizer: the parameters are the dense ``dW_g = s B A: (d, k)`` (and the head). The SVD factors
are no parameters (their basis and rank change every round, so factor differences mean nothing); the
stepped ``dW_g`` (full rank in general) is stored as its thin SVD, ``B = U S / s``, ``A = V^T``, truncated
to its numerical rank at the state's float32 precision (:func:`numerical_rank`), so clients still get
its best rank-``r`` approximation and ``W0 + dW_g`` is evaluated.
"""

from __future__ import annotations

import math

import torch

from core.wire import AdapterInit, ClientStart
from orchestrator.linalg import factored_svd
from orchestrator.methods.base import FactoredMethod, Pair
from orchestrator.methods.registry import register
from orchestrator.state import HEAD_PREFIX, GlobalState


@register
class FlexLoRA(FactoredMethod):
    """Weighted sum of products, redistributed by truncated SVD."""

    name = "flexlora"
    default_weighting = "data"

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        r = common.rank
        adapters = {}
        for m in self.modules:
            B, A = self.factors(state, m)
            held = min(r, A.shape[0])
            init = self.slot_adapter(state, m, list(range(held)))
            if held < r:
                extra = r - held
                A_new = self.fresh_A(extra, m, "fresh", round_idx, client_id)
                init = AdapterInit(torch.cat([init.B, torch.zeros(B.shape[0], extra)], 1),
                                   torch.cat([init.A, A_new], 0), self.scale,
                                   slots=init.slots + (None,) * extra)
            adapters[m] = init
        return ClientStart(fold={}, adapters={"main": adapters}, **common.fields())

    def server_parameters(self, state: GlobalState) -> dict[str, torch.Tensor]:
        """``dW_g = s B A: (d, k)`` per module in float64, plus the head."""
        params = {f"{m}/dW": self.scale * (B.double() @ A.double())
                  for m, (B, A) in ((m, self.factors(state, m)) for m in self.modules)}
        params.update({k: v for k, v in state.tensors.items() if k.startswith(HEAD_PREFIX)})
        return params

    def with_server_parameters(self, state: GlobalState, params: dict[str, torch.Tensor]) -> GlobalState:
        """Each stepped ``dW_g`` stored as its thin SVD factors (``s B A = dW_g``); the head as it is."""
        new = state.copy()
        for key, value in params.items():
            if key.startswith(HEAD_PREFIX):
                new.tensors[key] = value
                continue
            m = key[: -len("/dW")]
            U, S, Vh = torch.linalg.svd(value.double() / self.scale, full_matrices=False)
            q = max(1, numerical_rank(S, max(value.shape)))
            new.tensors[f"{m}/B"] = (U[:, :q] * S[:q]).to(torch.float32)
            new.tensors[f"{m}/A"] = Vh[:q].to(torch.float32).contiguous()
        return new

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        """The SVD of the weighted sum; ``info["agg_noise"]``: per module, what storing its factors in float32 loses.

        ``s Bs As = s (U S) V^T`` is the ideal ``sum_i p_i s B_i A_i`` (to float64 rounding), so the aggregation
        noise is ``s ||(U S) V^T - fl32(U S) fl32(V^T)||_F`` (:func:`svd_rounding_noise`, from ``q x q`` products).
        """
        weights = self.client_weights(pairs)
        new = state.copy()
        noise = {}
        for m in self.modules:
            Bs = torch.cat([u.adapters["main"][m][0].double() * weights[s.client_id] for s, u in pairs], 1)
            As = torch.cat([u.adapters["main"][m][1].double() for _, u in pairs], 0)
            U, S, Vh = factored_svd(Bs, As)  # s * Bs @ As = dW_g; keep the scale outside the factors
            US = U * S
            new.tensors[f"{m}/B"] = US.to(torch.float32)
            new.tensors[f"{m}/A"] = Vh.to(torch.float32).contiguous()
            value = svd_rounding_noise(US, Vh, new.tensors[f"{m}/B"], new.tensors[f"{m}/A"])
            if value is None:  # the rounding terms cancel: left to the metrics' own computation
                return new, weights
            noise[m] = self.scale * value
        return new, weights, {"agg_noise": noise}


def numerical_rank(S: torch.Tensor, size: int) -> int:
    """Singular values above ``S_1 * size * eps_float32`` (numpy's ``matrix_rank`` rule at float32 precision).

    Smaller ones are rounding noise of a float32 state: kept, they would hand clients arbitrary
    directions instead of fresh ranks (FlexLoRA's rank-deficient case).
    """
    if S.numel() == 0 or float(S[0]) == 0.0:
        return 0
    return int((S > S[0] * size * torch.finfo(torch.float32).eps).sum())


def svd_rounding_noise(US: torch.Tensor, Vh: torch.Tensor, B: torch.Tensor, A: torch.Tensor) -> float | None:
    """``||US Vh - B A||_F`` (float64) where ``Vh: (q, k)`` has orthonormal rows and ``B, A`` round ``US, Vh``.

    With ``dB = US - B`` and ``dA = Vh - A``, ``US Vh - B A = dB Vh + B dA``; as ``Vh Vh^T = I``,
    ``||.||_F^2 = ||dB||_F^2 + 2 tr((dB^T B)(dA Vh^T)) + tr((B^T B)(dA dA^T))``: ``q x q`` products only,
    ``O((d + k) q^2)``, no ``d x k`` matrix. ``None`` when the three terms nearly cancel (the square is below
    ``1e-6`` of their magnitudes), where this form would lose digits.
    """
    B64, A64 = B.to(torch.float64), A.to(torch.float64)
    dB, dA = US - B64, Vh - A64
    first = float((dB * dB).sum())
    cross = 2.0 * float(torch.trace((dB.T @ B64) @ (dA @ Vh.T)))
    last = float(torch.trace((B64.T @ B64) @ (dA @ dA.T)))
    square = first + cross + last
    if square <= 1e-6 * (first + abs(cross) + last):
        return None if first + last > 0 else 0.0
    return math.sqrt(square)
