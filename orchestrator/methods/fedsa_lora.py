"""FedSA-LoRA: selective aggregation, A shared and B local (Guo et al., ICLR 2025, arXiv 2410.01463).

The paper's finding: the ``A`` matrices learn general knowledge and the ``B`` matrices client-specific
knowledge, so only ``A`` is shared (Fig. 1c). Each round client i trains both
factors of ``W0 + s B_i A`` from the current global ``A`` and its *own* ``B_i`` (its last trained value;
the common LoRA init ``B_i = 0`` before its first round); the server averages the uploaded ``A``:
``A = sum_i p_i A_i`` with ``p_i = n_i / sum n`` (data, default: the official FederatedScope code's
sample-size average) or ``1 / v`` (uniform). ``B_i`` never leaves the client (``AdapterInit.local_B``);
the driver keeps it on the client's behalf as state ``client/<i>/<module>/B``. The personalized model of
client i is ``W0 + s B_i A`` (what it starts its next round from).

Heterogeneous ranks (an extension; the paper uses one rank): client i holds the first ``r_i`` slots of
``A`` and a private ``B_i: (d, r_i)``; slot ``j`` of ``A`` is averaged over the round's clients that hold
it (``slot_average``) and a slot nobody held keeps its value, as FFA-LoRA's B here.

The global state keeps the standard factored layout: ``<module>/A`` is the shared factor and
``<module>/B`` the same per-slot weighted mean of the round's trained ``B_i`` (FedIT's averaging rule
applied to them). That ``B`` is never sent to a client; it only defines the global model ``W0 + s B A``
that the common evaluation and noise metrics use. The paper evaluates the personalized models
(``eval_personal``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from core.wire import ClientStart, LowRankDelta
from orchestrator.methods.base import FactoredMethod, Pair
from orchestrator.methods.fedit import average_slots
from orchestrator.methods.registry import register
from orchestrator.state import HEAD_PREFIX, GlobalState


def local_B_key(client_id: int, module: str) -> str:
    """State key of client ``client_id``'s local ``B`` on ``module``."""
    return f"client/{client_id}/{module}/B"


@register
class FedSALoRA(FactoredMethod):
    """Shared, averaged A; client-local B."""

    name = "fedsa_lora"
    default_weighting = "data"

    def local_B(self, state: GlobalState, client_id: int, module: str) -> torch.Tensor:
        """Client ``client_id``'s ``B: (d, r_i)``: its last trained value, or the LoRA init 0 before its first round."""
        key = local_B_key(client_id, module)
        if key in state.tensors:
            return state.tensors[key]
        return torch.zeros(self.modules[module].d_out, self.client_ranks[client_id])

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        slots = list(range(common.rank))
        adapters = {}
        for m in self.modules:
            shared = self.slot_adapter(state, m, slots)
            adapters[m] = replace(shared, B=self.local_B(state, client_id, m), local_B=True)
        return ClientStart(fold={}, adapters={"main": adapters}, **common.fields())

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        weights = self.client_weights(pairs)
        new = average_slots(self, state, pairs, weights)
        for start, update in pairs:
            for m in self.modules:
                B, _ = update.adapters["main"][m]
                new.tensors[local_B_key(start.client_id, m)] = B.detach().to(torch.float32).clone()
        return new, weights

    def server_parameters(self, state: GlobalState) -> dict[str, torch.Tensor]:
        """What a server optimizer steps: the shared ``A`` of every module and the head.

        Each ``B_i`` is client-local and the global ``B`` exists only to evaluate a global model, so neither is a
        server parameter (``method.server_optimizer``; Reddi et al. 2021 step what the server averages).
        """
        params = {f"{m}/A": state.tensors[f"{m}/A"] for m in self.modules}
        params.update({k: v for k, v in state.tensors.items() if k.startswith(HEAD_PREFIX)})
        return params

    def personal_delta(self, state, client_id):
        """``s B_i A[:r_i]`` per module, once client ``client_id`` has trained (``None`` before)."""
        if local_B_key(client_id, next(iter(self.modules))) not in state.tensors:
            return None
        r = self.client_ranks[client_id]
        return {m: LowRankDelta(self.local_B(state, client_id, m), self.factors(state, m)[1][:r], self.scale)
                for m in self.modules}
