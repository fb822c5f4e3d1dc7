"""HETLoRA: heterogeneous LoRA by truncation and zero-padding (Cho et al., EMNLP 2024, arXiv 2401.06432).

- Distribution by truncation: client i (current rank ``r_i``) gets ``B[:, :r_i]``, ``A[:r_i, :]``.
- Rank self-pruning (``hetlora_prune``): the local loss adds
  ``lambda * ||B_tail||_F ||A_tail||_F`` over the tail ranks ``[floor(gamma r_i), r_i)`` of each module;
  after training, if the tail norm product (summed over modules) fell below that of the received
  factors, the client prunes to ``max(min_rank, floor(gamma r_i))`` and uploads the truncated adapter.
  Ranks only shrink; the pruned rank is persistent client state (gamma 0.99, lambda 0.01 by default).
- Sparsity-weighted zero-padded aggregation: ``p_i = ||S_i|| / sum_j ||S_j||`` with
  ``||S_i|| = sum_m ||s B_im A_im||_F`` (one scalar per client, over modules; ``weighting = sparsity``,
  the default), or ``data`` / ``uniform`` weights;
  ``B = sum_i p_i pad(B_i)``, ``A = sum_i p_i pad(A_i)`` over the (pruned) uploads. A slot that no
  participant holds keeps its previous value (plain zero-padding would wipe it). The pruned uploads are
  :meth:`HETLoRA.used_updates`, so the aggregation noise is measured on what the server aggregated.
The evaluated model is ``W0 + s B A`` at rank R.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from core.wire import ClientStart, ClientUpdate, TailPenalty
from orchestrator.linalg import frobenius_of_product
from orchestrator.methods.base import FactoredMethod, Pair, padded_sum
from orchestrator.methods.registry import register
from orchestrator.state import GlobalState


@register
class HETLoRA(FactoredMethod):
    """Truncate to the client's rank, prune the tail, zero-pad and sparsity-weight on the server."""

    name = "hetlora"
    default_weighting = "sparsity"
    weightings = ("sparsity", "data", "uniform")

    def init_adapters(self) -> GlobalState:
        return GlobalState(self.init_factors(self.global_rank), {"ranks": {}})

    def client_rank(self, state: GlobalState, client_id: int) -> int:
        return int(state.meta.get("ranks", {}).get(str(client_id), self.client_ranks[client_id]))

    def tail_start(self, rank: int) -> int:
        return math.floor(self.cfg.hetlora_gamma * rank)

    def client_start(self, state: GlobalState, client_id: int, round_idx: int) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        r = common.rank
        adapters = {m: self.slot_adapter(state, m, list(range(r))) for m in self.modules}
        penalty = None
        if self.cfg.hetlora_prune and self.cfg.hetlora_lambda > 0:
            penalty = TailPenalty(self.cfg.hetlora_lambda, {m: self.tail_start(r) for m in self.modules})
        return ClientStart(fold={}, adapters={"main": adapters}, penalty=penalty, **common.fields())

    def tail_norm(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], start: int) -> float:
        """``sum_m ||B_m[:, start:]||_F ||A_m[start:, :]||_F``."""
        return sum(float(B[:, start:].double().norm() * A[start:, :].double().norm())
                   for B, A in factors.values())

    def pruned_rank(self, start: ClientStart, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
        """The client's rank after its self-pruning decision (unchanged when pruning is off)."""
        r = start.rank
        if not self.cfg.hetlora_prune:
            return r
        s = self.tail_start(r)
        received = {m: (a.B, a.A) for m, a in start.adapters["main"].items()}
        if self.tail_norm(factors, s) < self.tail_norm(received, s):
            return max(self.cfg.hetlora_min_rank, s)
        return r

    def aggregate_adapters(self, state: GlobalState, pairs: list[Pair]):
        new = state.copy()
        ranks = dict(state.meta.get("ranks", {}))
        kept: dict[int, int] = {}
        for start, update in pairs:
            kept[start.client_id] = self.pruned_rank(start, update.adapters["main"])
            ranks[str(start.client_id)] = kept[start.client_id]
        new.meta["ranks"] = ranks
        if self.weighting == "sparsity":
            weights = sparsity_weights(pairs, kept, self.scale)
        else:
            weights = self.client_weights(pairs)
        used = self.used_updates(new, pairs)
        for m in self.modules:
            B_old, A_old = self.factors(state, m)
            ups_B, ups_A = [], []
            for update in used:
                B, A = update.adapters["main"][m]
                slots = list(range(A.shape[0]))
                ups_B.append((slots, B, weights[update.client_id]))
                ups_A.append((slots, A, weights[update.client_id]))
            new.tensors[f"{m}/B"] = padded_sum(B_old, 1, ups_B)
            new.tensors[f"{m}/A"] = padded_sum(A_old, 0, ups_A)
        return new, weights

    def used_updates(self, new_state: GlobalState, pairs: list[Pair]) -> list[ClientUpdate]:
        """Each update truncated to the client's rank after pruning (``new_state.meta["ranks"]``)."""
        ranks = new_state.meta.get("ranks", {})
        out = []
        for start, update in pairs:
            r = int(ranks.get(str(start.client_id), start.rank))
            main = {m: (B[:, :r], A[:r, :]) for m, (B, A) in update.adapters["main"].items()}
            out.append(replace(update, adapters={**update.adapters, "main": main}))
        return out


def sparsity_weights(pairs: list[Pair], ranks: dict[int, int], scale: float) -> dict[int, float]:
    """HETLoRA's ``p_i = ||S_i|| / sum_j ||S_j||`` with ``||S_i|| = sum_m ||s B_im A_im||_F`` (truncated)."""
    norms = {}
    for start, update in pairs:
        r = ranks[start.client_id]
        norms[start.client_id] = sum(scale * float(frobenius_of_product(B[:, :r], A[:r, :]))
                                     for B, A in update.adapters["main"].values())
    total = sum(norms.values())
    if total <= 0:  # every update is exactly zero: fall back to uniform
        return {cid: 1.0 / len(norms) for cid in norms}
    return {cid: n / total for cid, n in norms.items()}
