"""Typed, validated options of the federated methods (one flat dataclass, so a sweep can grid any key)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from core.validation import check_choice

WEIGHTINGS = ("data", "uniform", "sparsity")
SELECTIONS = ("random", "fixed", "weight_norm")
UNSELECTED = ("fold", "drop")
SCALINGS = ("standard", "rslora")


@dataclass(frozen=True)
class MethodConfig:
    """Options of the federated method. ``None`` means "the method's published default".

    ``name`` is checked against the method registry by :class:`orchestrator.config.RunConfig` (the
    registry's methods import this module, so it cannot ask the registry itself).

    Scaling: every one-rank piece of every adapter gets the same scale ``s`` on every client, in the fold
    and on the server. ``standard``: ``s = lora_alpha / R`` with ``lora_alpha = R`` by default, i.e.
    ``s = 1`` (the paper's ``lora_alpha = r`` setting). ``rslora``: ``s = lora_alpha / sqrt(R)``
    (Fed-PrsLoRA; ``lora_alpha = R`` by default gives ``s = sqrt(R)``).
    """

    name: str = "fedplora"
    weighting: Literal["data", "uniform", "sparsity"] | None = None
    selection: Literal["random", "fixed", "weight_norm"] = "random"
    unselected: Literal["fold", "drop"] = "fold"
    scaling: Literal["standard", "rslora"] = "standard"
    lora_alpha: float | None = None
    train_head: bool = True
    hetlora_gamma: float = 0.99
    hetlora_lambda: float = 0.01
    hetlora_prune: bool = True
    hetlora_min_rank: int = 1
    pfedlora_shared_rank: int | None = None
    pfedlora_private_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.weighting is not None:
            check_choice("method.weighting", self.weighting, WEIGHTINGS)
        check_choice("method.selection", self.selection, SELECTIONS)
        check_choice("method.unselected", self.unselected, UNSELECTED)
        check_choice("method.scaling", self.scaling, SCALINGS)
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"method.lora_alpha={self.lora_alpha} must be > 0 (or null for alpha = R)")
        if not 0.0 < self.hetlora_gamma < 1.0:
            raise ValueError(f"method.hetlora_gamma={self.hetlora_gamma} must be in (0, 1)")
        if self.hetlora_lambda < 0:
            raise ValueError(f"method.hetlora_lambda={self.hetlora_lambda} must be >= 0")
        if self.hetlora_min_rank < 1:
            raise ValueError(f"method.hetlora_min_rank={self.hetlora_min_rank} must be >= 1")
        if self.pfedlora_shared_rank is not None and self.pfedlora_shared_rank < 1:
            raise ValueError(f"method.pfedlora_shared_rank={self.pfedlora_shared_rank} must be >= 1")
        if not 0.0 < self.pfedlora_private_fraction < 1.0:
            raise ValueError(f"method.pfedlora_private_fraction={self.pfedlora_private_fraction} must be "
                             "in (0, 1)")

    def one_rank_scale(self, global_rank: int) -> float:
        """The scale ``s`` of every one-rank piece ``s * B_j A_j`` (identical on all clients)."""
        alpha = float(global_rank) if self.lora_alpha is None else float(self.lora_alpha)
        if self.scaling == "rslora":
            return alpha / math.sqrt(global_rank)
        return alpha / global_rank
