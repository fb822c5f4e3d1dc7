"""Typed, validated options of the federated methods (one flat dataclass, so a sweep can grid any key)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from core.validation import check_choice, check_positive, is_number
from orchestrator.server_optimizer import DEFAULT_LR, SERVER_OPTIMIZERS, ServerOptimizer

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

    Server optimizer (``orchestrator.server_optimizer``; Reddi et al. 2021, Algorithm 2): ``avg`` keeps
    the method's aggregate (FedAvg, the default); ``avgm`` uses ``server_lr`` and ``server_momentum``;
    ``adam``/``yogi``/``adagrad`` use ``server_lr``, ``server_beta1``, ``server_beta2`` (not adagrad) and
    ``server_tau``. ``server_lr = None``: 1.0 for ``avgm``, 0.001 for the adaptive ones. ``avg`` ignores
    the hyper-parameters.
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
    server_optimizer: Literal["avg", "avgm", "adam", "yogi", "adagrad"] = "avg"
    server_lr: float | None = None
    server_momentum: float = 0.9
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_tau: float = 1e-3

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
        check_choice("method.server_optimizer", self.server_optimizer, SERVER_OPTIMIZERS)
        if self.server_lr is not None:
            check_positive("method.server_lr", self.server_lr)
        check_positive("method.server_tau", self.server_tau)
        for name in ("server_momentum", "server_beta1", "server_beta2"):
            value = getattr(self, name)
            if not (is_number(value) and 0.0 <= value < 1.0):
                raise ValueError(f"method.{name}={value!r} must be a number in [0, 1)")

    def server(self) -> ServerOptimizer:
        """The server optimizer these options describe (``server_lr = None``: the optimizer's default)."""
        lr = DEFAULT_LR[self.server_optimizer] if self.server_lr is None else float(self.server_lr)
        return ServerOptimizer(self.server_optimizer, lr, float(self.server_momentum), float(self.server_beta1),
                               float(self.server_beta2), float(self.server_tau))

    def one_rank_scale(self, global_rank: int) -> float:
        """The scale ``s`` of every one-rank piece ``s * B_j A_j`` (identical on all clients)."""
        alpha = float(global_rank) if self.lora_alpha is None else float(self.lora_alpha)
        if self.scaling == "rslora":
            return alpha / math.sqrt(global_rank)
        return alpha / global_rank
