"""How much CPU/GPU each ClientWorker actor asks Ray for, decided (and checked) before any actor exists.

Ray never errors on an actor it cannot place: it waits forever (DESIGN.md section 5). So the pool is
checked against the cluster's resources up front, and an impossible request fails at once with a message
that says what was asked and what exists. Fractional GPUs are bookkeeping only (Ray does not cap memory):
``k`` workers share one GPU when ``gpus_per_worker <= 1/k``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from core.validation import check_int, is_number

DEVICES = ("auto", "cuda", "cpu")
_EPS = 1e-9


@dataclass(frozen=True)
class ResourceConfig:
    """Size and placement of the worker pool.

    ``device``: ``"auto"`` uses GPUs when the Ray cluster has them, else the CPU; ``"cuda"`` requires
    GPUs (an error when there are none); ``"cpu"`` never asks for a GPU. ``gpus_per_worker``: ``None``
    shares the cluster's GPUs evenly (``1 / ceil(num_workers / num_gpus)``, at most 1).
    ``metrics_threads``: torch threads of the driver while it computes a round's noise and similarity
    metrics (0: every CPU its process may use). More than 1 helps only where nothing else runs on the
    driver's cores meanwhile (its workers are idle then, but concurrent sweep trials or other jobs are not):
    on busy cores torch's threads wait on each other and the metrics get many times slower
    (``benchmarks/results/scale.md``), hence the default 1. The server's aggregation keeps the driver's own
    thread count, so the state's rounding never depends on this setting.
    ``clients_per_worker``: ``k`` client jobs of a round trained at once by one worker on its one copy of
    the base model (packed jobs: :meth:`workers.actor.ClientWorker.train_pack`); the round's clients, in
    client-id order, are cut into consecutive packs of ``k`` (``orchestrator.driver.client_jobs``). Unlike
    the other options it can change results (packed arithmetic differs at float rounding), so a value other
    than 1 enters the config fingerprint; 1 (the default) is one job per client.
    """

    device: Literal["auto", "cuda", "cpu"] = "auto"
    num_workers: int = 2
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    clients_per_worker: int = 1
    metrics_threads: int = 1

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"resources.device={self.device!r} is not allowed; choose one of {list(DEVICES)}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ValueError(f"resources.num_workers={self.num_workers!r} must be an integer >= 1")
        if self.gpus_per_worker is not None:
            g = self.gpus_per_worker
            if not (is_number(g) and g > 0 and (g <= 1 or float(g).is_integer())):
                raise ValueError(f"resources.gpus_per_worker={g!r} must be in (0, 1] or a whole number")
        if not (is_number(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise ValueError(f"resources.cpus_per_worker={self.cpus_per_worker!r} must be a number > 0")
        check_int("resources.clients_per_worker", self.clients_per_worker, 1)
        check_int("resources.metrics_threads", self.metrics_threads, 0)


# The options that only size and place the pool (and the driver's metric threads): no training result depends on
# them (``clients_per_worker`` can).
PLACEMENT_KEYS = ("device", "num_workers", "gpus_per_worker", "cpus_per_worker", "metrics_threads")


@dataclass(frozen=True)
class WorkerResources:
    """What one worker actor asks Ray for, and the torch thread count it uses."""

    num_cpus: float
    num_gpus: float
    num_workers: int

    @property
    def torch_threads(self) -> int:
        """Intra-op threads of the worker's torch: its CPU share, at least 1."""
        return max(1, int(self.num_cpus))

    @property
    def device(self) -> str:
        """``"cuda"`` when the worker asks for a GPU share, else ``"cpu"``."""
        return "cuda" if self.num_gpus > 0 else "cpu"

    def bundle(self) -> dict[str, float]:
        """The worker's placement-group bundle (for Tune's ``PlacementGroupFactory``)."""
        bundle = {"CPU": float(self.num_cpus)}
        if self.num_gpus > 0:
            bundle["GPU"] = float(self.num_gpus)
        return bundle

    def actor_options(self) -> dict[str, float]:
        """``.options(...)`` of the actor; ``num_gpus`` is always explicit (0 on the CPU)."""
        return {"num_cpus": float(self.num_cpus), "num_gpus": float(self.num_gpus)}


def resolve_resources(cfg: ResourceConfig, cluster_resources: dict[str, float]) -> WorkerResources:
    """Per-worker CPU/GPU for ``cfg`` on a cluster with ``cluster_resources``.

    ``cluster_resources``: ``ray.cluster_resources()`` or a trial's bundle totals. Raises ``ValueError`` at
    once when the pool cannot be placed (Ray itself would wait forever).
    """
    total_gpus = float(cluster_resources.get("GPU", 0.0))
    total_cpus = float(cluster_resources.get("CPU", 0.0))
    use_gpu = cfg.device == "cuda" or (cfg.device == "auto" and total_gpus > 0)
    if cfg.device == "cuda" and total_gpus <= 0:
        raise ValueError(f"resources.device='cuda' but the Ray cluster has no GPUs (it has CPU={total_cpus:g}); "
                         "use resources.device='auto' or 'cpu' to run on the CPU")
    num_gpus = 0.0
    if use_gpu:
        num_gpus = _gpu_share(cfg, total_gpus)
        capacity = _gpu_capacity(num_gpus, total_gpus)
        if capacity < cfg.num_workers:
            raise ValueError(
                f"resources: {cfg.num_workers} workers x {num_gpus:g} GPU need "
                f"{cfg.num_workers * num_gpus:g} GPUs ({_per_gpu_text(num_gpus)}) but the Ray cluster has "
                f"{total_gpus:g} GPUs (room for {capacity} workers); lower resources.num_workers or "
                "resources.gpus_per_worker")
    need_cpus = cfg.num_workers * cfg.cpus_per_worker
    if need_cpus > total_cpus + _EPS:
        raise ValueError(f"resources: {cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPU need "
                         f"{need_cpus:g} CPUs but the Ray cluster has {total_cpus:g}; lower "
                         "resources.num_workers or resources.cpus_per_worker")
    return WorkerResources(num_cpus=float(cfg.cpus_per_worker), num_gpus=num_gpus, num_workers=cfg.num_workers)


def _gpu_share(cfg: ResourceConfig, total_gpus: float) -> float:
    if cfg.gpus_per_worker is not None:
        return float(cfg.gpus_per_worker)
    whole = max(1, int(math.floor(total_gpus + _EPS)))
    return 1.0 / math.ceil(cfg.num_workers / whole)


def _gpu_capacity(share: float, total_gpus: float) -> int:
    """How many workers of ``share`` GPU fit: ``floor(1/share)`` per whole GPU (a share never spans GPUs)."""
    whole = int(math.floor(total_gpus + _EPS))
    if share > 1:
        return int(math.floor(total_gpus / share + _EPS))
    rest = max(0.0, total_gpus - whole)  # a fractional total (a trial's bundles): what is left of one GPU
    return whole * int(math.floor(1.0 / share + _EPS)) + int(math.floor(rest / share + _EPS))


def _per_gpu_text(share: float) -> str:
    if share > 1:
        return f"{share:g} whole GPUs each"
    return f"at most {int(math.floor(1.0 / share + _EPS))} workers per GPU"


def process_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads (0: :func:`process_cpus`), then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    n = n or process_cpus()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
