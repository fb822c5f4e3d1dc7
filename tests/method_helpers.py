"""Small synthetic setups for the driver-side method math (no model, no Ray)."""

from __future__ import annotations

import torch

from core.synthetic import synthetic_update
from core.wire import ClientStart, ClientUpdate, ModuleSpec
from orchestrator.method_config import MethodConfig
from orchestrator.methods import build_method
from orchestrator.state import GlobalState

MODULES = [ModuleSpec("layer0.q", 6, 5), ModuleSpec("layer0.v", 4, 5), ModuleSpec("layer1.q", 6, 5)]


def ranks_for(name: str, hetero, top: int | None = None) -> list[int]:
    """``hetero`` as a list, or ``top`` (default ``max(hetero)``) for every client when the method needs equal ranks."""
    from orchestrator.methods import method_class

    hetero = list(hetero)
    if not method_class(name).requires_homogeneous:
        return hetero
    return [max(hetero) if top is None else top] * len(hetero)


def make(name: str, ranks: list[int], R: int = 4, seed: int = 0, modules=MODULES, **cfg):
    return build_method(MethodConfig(name=name, **cfg), modules, ranks, R, seed)


def trained(start: ClientStart, step: float = 0.1, n_examples: int | None = None) -> ClientUpdate:
    """A deterministic stand-in for local training (``core.synthetic``); ``10 + client_id`` examples by default."""
    return synthetic_update(start, step, 10 + start.client_id if n_examples is None else n_examples)


def run_rounds(method, clients_per_round: list[list[int]], state: GlobalState | None = None,
               head=None):
    """Run rounds of start -> synthetic training -> aggregate; returns the final state and last round."""
    state = state or method.init_global(head)
    last = None
    for t, clients in enumerate(clients_per_round):
        starts = [method.client_start(state, c, t) for c in clients]
        updates = [trained(s) for s in starts]
        agg = method.aggregate(state, starts, updates)
        last = (state, starts, updates, agg)
        state = agg.state
    return state, last


def random_state(method, seed: int = 1) -> GlobalState:
    """A state with non-zero B (so nothing passes by accident)."""
    state = method.init_global()
    g = torch.Generator().manual_seed(seed)
    for k, v in list(state.tensors.items()):
        state.tensors[k] = torch.randn(v.shape, generator=g)
    return state
