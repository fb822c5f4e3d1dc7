"""Pre-flight checks of a run config in the launching process, before Ray starts or any model is loaded.

:func:`check_run` raises ``ValueError`` (a message naming the field or file and what is allowed) for input
that would otherwise fail only after Ray has started the workers and they have loaded the model and data:

- resources: ``device: cuda`` without a GPU, more workers than CPUs (against the local machine, or the
  cluster once connected: :func:`local_cluster_resources`);
- data: the file, its columns and cells, the split (:func:`workers.data_check.check_data`);
- model: the model exists, the target modules are in it (:func:`workers.model_check.model_module_specs`,
  a weight-less skeleton);
- method: the method built on the real target modules with the client ranks (FedIT with mixed ranks, a
  rank list of the wrong length ...), and ``metrics.similarity_module``.

:func:`check_output_folder` checks ``--out`` (not a file, writable, disk not full). :func:`check_run`
returns warnings for input that is legal but suspicious (:func:`workers.data_check.data_warnings`, and a
``ranks.max_rank`` above a target layer's width ``min(d, k)``, where a rank-``r`` adapter cannot have rank
``r``, and fewer packs of ``resources.clients_per_worker`` clients per round than workers:
:func:`packing_warnings`).
:class:`PreflightCache` shares the work among the trials of a sweep (one data check per data config
and seed, one model check per model config and task).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.wire import ModuleSpec
from orchestrator.config import RunConfig
from orchestrator.yaml_io import InputWarning

MIN_FREE_BYTES = 16 * 2**20  # a run folder of a small run: config, CSVs, one checkpoint


@dataclass
class PreflightCache:
    """Results shared by the trials of a sweep (keys: the frozen config sections)."""

    data: dict[Any, Any] = field(default_factory=dict)
    models: dict[Any, list[ModuleSpec] | None] = field(default_factory=dict)


def local_cluster_resources(num_cpus: int | None = None, num_gpus: int | None = None) -> dict[str, float]:
    """What a local Ray instance started with these arguments will offer (Ray's defaults: every CPU, every GPU)."""
    cpus = num_cpus if num_cpus is not None else os.cpu_count() or 1
    if num_gpus is None:
        import torch

        num_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": float(cpus), "GPU": float(num_gpus)}


def check_resources(cfg: RunConfig, cluster: dict[str, float]) -> None:
    """The worker pool fits ``cluster`` (:func:`workers.resources.resolve_resources` raises otherwise)."""
    from workers.resources import resolve_resources

    resolve_resources(cfg.resources, cluster)


def check_run(cfg: RunConfig, cluster: dict[str, float] | None = None,
              cache: PreflightCache | None = None) -> list[str]:
    """Raise on input that cannot run (see the module docstring); return the warnings, one sentence each."""
    from orchestrator.methods import build_method
    from orchestrator.ranks import assign_ranks
    from workers.data_check import check_data, data_warnings
    from workers.model_check import model_module_specs

    cache = cache or PreflightCache()
    if cluster is not None:
        check_resources(cfg, cluster)
    ranks = assign_ranks(cfg.ranks, cfg.data.num_clients, cfg.seed)
    probe_method(cfg, ranks)  # cheap: method/rank mismatches before any data or model is read
    key = (cfg.data, cfg.seed)
    if key not in cache.data:
        fed = check_data(cfg.data, cfg.seed)
        cache.data[key] = (fed.task, fed.num_labels, data_warnings(fed))
    task, num_labels, data_notes = cache.data[key]
    model_key = (cfg.model, task, num_labels)
    if model_key not in cache.models:
        cache.models[model_key] = model_module_specs(cfg.model, task, num_labels)
    specs = cache.models[model_key]
    out = list(data_notes)
    if specs is not None:
        build_method(cfg.method, specs, ranks, cfg.ranks.max_rank, cfg.seed)
        similarity_module(cfg.metrics.similarity_module, [s.name for s in specs])
        out += rank_width_warnings(cfg.ranks.max_rank, specs)
    return out + packing_warnings(cfg)


def probe_method(cfg: RunConfig, ranks: dict[int, int] | None = None) -> None:
    """Build the method on a probe module wide enough for every rank: catches method/rank mismatches."""
    from orchestrator.methods import build_method
    from orchestrator.ranks import assign_ranks

    size = 4 * cfg.ranks.max_rank + 8
    ranks = ranks if ranks is not None else assign_ranks(cfg.ranks, cfg.data.num_clients, cfg.seed)
    build_method(cfg.method, [ModuleSpec("probe", size, size)], ranks, cfg.ranks.max_rank, cfg.seed)


def similarity_module(name: str | None, modules: list[str]) -> str | None:
    """The target module ``metrics.similarity_module`` names (``""``: the first; ``None``: off); raises if none."""
    if name is None:
        return None
    if name == "":
        return modules[0]
    matches = [n for n in modules if n == name or n.endswith("." + name)]
    if not matches:
        raise ValueError(f"metrics.similarity_module={name!r} is not a target module; choose one of "
                         f"{modules[:6]}{'...' if len(modules) > 6 else ''} (or null to turn it off)")
    return matches[0]


def packing_warnings(cfg: RunConfig) -> list[str]:
    """A warning when packs of ``resources.clients_per_worker`` leave workers without a training job.

    A round of ``m`` clients (``clients_per_round``) runs ``ceil(m / k)`` packs; with fewer packs than
    ``resources.num_workers`` the other workers wait during training (evaluation still uses all of them).
    """
    k, m, workers = cfg.resources.clients_per_worker, cfg.clients_per_round, cfg.resources.num_workers
    packs = -(-m // k)
    if k == 1 or packs >= workers:
        return []
    return [f"resources.clients_per_worker={k} cuts a round's {m} clients into {packs} pack(s), fewer than "
            f"resources.num_workers={workers}: {workers - packs} worker(s) wait while the round trains"]


def rank_width_warnings(max_rank: int, specs: list[ModuleSpec]) -> list[str]:
    """A warning when ``max_rank > min(d, k)`` for some target layer (a ``d x k`` matrix has rank <= ``min(d, k)``)."""
    narrow = sorted({(s.d_out, s.k_in) for s in specs if max_rank > min(s.d_out, s.k_in)})
    if not narrow:
        return []
    names = [s.name for s in specs if max_rank > min(s.d_out, s.k_in)]
    return [f"ranks.max_rank={max_rank} is above the width of {len(names)} target layer(s) (e.g. {names[0]}, "
            f"shapes {narrow[:3]}): a d x k layer's update has rank at most min(d, k), so ranks above it add "
            "parameters and communication but no capacity"]


@contextlib.contextmanager
def input_warnings() -> Iterator[list[str]]:
    """Collect the :class:`~orchestrator.yaml_io.InputWarning` messages raised inside (e.g. duplicate YAML keys)."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        yield notes
    notes.extend(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, InputWarning)))


def check_output_folder(out: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """``out`` can hold a run: not a file, under a writable folder, on a disk that is not full.

    Probes by creating (and removing) a temporary file in ``out``, or in its nearest existing parent when it
    does not exist yet, so nothing is left behind.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder (new or empty)")
    probe_dir = out
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ValueError(f"--out {str(out)!r} cannot be created: {str(probe_dir)!r} is a file")
    try:
        with tempfile.TemporaryFile(dir=probe_dir, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"--out {str(out)!r} is not writable: {err.strerror} in {str(probe_dir)!r}; choose a "
                         "folder on a writable disk") from None
    free = shutil.disk_usage(probe_dir).free
    if free < min_free_bytes:
        raise ValueError(f"--out {str(out)!r}: the disk holding it is full ({free / 2**20:.1f} MiB free, a run needs "
                         f"at least {min_free_bytes / 2**20:.0f} MiB); free space or choose another folder")
