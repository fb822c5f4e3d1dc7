"""Random streams derived from (seed, round, client, module, purpose), never from call order.

Every random draw of the tool (client sampling, Select-N-Fold selection, fresh adapter init, local
data order, dropout) takes a generator built here, so a result does not depend on the number of
workers or on the order in which jobs finish. Clients and modules use the id ``-1`` for "none".
"""

from __future__ import annotations

import hashlib
import math

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the run seed and any labels (blake2b of their text; stable across runs)."""
    text = "\x1f".join([str(int(seed))] + [str(p) for p in parts])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed`."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, *parts))
    return g


def kaiming_uniform_A(rank: int, k_in: int, gen: torch.Generator, dtype: torch.dtype = torch.float32):
    """PEFT's default ``lora_A`` init: ``kaiming_uniform_(a=sqrt(5))`` on ``(r, k)``, i.e. U(-1/sqrt(k), 1/sqrt(k))."""
    bound = 1.0 / math.sqrt(k_in)
    return (torch.rand(rank, k_in, generator=gen, dtype=torch.float64) * 2 - 1).mul_(bound).to(dtype)
