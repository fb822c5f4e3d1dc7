"""Rank distributions over clients, as data (seeded, reproducible).

- ``groups``: the Fed-PLoRA paper's three equal client groups with ranks (1, r_m, R) (App. C.2); group
  sizes follow the group's Fed-HeLLo convention: ``floor(N/3)`` for the first two, the rest for the last,
  in client-index order (100 clients -> 33/33/34).
- ``homogeneous``: every client has ``rank`` (default ``R``); FedIT (R) and FedIT (R/2).
- ``list``: an explicit per-client list.
- ``uniform``, ``heavy_tail_light``, ``heavy_tail_strong``, ``normal``: FlexLoRA's resource-type families
  (Bai et al. 2024, Table 1) over four rank types ``choices`` (ascending; Type 1..4). Proportions:
  uniform 25% each; heavy-tail-light 80% Type 1, 5% Type 2, 5% Type 3, 10% Type 4; heavy-tail-strong the
  mirror image; normal N(1.5, 0.7) at the type indices (44.25% each for Types 2 and 3, the paper's
  caption; the released code scrambles the order). Counts are the exact proportions (largest remainder),
  assigned to clients in a seeded random order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.rng import generator
from core.validation import check_choice

DISTRIBUTIONS = ("groups", "homogeneous", "list", "uniform", "heavy_tail_light", "heavy_tail_strong",
                 "normal")
_FAMILY_PROBS = {
    "uniform": (0.25, 0.25, 0.25, 0.25),
    "heavy_tail_light": (0.80, 0.05, 0.05, 0.10),
    "heavy_tail_strong": (0.05, 0.05, 0.10, 0.80),
    "normal": tuple(math.exp(-((i - 1.5) ** 2) / (2 * 0.7**2)) for i in range(4)),
}


@dataclass(frozen=True)
class RankConfig:
    """How client ranks are assigned. ``max_rank`` is the global rank R of the heterogeneous methods."""

    distribution: str = "groups"
    max_rank: int = 16
    mid_rank: int = 4
    rank: int | None = None
    ranks: tuple[int, ...] = ()
    choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_choice("ranks.distribution", self.distribution, DISTRIBUTIONS)
        if self.max_rank < 1:
            raise ValueError(f"ranks.max_rank={self.max_rank} must be >= 1")
        if self.distribution == "groups" and not 1 <= self.mid_rank <= self.max_rank:
            raise ValueError(f"ranks.mid_rank={self.mid_rank} must be in [1, max_rank={self.max_rank}]")
        if self.rank is not None and not 1 <= self.rank <= self.max_rank:
            raise ValueError(f"ranks.rank={self.rank} must be in [1, max_rank={self.max_rank}]")
        for field_name, values in (("ranks.ranks", self.ranks), ("ranks.choices", self.choices)):
            bad = [r for r in values if not 1 <= int(r) <= self.max_rank]
            if bad:
                raise ValueError(f"{field_name} has ranks {bad} outside [1, max_rank={self.max_rank}]")
        if self.distribution == "list" and not self.ranks:
            raise ValueError("ranks.distribution='list' needs ranks.ranks, one rank per client")
        if self.distribution in _FAMILY_PROBS and self.choices and len(self.choices) != 4:
            raise ValueError(f"ranks.choices must list 4 rank types (Type 1..4) for "
                             f"{self.distribution!r}; got {list(self.choices)}")


def assign_ranks(cfg: RankConfig, n_clients: int, seed: int) -> list[int]:
    """Per-client ranks (index = client id)."""
    if n_clients < 1:
        raise ValueError(f"num_clients={n_clients} must be >= 1")
    R = cfg.max_rank
    if cfg.distribution == "homogeneous":
        return [cfg.rank or R] * n_clients
    if cfg.distribution == "list":
        if len(cfg.ranks) != n_clients:
            raise ValueError(f"ranks.ranks has {len(cfg.ranks)} entries but there are {n_clients} clients")
        return [int(r) for r in cfg.ranks]
    if cfg.distribution == "groups":
        third = n_clients // 3
        sizes = (third, third, n_clients - 2 * third)
        return [r for r, size in zip((1, cfg.mid_rank, R), sizes) for _ in range(size)]
    choices = cfg.choices or default_choices(R)
    counts = _largest_remainder(_FAMILY_PROBS[cfg.distribution], n_clients)
    ranks = [int(r) for r, c in zip(sorted(choices), counts) for _ in range(c)]
    order = torch.randperm(n_clients, generator=generator(seed, "ranks", cfg.distribution)).tolist()
    return [ranks[i] for i in order]


def default_choices(max_rank: int) -> tuple[int, ...]:
    """Four rank types scaled to R: (R/8, R/4, R/2, R) rounded, at least 1 (FlexLoRA's 8/30/30-200/200)."""
    return tuple(max(1, max_rank * f // 8) for f in (1, 2, 4, 8))


def _largest_remainder(probs: tuple[float, ...], n: int) -> list[int]:
    total = sum(probs)
    quotas = [p / total * n for p in probs]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(probs)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts
