"""pFedLoRA: model-heterogeneous personalized FL with LoRA tuning (Yi et al., arXiv 2310.13283).

Reading implemented (the paper's exact architecture is not public, see reference/baselines-notes.md 3.2;
reading (a)): each client keeps a *private* adapter of its own rank ``r_i`` on the target modules (its
heterogeneous local model; never uploaded, persistent client state kept on the client's behalf) and
shares a small *homogeneous* adapter of rank ``r_s`` (``pfedlora_shared_rank``, default the smallest
client rank). Both are active: the client's model is ``W0 + s B_p A_p + s B_s A_s``. Local schedule
(the paper's iterative global-local knowledge exchange): stage 1 freezes the shared adapter and trains
the private one (``pfedlora_private_fraction`` of the local steps), stage 2 freezes the private adapter and
trains the shared one (the rest). Only the shared adapter is uploaded and averaged (data-size weights,
FedAvg). The global model is ``W0 + s B_s A_s``; the personalized model of client i adds its private
adapter. A private adapter starts as a standard LoRA init (A from the stream (seed, private, client,
module), B = 0) the first time the client is sampled.
"""

from __future__ import annotations

import torch

from core.wire import AdapterInit, ClientStart, LocalStage, LowRankDelta
from orchestrator.methods.base import FactoredMethod, Pair, slot_average
from orchestrator.methods.registry import register
from orchestrator.state import GlobalState


def private_key(client_id: int, module: str, factor: str) -> str:
    """State key of client ``client_id``'s private factor on ``module``."""
    return f"client/{client_id}/{module}/private/{factor}"


@register
class PFedLoRA(FactoredMethod):
    """Private heterogeneous adapter + shared homogeneous adapter, trained in two stages."""

    name = "pfedlora"
    default_weighting = "data"

    def __init__(self, cfg, modules, client_ranks, global_rank, seed):
        super().__init__(cfg, modules, client_ranks, global_rank, seed)
        self.shared_rank = cfg.pfedlora_shared_rank or min(self.client_ranks)
        if self.shared_rank > global_rank:
            raise ValueError(f"method.pfedlora_shared_rank={self.shared_rank} must be <= max_rank={global_rank}")

    @property
    def state_rank(self) -> int:
        return self.shared_rank

    def private_adapter(self, state: GlobalState, client_id: int, module: str) -> AdapterInit:
        r = self.client_ranks[client_id]
        key_B, key_A = private_key(client_id, module, "B"), private_key(client_id, module, "A")
        if key_B in state.tensors:
            return AdapterInit(state.tensors[key_B], state.tensors[key_A], self.scale)
        A = self.fresh_A(r, module, "private", client_id)
        return AdapterInit(torch.zeros(self.modules[module].d_out, r), A, self.scale, slots=(None,) * r)

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        shared = {m: self.slot_adapter(state, m, list(range(self.shared_rank))) for m in self.modules}
        private = {m: self.private_adapter(state, client_id, m) for m in self.modules}
        f = self.cfg.pfedlora_private_fraction
        stages = (LocalStage(("private",), f), LocalStage(("shared",), 1.0 - f))
        return ClientStart(fold={}, adapters={"private": private, "shared": shared}, upload=("shared",),
                           stages=stages, **common.fields())

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        weights = self.client_weights(pairs)
        new = state.copy()
        slots = list(range(self.shared_rank))
        for m in self.modules:
            B_old, A_old = self.factors(state, m)
            ups = [(u.adapters["shared"][m], weights[s.client_id]) for s, u in pairs]
            new.tensors[f"{m}/B"] = slot_average(B_old, 1, [(slots, B, w) for (B, _), w in ups])
            new.tensors[f"{m}/A"] = slot_average(A_old, 0, [(slots, A, w) for (_, A), w in ups])
            for start, update in pairs:
                B, A = update.adapters["private"][m]
                new.tensors[private_key(start.client_id, m, "B")] = B.detach().to(torch.float32).clone()
                new.tensors[private_key(start.client_id, m, "A")] = A.detach().to(torch.float32).clone()
        return new, weights

    def personal_delta(self, state, client_id):
        if private_key(client_id, next(iter(self.modules)), "B") not in state.tensors:
            return None
        out = {}
        for m in self.modules:  # s [B_s B_p] [A_s; A_p] = s B_s A_s + s B_p A_p
            private = self.private_adapter(state, client_id, m)
            B, A = self.factors(state, m)
            out[m] = LowRankDelta(torch.cat([B, private.B], 1), torch.cat([A, private.A], 0), self.scale)
        return out
