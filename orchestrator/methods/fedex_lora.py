"""FedEx-LoRA: exact aggregation (Singhal, Ponkshe, Vepakomma; NAACL 2025, arXiv 2410.09432).

Homogeneous ranks (the paper's setting). Every client trains the global rank-r adapter ``(B, A)`` on the
frozen ``W0 + dW``; the server averages the factors as FedIT, ``B' = sum_i p_i B_i``, ``A' = sum_i p_i A_i``,
and folds the exact residual of that average into the frozen weights (the paper's exact aggregation):

    dW <- dW + s (sum_i p_i B_i A_i - B' A')

so the new global model ``W0 + dW + s B' A'`` equals ``W0 + dW_old + s sum_i p_i B_i A_i``, the average of
the clients' models, exactly (up to the float32 rounding of the stored ``dW``). Weights: ``uniform``
(default; the paper's ``1/k`` and the official code's plain mean) or ``data``. The residual is computed in
float64 from the stored (rounded) ``B'``, ``A'``. The client's fold is the dense ``dW`` (O(dk) downlink,
as FLoRA); its start-of-round function is the global model. The evaluated delta is ``dW + s B A``
(dense, rounded to float32); the noise metrics take it as its two terms (``global_terms``). With one
client per round the residual is exactly zero and FedEx-LoRA is FedIT.
"""

from __future__ import annotations

import torch

from core.wire import ClientStart, DenseDelta, LowRankDelta
from orchestrator.methods.base import rounded_with_noise
from orchestrator.methods.fedit import FedIT, average_slots
from orchestrator.methods.registry import register
from orchestrator.state import HEAD_PREFIX, GlobalState

F64 = torch.float64


@register
class FedExLoRA(FedIT):
    """FedIT's factor average plus the exact residual folded into the frozen weights."""

    name = "fedex_lora"
    default_weighting = "uniform"

    def init_adapters(self) -> GlobalState:
        state = super().init_adapters()
        for m, spec in self.modules.items():
            state.tensors[f"{m}/dW"] = torch.zeros(spec.d_out, spec.k_in)
        return state

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        slots = list(range(self.global_rank))
        adapters = {m: self.slot_adapter(state, m, slots) for m in self.modules}
        fold = {m: DenseDelta(state.tensors[f"{m}/dW"]) for m in self.modules}
        common = self.start_common(state, client_id, round_idx)
        return ClientStart(fold=fold, adapters={"main": adapters}, **common.fields())

    def aggregate_adapters(self, state: GlobalState, pairs):
        """FedIT's average and the residual fold; ``info["agg_noise"]``: per module, the float32 rounding of ``dW``.

        With the global as its terms ``dW + s B' A'``, ``ideal - global = (dW_old + s residual) - dW_new``: the
        float64 sum formed here minus its stored float32 value (:func:`rounded_with_noise`).
        """
        weights = self.client_weights(pairs)
        new = average_slots(self, state, pairs, weights)
        noise = {}
        for m in self.modules:
            ideal = torch.zeros_like(state.tensors[f"{m}/dW"], dtype=F64)
            for start, update in pairs:
                B, A = update.adapters["main"][m]
                ideal.addmm_(B.to(F64), A.to(F64), alpha=weights[start.client_id])
            B_new, A_new = self.factors(new, m)
            residual = ideal - B_new.to(F64) @ A_new.to(F64)
            dW_old = state.tensors[f"{m}/dW"]
            # out of place: ``.to(float64)`` of a float64 state is the state's own tensor
            dW = torch.add(dW_old.to(F64), residual, alpha=self.scale)
            new.tensors[f"{m}/dW"], noise[m] = rounded_with_noise(dW, dW_old.dtype)
        return new, weights, {"agg_noise": noise}

    def server_parameters(self, state: GlobalState) -> dict[str, torch.Tensor]:
        """What a server optimizer steps: the global model's dense delta ``dW + s B A`` per module, and the head.

        The method's aggregate is the exact average of the clients' models in function space, so its
        pseudo-gradient is taken there (as FLoRA's ``dW``); :meth:`with_server_parameters` keeps ``B, A`` at the
        clients' averages and puts the optimizer's correction into the fold ``dW``.
        """
        params = {f"{m}/effective": delta.W for m, delta in self.global_delta(state).items()}
        params.update({k: v for k, v in state.tensors.items() if k.startswith(HEAD_PREFIX)})
        return params

    def with_server_parameters(self, state: GlobalState, params: dict[str, torch.Tensor]) -> GlobalState:
        """``dW <- effective - s B A`` (float64, then float32) with ``B, A`` unchanged; the head as stepped."""
        new = state.copy()
        for m in self.modules:
            B, A = self.factors(state, m)
            dW = torch.addmm(params[f"{m}/effective"].to(F64), B.to(F64), A.to(F64), alpha=-self.scale)
            new.tensors[f"{m}/dW"] = dW.to(state.tensors[f"{m}/dW"].dtype)
        new.tensors.update({k: v for k, v in params.items() if k.startswith(HEAD_PREFIX)})
        return new

    def global_terms(self, state):
        """``(dW, s B A)`` per module: the evaluated delta before its float32 rounding.

        The clients' fold is the same ``dW`` tensor and their adapters start from the same ``B, A``, so the
        function-space init noise cancels exactly, with no dense ``d x k`` sum.
        """
        return {m: (DenseDelta(state.tensors[f"{m}/dW"]), LowRankDelta(*self.factors(state, m), self.scale))
                for m in self.modules}

    def global_delta(self, state):
        out = {}
        for m in self.modules:
            B, A = self.factors(state, m)
            dW = state.tensors[f"{m}/dW"]
            dense = torch.addmm(dW.to(F64), B.to(F64), A.to(F64), alpha=self.scale)
            out[m] = DenseDelta(dense.to(dW.dtype))
        return out
