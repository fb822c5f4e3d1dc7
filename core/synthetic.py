"""A synthetic stand-in for local training, for tests and benchmarks of the driver-side math (no model, no Ray)."""

from __future__ import annotations

import torch

from core.wire import ClientStart, ClientUpdate


def synthetic_update(start: ClientStart, step: float, n_examples: int) -> ClientUpdate:
    """What ``start``'s client sends back after a deterministic fake training.

    Every trainable factor moves by ``step`` times Gaussian noise from a generator seeded with ``start.seed``
    (B before A, adapter by adapter, module by module, in ``start``'s order); frozen factors come back as
    copies; a head, when ``start`` carries one, moves by ``step``. Train loss 1.0.
    """
    g = torch.Generator().manual_seed(start.seed)
    adapters = {}
    for name, per_module in start.adapters.items():
        adapters[name] = {}
        for m, init in per_module.items():
            B = init.B + step * torch.randn(init.B.shape, generator=g) if init.train_B else init.B.clone()
            A = init.A + step * torch.randn(init.A.shape, generator=g) if init.train_A else init.A.clone()
            adapters[name][m] = (B, A)
    head = {k: v + step for k, v in start.head.items()} if start.head else None
    return ClientUpdate(start.client_id, start.round, adapters, n_examples, 1.0, head, upload=start.upload)
