"""FFA-LoRA: federated freeze-A LoRA (Sun, Li, Li, Ding; ICLR 2024, arXiv 2403.12313).

``A`` is a shared random init (the server's seeded Kaiming-uniform draw) and stays frozen forever; only
``B`` is trained and averaged: ``B = sum_i p_i B_i`` (data-size weights by default), so
``s B A = sum_i p_i s B_i A`` is exact. Heterogeneous ranks: client i holds the first ``r_i`` slots
(truncation); slot ``j`` of B is averaged over the clients that hold it, and untouched slots keep
their value. Used in the Fed-PLoRA paper's homogeneous comparison (Fig. 3).
Server optimizer: the parameters are the B factors (and the head); the frozen A is not a parameter.
"""

from __future__ import annotations

from core.wire import ClientStart
from orchestrator.methods.base import FactoredMethod, Pair
from orchestrator.methods.fedit import average_slots
from orchestrator.methods.registry import register
from orchestrator.state import GlobalState


@register
class FFALoRA(FactoredMethod):
    """Frozen shared A, averaged B."""

    name = "ffa_lora"
    default_weighting = "data"

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        slots = list(range(common.rank))
        adapters = {m: self.slot_adapter(state, m, slots, train_A=False) for m in self.modules}
        return ClientStart(fold={}, adapters={"main": adapters}, **common.fields())

    def server_parameters(self, state: GlobalState):
        """Every module's ``B: (d, R)`` and the head; ``A`` is a frozen random projection, never stepped."""
        frozen = {f"{m}/A" for m in self.modules}
        return {k: v for k, v in super().server_parameters(state).items() if k not in frozen}

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        weights = self.client_weights(pairs)
        return average_slots(self, state, pairs, weights, average_A=False), weights
