"""RBLA: rank-based LoRA aggregation (Chen, Tavallaie, Nazemi, Zomaya; arXiv 2408.08699, 2024).

Heterogeneous ranks by truncation: client i starts from the first ``r_i`` slots of the global ``(B, A)``
and trains both factors. Instead of zero-padding every upload to rank R and averaging over all clients
(HETLoRA), which shrinks the slots that only high-rank clients hold, RBLA averages each rank slot over
the clients that hold it, with the weights renormalised over those clients:

    B[:, j] = sum_{i: r_i > j} n_i B_i[:, j] / sum_{i: r_i > j} n_i     (A[j, :] likewise)

(``weighting: data``, the default; ``uniform`` uses ``1 / |{i: r_i > j}|``). A slot that no participant
held this round keeps its value. With all ranks equal RBLA is FedIT (FedAvg of the factors).
The evaluated model is ``W0 + s B A`` at rank R.
"""

from __future__ import annotations

from core.wire import ClientStart
from orchestrator.methods.base import FactoredMethod, Pair
from orchestrator.methods.fedit import average_slots
from orchestrator.methods.registry import register
from orchestrator.state import GlobalState


@register
class RBLA(FactoredMethod):
    """Truncate to the client's rank; average every slot over the clients that hold it."""

    name = "rbla"
    default_weighting = "data"

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        slots = list(range(common.rank))
        adapters = {m: self.slot_adapter(state, m, slots) for m in self.modules}
        return ClientStart(fold={}, adapters={"main": adapters}, **common.fields())

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        weights = self.client_weights(pairs)
        return average_slots(self, state, pairs, weights), weights
