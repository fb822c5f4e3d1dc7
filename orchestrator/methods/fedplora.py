"""Fed-PLoRA: Parallel One-Rank Adaptation with Select-N-Fold (Zhang, Hu, Xu; ICLR 2026, arXiv 2602.16936).

The global adapter of each target module is R parallel one-rank modules ``s B_j A_j`` (PLoRA, sec. 3.2;
``sum_j B_j A_j = B A``). Each round, for each (client i, module) independently, a set ``K_i`` of
``r_i`` slots is selected (sec. 3.3):

- ``random`` (default): uniform without replacement, from the stream (seed, round, client, module);
- ``fixed``: the first ``r_i`` slots;
- ``weight_norm``: the ``r_i`` slots with the largest ``||s B_j A_j||_F = s ||B_j|| ||A_j||`` (ties by
  slot index; App. D.5.1 leaves the norm open).

Select-N-Fold: the client trains copies of ``(B_j, A_j), j in K_i`` on the frozen
``W0 + sum_{j not in K_i} s B_j A_j``, so its start-of-round function equals the global model (zero
initialization noise). Select-N-Drop (``unselected = drop``, App. D.5.1) omits the fold.
Aggregation: ``A_j = mean_{i in Q_j} A_ij``, ``B_j = mean_{i in Q_j} B_ij`` over the clients ``Q_j`` that
trained slot ``j`` (uniform by default; ``weighting = data`` weights by ``n_i``); a slot nobody trained
keeps its previous value (the paper leaves ``|Q_j| = 0`` open). The global model is ``W0 + s B A``.
With every ``r_i = R`` this is FedIT with uniform weights.
"""

from __future__ import annotations

import torch

from core.rng import generator
from core.wire import ClientStart, ClientUpdate, LowRankDelta
from orchestrator.methods.base import FactoredMethod, Pair
from orchestrator.methods.fedit import average_slots
from orchestrator.methods.registry import register
from orchestrator.metrics import fedplora_rankwise_noise
from orchestrator.state import GlobalState


@register
class FedPLoRA(FactoredMethod):
    """Select-N-Fold over R parallel one-rank modules."""

    name = "fedplora"
    default_weighting = "uniform"

    def select(self, state: GlobalState, client_id: int, round_idx: int, module: str, rank: int) -> list[int]:
        """The slots ``K`` client ``client_id`` trains on ``module`` this round (sorted)."""
        R = self.global_rank
        if rank >= R:
            return list(range(R))
        if self.cfg.selection == "fixed":
            return list(range(rank))
        if self.cfg.selection == "weight_norm":
            B, A = self.factors(state, module)
            norms = (B.double().norm(dim=0) * A.double().norm(dim=1)).tolist()
            return sorted(sorted(range(R), key=lambda j: (-norms[j], j))[:rank])
        perm = torch.randperm(R, generator=generator(self.seed, "select", round_idx, client_id, module))
        return sorted(perm[:rank].tolist())

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        adapters, fold, folded = {}, {}, {}
        for m in self.modules:
            slots = self.select(state, client_id, round_idx, m, common.rank)
            adapters[m] = self.slot_adapter(state, m, slots)
            rest = [j for j in range(self.global_rank) if j not in set(slots)]
            if rest and self.cfg.unselected == "fold":
                B, A = self.factors(state, m)
                idx = torch.tensor(rest, dtype=torch.long)
                fold[m] = LowRankDelta(B.index_select(1, idx), A.index_select(0, idx), self.scale)
                folded[m] = tuple(rest)
        return ClientStart(fold=fold, adapters={"main": adapters}, folded_slots=folded, **common.fields())

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        weights = self.client_weights(pairs)
        return average_slots(self, state, pairs, weights), weights

    def extra_noise(self, starts: list[ClientStart], updates: list[ClientUpdate]) -> dict[str, float]:
        """The paper's rank-wise aggregation noise (``agg_noise_rankwise``), when every rank maps to a slot."""
        if all(None not in a.slots for s in starts for a in s.adapters["main"].values()):
            return {"agg_noise_rankwise": fedplora_rankwise_noise(starts, updates)}
        return {}
