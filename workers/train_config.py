"""Typed, validated options of local training and evaluation on a client worker."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from core.validation import check_choice, check_int, check_positive, is_number

OPTIMIZERS = ("adamw", "sgd")
AUTOCAST = ("off", "bf16", "fp16")
FOLDS = ("auto", "dense", "branch")


@dataclass(frozen=True)
class TrainConfig:
    """Local training options (one flat dataclass, so a sweep can grid any key).

    ``local_epochs`` (when set) overrides ``local_steps``: a job then runs ``local_epochs * ceil(n /
    batch_size)`` steps over its ``n`` local examples. ``grad_clip``: max global gradient norm (``None``
    = off). ``lora_dropout`` is applied by PEFT to the input of every trainable adapter (never to the
    fold, DESIGN.md section 3). ``fold``: how a job applies its fold (and an evaluation its deltas) to ``W0``:
    ``dense`` merges ``W0 + sum(fold)`` into the weight; ``branch`` keeps the weight at ``W0`` and runs every
    low-rank fold as a frozen LoRA branch next to the trainable adapters (a dense delta is always merged);
    ``auto`` (default) takes the branch for a module whose fold deltas are all low-rank with factors smaller
    than the weight (summed rank ``r_f`` with ``r_f (d + k) < d k``), the dense merge otherwise
    (``workers.local_training``). ``max_new_tokens``: greedy generation length for causal-LM evaluation.

    GPU options: ``autocast`` runs the forward passes (training and evaluation) under ``torch.autocast`` in
    bf16 or fp16 (the frozen base computes in low precision; adapters, optimizer state and the loss stay
    float32; fp16 adds loss scaling and needs CUDA; bf16 also works on the CPU). ``gradient_checkpointing``
    recomputes the backbone's activations in the backward pass instead of keeping them (less memory, about
    one more forward of time; the RNG state is replayed, so results do not change).

    ``prox_mu``: FedProx (Li et al., MLSys 2020, eq. 2): the local objective adds
    ``(prox_mu / 2) * ||theta - theta_start||^2`` over every tensor the job trains (adapter factors and
    head), ``theta_start`` being its value at the start of the job; 0 = off (plain local training).
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-4
    local_steps: int = 10
    local_epochs: int | None = None
    batch_size: int = 16
    lora_dropout: float = 0.0
    fold: Literal["auto", "dense", "branch"] = "auto"
    grad_clip: float | None = None
    weight_decay: float = 0.0
    momentum: float = 0.0
    eval_batch_size: int = 64
    max_new_tokens: int = 32
    autocast: Literal["off", "bf16", "fp16"] = "off"
    gradient_checkpointing: bool = False
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer={self.optimizer!r} is not allowed; choose one of "
                             f"{list(OPTIMIZERS)}")
        if self.fold not in FOLDS:
            raise ValueError(f"train.fold={self.fold!r} is not allowed; choose one of {list(FOLDS)}")
        check_positive("train.lr", self.lr)
        check_int("train.local_steps", self.local_steps, 1)
        if self.local_epochs is not None:
            check_int("train.local_epochs", self.local_epochs, 1)
        check_int("train.batch_size", self.batch_size, 1)
        check_int("train.eval_batch_size", self.eval_batch_size, 1)
        check_int("train.max_new_tokens", self.max_new_tokens, 1)
        if not (is_number(self.lora_dropout) and 0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"train.lora_dropout={self.lora_dropout!r} must be in [0, 1)")
        if self.grad_clip is not None:
            check_positive("train.grad_clip", self.grad_clip)
        if not (is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"train.weight_decay={self.weight_decay!r} must be a number >= 0")
        if not (is_number(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ValueError(f"train.momentum={self.momentum!r} must be in [0, 1)")
        check_choice("train.autocast", self.autocast, AUTOCAST)
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"train.gradient_checkpointing={self.gradient_checkpointing!r} must be true or false")
        if not (is_number(self.prox_mu) and self.prox_mu >= 0):
            raise ValueError(f"train.prox_mu={self.prox_mu!r} must be a number >= 0 (0 = no proximal term)")

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps of one local job over ``n_examples`` examples (0 when there are none)."""
        if n_examples <= 0:
            return 0
        if self.local_epochs is not None:
            return self.local_epochs * math.ceil(n_examples / self.batch_size)
        return self.local_steps
