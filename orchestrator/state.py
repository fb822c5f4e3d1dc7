"""The server's state of a method and the result of one aggregation step (driver side only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from core.wire import ClientUpdate

HEAD_PREFIX = "head/"


@dataclass
class GlobalState:
    """A method's server state: flat named tensors (checkpointed as safetensors) + JSON-able metadata.

    Methods never mutate a state in place: ``aggregate`` returns a new one, so a rejected update can
    never poison the state that was already computed.
    """

    tensors: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> GlobalState:
        return GlobalState(dict(self.tensors), _deepcopy_json(self.meta))

    def head(self) -> dict[str, Tensor] | None:
        head = {k[len(HEAD_PREFIX):]: v for k, v in self.tensors.items() if k.startswith(HEAD_PREFIX)}
        return head or None


@dataclass(frozen=True)
class Aggregation:
    """Result of one server aggregation step.

    ``used``: the client updates as the server aggregated them, in client-id order (e.g. HETLoRA's
    updates truncated to the pruned rank); the aggregation noise is measured on these effective adapters.
    ``info``: what the method's ``aggregate_adapters`` reported; ``info["agg_noise"]`` (module -> float), when
    present, is the aggregation noise the aggregation measured itself (FLoRA's and FedEx-LoRA's dense sums).
    """

    state: GlobalState
    weights: dict[int, float]  # client id -> weight used for the "ideal" mean in the noise metric
    info: dict[str, Any] = field(default_factory=dict)
    used: list[ClientUpdate] = field(default_factory=list)


def _deepcopy_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy_json(v) for v in obj]
    return obj
