"""The ClientWorker: a Ray actor holding one resident base model and the federated data of a run.

A worker builds its :class:`LocalTrainer` and the federated split once (deterministic from the run
seed, so every worker of a run holds the same partition) and then runs any client's job on demand, or a
pack of client jobs of one round at once on the same model (:meth:`ClientWorker.train_pack`). Raw
examples never leave the worker: its methods return module specs, counts, metrics and ClientUpdates
(adapter/head tensors only). After every job the worker hands the memory the job freed back to the
OS (:mod:`workers.memory`), so its footprint does not grow with the clients it serves. The class is plain
Python (usable in-process); :func:`make_worker` turns it into a Ray actor with explicit CPU/GPU options.
This module imports no PEFT or transformers code at import time (the driver process, which only
creates the actors, never loads them).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from core.wire import ClientStart, ClientUpdate, Delta, ModuleSpec
from workers.data_config import DataConfig
from workers.data_notes import collect_notes
from workers.faults import check_injected_fault
from workers.memory import release_freed_memory
from workers.models import ModelConfig, load_model
from workers.precision import oom_types, out_of_memory
from workers.resources import ResourceConfig, WorkerResources, resolve_resources
from workers.shared_args import SharedArgs
from workers.train_config import TrainConfig

if TYPE_CHECKING:
    from workers.eval_results import EvalPartial
    from workers.partition import FederatedData


class ClientWorker:
    """Runs client jobs (local training, evaluation) on a resident model; see the module docstring.

    ``data``: a prebuilt split to use instead of loading ``data_cfg`` (tests, in-process runs).
    """

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, seed: int,
                 num_threads: int = 1, data: FederatedData | None = None):
        torch.set_num_threads(max(1, int(num_threads)))
        self.trainer: Any = None
        self.reconfigure(model_cfg, data_cfg, train_cfg, seed, data)

    def reconfigure(self, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig, seed: int,
                    data: FederatedData | None = None) -> dict[str, bool]:
        """Serve another run: load its data, and its model unless the loaded one can serve it (warm trials).

        The loaded model is kept when the model config, task, number of labels and the model-shaping train
        options are the same; it is then reset to what a fresh load with ``seed`` gives
        (:meth:`workers.local_training.LocalTrainer.reset`), so results equal a fresh worker's bitwise. The
        data split is rebuilt unless the data config and seed are the same. Returns what was reused.
        """
        from workers.local_training import LocalTrainer
        from workers.partition import load_federated

        seed = int(seed)
        same_data = data is None and self.trainer is not None and (data_cfg, seed) == (self.data_cfg, self.seed)
        if not same_data:
            built, caught = collect_notes(lambda: data if data is not None else load_federated(data_cfg, seed))
            self.data: FederatedData = built
            self.notes = list(dict.fromkeys([*self.data.notes, *caught]))
        num_labels = self.data.num_labels if self.data.task == "classification" else None
        trainer = self.trainer
        reuse = (trainer is not None and model_cfg == self.model_cfg and trainer.task == self.data.task
                 and trainer.loaded.num_labels == num_labels and trainer.can_reset(train_cfg))
        self.seed, self.model_cfg, self.data_cfg = seed, model_cfg, data_cfg
        self.max_length = data_cfg.max_length
        self.num_labels = num_labels
        self._data_info: dict[str, Any] | None = None
        self.shared = SharedArgs()
        if reuse:
            trainer.reset(train_cfg, seed)
            trainer.max_length = int(data_cfg.max_length)
        else:
            self.trainer = None
            release_freed_memory()
            loaded = load_model(model_cfg, self.data.task, self.num_labels, seed)
            self.trainer = LocalTrainer(loaded, train_cfg, data_cfg.max_length, _assigned_device())
        return {"model_reused": reuse, "data_reused": same_data}

    def ping(self) -> dict[str, Any]:
        """Where this worker runs: pid, host, Ray node id (``None`` outside Ray), GPU ids, torch device and threads."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "node_id": _ray_node_id(), "gpu_ids": _ray_gpu_ids(),
                "device": str(self.trainer.device), "torch_threads": torch.get_num_threads()}

    def module_specs(self) -> list[ModuleSpec]:
        """``ModuleSpec(name, d_out, k_in)`` of every target module (the keys of per-module dicts)."""
        return [ModuleSpec(m, d, k) for m, (d, k) in self.trainer.shapes().items()]

    def initial_head(self) -> dict[str, Tensor] | None:
        """The seeded initial classification head (identical on every worker), ``None`` for causal LM.

        The head as loaded (``trainer.head0``), not the model's current head, which jobs overwrite.
        """
        return {k: v.clone() for k, v in self.trainer.head0.items()} or None

    def client_num_examples(self) -> dict[int, int]:
        """Number of local train examples of every client (the usual aggregation weights)."""
        return {c.client: len(c.train) for c in self.data.clients}

    def partition_summary(self) -> list[dict[str, Any]]:
        """One record per client: ``client``, ``n_train``, ``n_test`` and per-label train counts."""
        from workers.partition import partition_summary

        return partition_summary(self.data).to_dict("records")

    def data_info(self) -> dict[str, Any]:
        """Counts and notes only: task, labels, clients, the global test set's size and label counts, truncation.

        ``global_test_label_counts``: examples per class id in the global test set (``None`` for a causal
        LM). ``truncation``: per split (``train``: the clients' train splits, ``test``: the global test set,
        ``personal test``: the clients' test splits), :func:`workers.data_notes.truncation_stats` at
        ``data.max_length``. ``notes``: what the user must know about the data (the split's deviations,
        e.g. a Dirichlet top-up, and the truncation), one sentence each.
        """
        if self._data_info is None:
            from workers.data_notes import label_counts, truncation_note, truncation_stats
            from workers.local_training import token_lengths

            d, tok = self.data, self.trainer.tokenizer
            splits = {"train": [ex for c in d.clients for ex in c.train], "test": d.global_test,
                      "personal test": [ex for c in d.clients for ex in c.test]}
            truncation = {name: truncation_stats(token_lengths(tok, examples, d.task), self.max_length)
                          for name, examples in splits.items()}
            note = truncation_note(truncation, self.max_length)
            self._data_info = {
                "task": d.task, "num_labels": d.num_labels, "label_names": d.label_names,
                "num_clients": d.num_clients, "global_test_size": len(d.global_test),
                "global_test_label_counts": label_counts(d.global_test, d.num_labels)
                if d.task == "classification" else None,
                "truncation": truncation, "notes": self.notes + ([note] if note else [])}
        return self._data_info

    def train(self, start: ClientStart) -> ClientUpdate:
        """Run ``start`` on its client's local train split (shared tensors resolved: ``workers.shared_args``)."""
        check_injected_fault(start.client_id, start.round)
        key = self.shared.fold_key(start.fold)
        start = self.shared.resolve(start)
        try:
            return self.trainer.train(start, self._client(start.client_id).train, key)
        finally:
            release_freed_memory()

    def train_pack(self, starts: Sequence[ClientStart]) -> list[ClientUpdate]:
        """Run the client jobs ``starts`` (one round's) at once on the one resident model; updates in their order.

        Each start is prepared as :meth:`train` prepares it (fault injection, fold key of the unresolved
        fold, its client's train split); the shared tensors of the whole pack are resolved together, so the
        worker's cache keeps every object the pack names. The jobs run through
        :func:`workers.packed_training.train_pack` (which names the pack's clients when it runs out of GPU memory).
        """
        from workers.packed_training import train_pack

        for s in starts:
            check_injected_fault(s.client_id, s.round)
        keys = [self.shared.fold_key(s.fold) for s in starts]
        resolved: list[ClientStart] = self.shared.resolve(list(starts))
        examples = [self._client(s.client_id).train for s in resolved]
        try:
            return train_pack(self.trainer, resolved, examples, keys)
        finally:
            release_freed_memory()

    def evaluate(self, deltas: dict[str, Delta | Sequence[Delta]], head: dict[str, Tensor] | None = None,
                 client_id: int | None = None) -> dict[str, float]:
        """Metrics of ``W0 + deltas`` (+ head) on the global test set, or on ``client_id``'s local test split."""
        from workers.eval_results import combine

        return combine([self.evaluate_shard(deltas, head, client_id)])

    def evaluate_shard(self, deltas: dict[str, Delta | Sequence[Delta]], head: dict[str, Tensor] | None = None,
                       client_id: int | None = None, start: int = 0, stop: int | None = None) -> EvalPartial:
        """Per-example results on examples ``[start, stop)`` of the global test set (or of a client's split).

        One shard of an evaluation spread over workers (``workers.eval_results``).
        """
        from workers.evaluation import evaluate_partial

        examples = self.data.global_test if client_id is None else self._client(client_id).test
        key = self.shared.fold_key(deltas)
        deltas, head = self.shared.resolve((deltas, head))
        try:
            return evaluate_partial(self.trainer, deltas, head, examples[start:stop], key)
        except oom_types() as err:
            where = "the global test set" if client_id is None else f"client {client_id}'s test split"
            raise out_of_memory(f"evaluation on {where} (examples {start}-{stop})", self.trainer.device) from err
        finally:
            release_freed_memory()

    def _client(self, client_id: int):
        if not 0 <= client_id < self.data.num_clients:
            raise ValueError(f"client_id={client_id} is out of range: the run has {self.data.num_clients} clients")
        return self.data.clients[client_id]


def make_worker(resources: WorkerResources, model_cfg: ModelConfig, data_cfg: DataConfig,
                train_cfg: TrainConfig, seed: int, data: FederatedData | None = None, **options: Any):
    """A ClientWorker Ray actor with ``resources``' CPU/GPU (``num_gpus`` explicit, 0 on the CPU).

    ``options`` go to ``.options(...)`` (e.g. ``name``, ``max_restarts``).
    """
    return _remote_class().options(**resources.actor_options(), **options).remote(
        model_cfg, data_cfg, train_cfg, seed, resources.torch_threads, data)


def make_workers(cfg: ResourceConfig, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
                 seed: int, cluster_resources: dict[str, float] | None = None, **options: Any) -> list:
    """``cfg.num_workers`` ClientWorker actors, after checking that the cluster can place them all.

    ``cluster_resources`` defaults to ``ray.cluster_resources()``; pass a trial's bundle totals inside Tune.
    """
    import ray

    resources = resolve_resources(cfg, ray.cluster_resources() if cluster_resources is None else cluster_resources)
    return [make_worker(resources, model_cfg, data_cfg, train_cfg, seed, **options)
            for _ in range(resources.num_workers)]


@functools.cache
def _remote_class():
    import ray

    return ray.remote(max_restarts=0)(ClientWorker)


def _ray_node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _ray_gpu_ids() -> list:
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # outside a Ray worker
        return []


def _assigned_device() -> str:
    """``"cuda"`` when Ray gave this actor a GPU and torch can see one (logical test GPUs stay on CPU)."""
    return "cuda" if _ray_gpu_ids() and torch.cuda.is_available() else "cpu"
