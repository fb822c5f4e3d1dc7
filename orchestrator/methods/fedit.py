"""FedIT: homogeneous federated LoRA (Zhang et al., "Towards Building the Federated GPT", 2024).

Every client trains the global rank-R adapter from its current value; the server averages the factors
separately: ``A = sum_i p_i A_i``, ``B = sum_i p_i B_i`` with ``p_i = n_i / sum n`` (data, default) or
``1 / v`` (uniform). The evaluated model is ``W0 + s B A``. Run as "FedIT (R)" and "FedIT (R/2)" with
``ranks.distribution = homogeneous``. Factor averaging is not the average of products: the cross terms
``p_i p_j B_i A_j`` are FedIT's aggregation noise.
"""

from __future__ import annotations

from core.wire import ClientStart
from orchestrator.methods.base import FactoredMethod, FederatedMethod, Pair, main_slots, slot_average
from orchestrator.methods.registry import register
from orchestrator.state import GlobalState


@register
class FedIT(FactoredMethod):
    """Homogeneous FedAvg of the LoRA factors."""

    name = "fedit"
    default_weighting = "data"
    requires_homogeneous = True

    def __init__(self, cfg, modules, client_ranks, global_rank, seed):
        # FedIT's global rank is the common client rank (R or R/2), not the heterogeneous R.
        rank = client_ranks[0] if client_ranks else global_rank
        super().__init__(cfg, modules, client_ranks, global_rank, seed)
        self.global_rank = rank
        self.scale = cfg.one_rank_scale(rank)

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        slots = list(range(self.global_rank))
        adapters = {m: self.slot_adapter(state, m, slots) for m in self.modules}
        common = self.start_common(state, client_id, round_idx)
        return ClientStart(fold={}, adapters={"main": adapters}, **common.fields())

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        weights = self.client_weights(pairs)
        return average_slots(self, state, pairs, weights), weights


def average_slots(method: FederatedMethod, state: GlobalState, pairs: list[Pair],
                  weights: dict[int, float], average_A: bool = True) -> GlobalState:
    """Per-slot weighted mean of A rows and B columns over the clients that trained each slot."""
    new = state.copy()
    for m in method.modules:
        B_old, A_old = method.factors(state, m)
        ups_B, ups_A = [], []
        for start, update in pairs:
            slots = main_slots(start, m)
            B, A = update.adapters["main"][m]
            ups_B.append((slots, B, weights[start.client_id]))
            ups_A.append((slots, A, weights[start.client_id]))
        new.tensors[f"{m}/B"] = slot_average(B_old, 1, ups_B)
        if average_A:
            new.tensors[f"{m}/A"] = slot_average(A_old, 0, ups_A)
    return new
