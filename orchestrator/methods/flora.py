"""FLoRA: stacking-based heterogeneous federated LoRA (Wang et al., NeurIPS 2024, arXiv 2409.05976).

Every round each client trains a *fresh* rank-``r_i`` adapter (A Kaiming-uniform from the stream
(seed, round, client, module), B = 0) on top of the current merged global weights
``W0 + dW`` (the fold is the dense ``dW``; O(dk) downlink). The server stacks the updates,
``B_stack = [B_1 ... B_v]``, ``A_stack = [p_1 A_1; ...; p_v A_v]`` (weights on A, as in the official
code), so ``s B_stack A_stack = sum_i p_i s B_i A_i`` exactly, and merges: ``dW <- dW + s B_stack A_stack``.
Weights: ``data`` (official code, default) or ``uniform`` (the Fed-PLoRA paper's 1/v).
The last stacked factors are kept as FLoRA's "global factors" for the rank-wise initialization noise
(the paper's ``sum_i (||A^{t-1}|| + ||B^{t-1}||) + sigma^2``, sec. 3.4).
Server optimizer: the parameters are the dense ``dW`` per module (and the head), so the pseudo-gradient
is the round's merged update ``s B_stack A_stack``; the stacked factors stay those of the aggregate.
"""

from __future__ import annotations

import torch

from core.wire import AdapterInit, ClientStart, DenseDelta
from orchestrator.methods.base import FederatedMethod, Pair, rounded_with_noise
from orchestrator.methods.registry import register
from orchestrator.state import HEAD_PREFIX, GlobalState


@register
class FLoRA(FederatedMethod):
    """Fresh adapters on merged dense weights; exact stacked aggregation."""

    name = "flora"
    default_weighting = "data"

    def init_adapters(self) -> GlobalState:
        return GlobalState({f"{m}/dW": torch.zeros(s.d_out, s.k_in) for m, s in self.modules.items()})

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        r = common.rank
        adapters, fold = {}, {}
        for m, spec in self.modules.items():
            A = self.fresh_A(r, m, "fresh", round_idx, client_id)
            adapters[m] = AdapterInit(torch.zeros(spec.d_out, r), A, self.scale, slots=(None,) * r)
            fold[m] = DenseDelta(state.tensors[f"{m}/dW"])
        return ClientStart(fold=fold, adapters={"main": adapters}, **common.fields())

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        """The stacked merge; ``info["agg_noise"]``: per module, the float32 rounding of the new ``dW``.

        The ideal ``sum_i p_i (dW + s B_i A_i)`` is the float64 ``dW + s B_stack A_stack`` formed here, so the
        aggregation noise is exactly what storing it in float32 loses (:func:`rounded_with_noise`).
        """
        weights = self.client_weights(pairs)
        new = state.copy()
        noise = {}
        for m in self.modules:
            B_stack, A_stack = stack_factors(pairs, m, weights)
            new.tensors[f"{m}/B_stack"] = B_stack.to(torch.float32)
            new.tensors[f"{m}/A_stack"] = A_stack.to(torch.float32)
            # out of place: ``.to(float64)`` of a float64 state is the state's own tensor
            dW = torch.addmm(state.tensors[f"{m}/dW"].to(torch.float64), B_stack, A_stack, alpha=self.scale)
            new.tensors[f"{m}/dW"], noise[m] = rounded_with_noise(dW, torch.float32)
        return new, weights, {"agg_noise": noise}

    def server_parameters(self, state: GlobalState) -> dict[str, torch.Tensor]:
        """The dense ``dW: (d, k)`` of every module, plus the head."""
        params = {f"{m}/dW": state.tensors[f"{m}/dW"] for m in self.modules}
        params.update({k: v for k, v in state.tensors.items() if k.startswith(HEAD_PREFIX)})
        return params

    def global_delta(self, state):
        return {m: DenseDelta(state.tensors[f"{m}/dW"]) for m in self.modules}

    def global_factors(self, state):
        if f"{next(iter(self.modules))}/B_stack" not in state.tensors:
            return None
        return {m: (state.tensors[f"{m}/B_stack"], state.tensors[f"{m}/A_stack"]) for m in self.modules}


def stack_factors(pairs: list[Pair], module: str, weights: dict[int, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``B_stack: (d, sum r)`` and ``A_stack: (sum r, k)`` with ``p_i`` on A, in client-id order (float64)."""
    Bs, As = [], []
    for start, update in pairs:
        B, A = update.adapters["main"][module]
        Bs.append(B.to(torch.float64))
        As.append(A.to(torch.float64) * weights[start.client_id])
    return torch.cat(Bs, dim=1), torch.cat(As, dim=0)
