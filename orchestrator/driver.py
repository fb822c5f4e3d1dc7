"""The driver: global state, client sampling, the round loop, aggregation, metrics, evaluation.

One :class:`Driver` owns one federated experiment: the method object (pure math), its global state,
the persistent per-client state inside it, and a :class:`WorkerPool` of ClientWorker actors. A whole
round is one call (:meth:`Driver.run_round`), so the one-run CLI and a Tune trial can report and
checkpoint after each. The driver never branches on the method's name. Run it in-process or as a Ray
actor (:data:`DriverActor`).

Round ``t`` (0-based): sample ``floor(participation * N)`` clients uniformly without replacement from the
stream (seed, "sample", t); keep those the system model lets answer in time (``orchestrator.system_model``;
all of them without a ``system`` section; with none kept the state stays as it was); build their
ClientStarts; run them on free workers as workers free up (with ``resources.clients_per_worker = k > 1``
in fixed packs of ``k`` consecutive clients, one job per pack: :func:`client_jobs`);
aggregate (updates in client-id order, so completion order never matters); step the server optimizer
on the aggregate (noise is measured on the aggregate itself); measure noise and bytes;
evaluate every ``eval_every`` rounds and after the last round. An evaluated round's record carries its
per-example rows under ``"examples"``; :meth:`Driver.evaluate_initial` evaluates the untrained model
(round 0), once per run.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import ray
import torch

from core.naming import pack_label
from core.plugins import load_plugins
from core.rng import generator
from core.wire import ClientStart, ClientUpdate
from orchestrator.config import RunConfig
from orchestrator.methods import FederatedMethod, build_method
from orchestrator.metrics import module_cosine_similarity, noise_metrics, round_bytes
from orchestrator.pool import Job, WorkerPool
from orchestrator.preflight import similarity_module
from orchestrator.ranks import assign_ranks
from orchestrator.state import GlobalState
from orchestrator.system_model import RoundPlan, SystemModel, job_work
from orchestrator.untrained_cache import nonzero_deltas, untrained_key
from workers.actor import make_worker
from workers.eval_results import combine, example_rows, shard_ranges
from workers.resources import resolve_resources, torch_threads


class WorkerStartupError(RuntimeError):
    """A worker could not start (bad model, data file, column...): carries the worker's own message."""


class Driver:
    """Holds the global state of one run and performs its rounds on a pool of client workers."""

    def __init__(self, cfg: RunConfig, cluster_resources: dict[str, float] | None = None,
                 worker_options: dict[str, Any] | None = None):
        self.resources = resolve_resources(cfg.resources, cluster_resources or ray.cluster_resources())
        self.worker_options = dict(worker_options or {})
        self.pool = WorkerPool(self._factory(cfg), self.resources.num_workers)
        self.reused: list[dict[str, bool]] | None = None  # per worker, after reset(): what it kept
        preload("peft")  # the final export's LoraConfig, imported while the workers load the model
        self._start(cfg)

    def _factory(self, cfg: RunConfig):
        def factory(index: int):
            return make_worker(self.resources, cfg.model, cfg.data, cfg.train, cfg.seed, **self.worker_options)

        return factory

    def reset(self, cfg: RunConfig, cluster_resources: dict[str, float] | None = None) -> dict[str, Any]:
        """Run another experiment on the same worker actors (warm sweep trials).

        The resources must be the same (the workers hold them); every worker switches to ``cfg``
        (:meth:`workers.actor.ClientWorker.reconfigure`: the loaded model is kept where it can serve ``cfg``)
        and the driver starts over as a fresh ``Driver(cfg)`` would. Returns ``describe()``.
        """
        resources = resolve_resources(cfg.resources, cluster_resources or ray.cluster_resources())
        if resources != self.resources:
            raise ValueError(f"a driver on {self.resources} cannot serve a run that needs {resources}")
        self.pool.factory = self._factory(cfg)
        try:
            self.reused = self.pool.call_all("reconfigure", cfg.model, cfg.data, cfg.train, cfg.seed)
        except ray.exceptions.RayError as err:
            raise WorkerStartupError(startup_message(err)) from None
        self._start(cfg)
        return self.describe()

    def _start(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        first = self.pool.workers[0]
        try:
            specs, head, sizes, info, partition = ray.get([
                first.module_specs.remote(), first.initial_head.remote(), first.client_num_examples.remote(),
                first.data_info.remote(), first.partition_summary.remote()])
            self.worker_info = self.pool.call_all("ping")
        except ray.exceptions.RayActorError as err:
            self.pool.shutdown()
            raise WorkerStartupError(startup_message(err)) from None
        self.modules = specs
        self.data_info = info
        self.partition = partition
        self.client_sizes = {int(k): int(v) for k, v in sizes.items()}
        self.num_clients = cfg.data.num_clients
        self.client_ranks = assign_ranks(cfg.ranks, self.num_clients, cfg.seed)
        load_plugins(cfg.plugins)  # this actor's process resolves the method name too
        self.method: FederatedMethod = build_method(cfg.method, specs, self.client_ranks, cfg.ranks.max_rank,
                                                    cfg.seed)
        self.initial_head = head if cfg.method.train_head or head else None
        self.state: GlobalState = self.method.init_global(self.initial_head)
        self.round = 0
        self.similarity_module = self._similarity_module()
        self.system = SystemModel(cfg.system, cfg.seed, self.num_clients, cfg.clients_per_round, [
            job_work(cfg.train.total_steps(self.client_sizes.get(c, 0)), cfg.train.batch_size)
            for c in range(self.num_clients)])

    # ---------------------------------------------------------------------------------------------- state
    def describe(self) -> dict[str, Any]:
        """What the run is: modules, client ranks and sizes, partition summary, data info."""
        return {"modules": [(m.name, m.d_out, m.k_in) for m in self.modules], "client_ranks": self.client_ranks,
                "client_sizes": self.client_sizes, "partition": self.partition, "data": self.data_info,
                "num_workers": len(self.pool), "similarity_module": self.similarity_module,
                "workers": self.worker_info, "workers_reused": self.reused}

    def get_state(self) -> tuple[GlobalState, int]:
        """The global state and the number of completed rounds (for checkpoints)."""
        return self.state, self.round

    def set_state(self, state: GlobalState, completed_rounds: int) -> None:
        """Resume from a checkpoint: the state after ``completed_rounds`` rounds."""
        self.state, self.round = state, int(completed_rounds)

    def sample_clients(self, round_idx: int) -> list[int]:
        """``floor(participation * N)`` distinct clients from the stream (seed, "sample", round), sorted.

        With ``system.over_selection`` the first ``m'`` of the same permutation (``SystemModel.num_sampled``).
        """
        perm = torch.randperm(self.num_clients, generator=generator(self.cfg.seed, "sample", round_idx))
        return sorted(perm[: self.system.num_sampled].tolist())

    # ---------------------------------------------------------------------------------------------- round
    def run_round(self) -> dict[str, Any]:
        """Run the next round; returns its record (``round`` is 1-based) with per-client rows."""
        t, cfg = self.round, self.cfg
        t_start = time.perf_counter()
        plan, state_before = self.system.plan(t, self.sample_clients(t)), self.state
        clients = list(plan.kept)
        if not clients:
            return self._empty_round(plan, t_start)
        starts = [self.method.client_start(self.state, c, t) for c in clients]
        t_starts = time.perf_counter() - t_start

        k = cfg.resources.clients_per_worker
        t0 = time.perf_counter()
        results = self.pool.run(client_jobs(starts, k, t))
        t_train = time.perf_counter() - t0
        sent = self.pool.last_broadcast
        updates, pack_of = unpack_updates([r.value for r in results], k, clients)

        t0 = time.perf_counter()
        agg = self.method.aggregate(self.state, starts, updates)
        stepped = self.method.server_step(self.state, agg.state)  # method.server_optimizer (avg: agg.state)
        t_aggregate = time.perf_counter() - t0

        t0 = time.perf_counter()
        record: dict[str, Any] = {"round": t + 1, "method": cfg.method.name, "clients": len(clients)}
        with torch_threads(cfg.resources.metrics_threads):  # resources.metrics_threads (default 1)
            record.update(noise_metrics(self.method, self.state, starts, agg) if cfg.metrics.noise else {})
            similarity = self._similarity(starts, updates)
        down, up = round_bytes(starts, updates)
        record.update(bytes_down=down, bytes_up=up, bytes_serialized=sent.serialized,
                      bytes_serialized_per_job=sent.per_job)
        t_metrics = time.perf_counter() - t0

        self.state = stepped
        self.round = t + 1
        t0 = time.perf_counter()
        if self.round % cfg.eval_every == 0 or self.round == cfg.rounds:
            record.update(self.evaluate())
        t_eval = time.perf_counter() - t0
        eval_restarts = record.pop("worker_restarts", 0)

        n_total = sum(u.n_examples for u in updates)
        record["train_loss"] = (sum(u.train_loss * u.n_examples for u in updates) / n_total
                                if n_total else float("nan"))
        compute = [u.compute_seconds for u in updates]
        record.update(
            mean_rank=sum(s.rank for s in starts) / len(starts),
            t_client_compute_sum=sum(compute), t_client_compute_max=max(compute), t_train_wall=t_train,
            t_client_starts=t_starts, t_aggregate=t_aggregate, t_metrics=t_metrics, t_eval=t_eval,
            t_round=time.perf_counter() - t_start,
            worker_restarts=sum(r.restarts for r in results) + eval_restarts)
        record["client_rows"] = [
            {"round": t + 1, "client": u.client_id, **({"pack": p} if k > 1 else {}), "rank": s.rank,
             "n_examples": u.n_examples, "train_loss": u.train_loss, "steps": u.steps,
             "compute_seconds": u.compute_seconds, "weight": agg.weights[u.client_id],
             "restarts": results[p].restarts, "peak_gpu_bytes": u.peak_memory_bytes}
            for s, u, p in zip(starts, updates, pack_of)]
        if self.cfg.system.active:
            self._add_system_columns(record, plan, state_before)
        if similarity is not None:
            record["similarity"] = similarity
        return record

    def _add_system_columns(self, record: dict[str, Any], plan: RoundPlan, state: GlobalState) -> None:
        """The round's simulated time and counts, and a clients.csv row per dropped client (with the reason).

        ``state``: the state the round started from (a dropped client's rank is the one it would have had).
        """
        record.update(plan.counts(), sim_round_seconds=plan.round_seconds)
        for row in record["client_rows"]:
            c = row["client"]
            row.update(outcome=plan.outcome[c], sim_seconds=plan.sim_seconds[c], speed=self.system.speed[c])
        record["client_rows"] += [
            {"round": plan.round + 1, "client": c, "rank": self.method.client_rank(state, c),
             "outcome": why, "sim_seconds": plan.sim_seconds.get(c, float("nan")), "speed": self.system.speed[c]}
            for c, why in sorted(plan.outcome.items()) if c not in plan.kept]

    def _empty_round(self, plan: RoundPlan, t_start: float) -> dict[str, Any]:
        """A round in which no sampled client's update arrives: the global state stays exactly as it was."""
        t = plan.round
        record: dict[str, Any] = {"round": t + 1, "method": self.cfg.method.name, "clients": 0,
                                  "bytes_down": 0, "bytes_up": 0, "client_rows": [],
                                  "note": "no client update arrived: global state unchanged"}
        self._add_system_columns(record, plan, self.state)
        self.round = t + 1
        t0 = time.perf_counter()
        if self.round % self.cfg.eval_every == 0 or self.round == self.cfg.rounds:
            record.update(self.evaluate())
        record.update(train_loss=float("nan"), t_eval=time.perf_counter() - t0, t_round=time.perf_counter() - t_start,
                      worker_restarts=0)
        return record

    def evaluate(self, state: GlobalState | None = None, round_idx: int | None = None,
                 drop_zero: bool = False) -> dict[str, Any]:
        """Global model on the global test set; personalized models (if any) on their clients' test splits.

        ``state`` defaults to the current global state and ``round_idx`` (the ``round`` of the per-example
        rows) to the number of completed rounds. Returns the metrics and, under ``"examples"``, the
        per-example rows as columns (``workers.eval_results.example_rows``: scope ``global`` with client -1,
        then ``personal`` per client in client order). The global test set is split into one shard of whole
        batches per worker (``workers.eval_results``), so evaluation uses every worker and its metrics and
        rows are identical for any number of workers. ``worker_restarts``: jobs of this evaluation re-run
        because their worker died (a training round adds them to its own count). ``drop_zero``: modules
        whose delta is exactly zero are evaluated as ``W0`` (the same function, without a fold).
        """
        state = self.state if state is None else state
        round_idx = self.round if round_idx is None else round_idx
        deltas, head = self.method.global_delta(state), state.head()
        personal = self._personal_deltas(state)
        if drop_zero:
            deltas = nonzero_deltas(deltas)
            personal = [(c, nonzero_deltas(p)) for c, p in personal]
        shards = shard_ranges(int(self.data_info["global_test_size"]), self.cfg.train.eval_batch_size, len(self.pool))
        jobs = [Job("evaluate_shard", (deltas, head, None, a, b), f"evaluation of the global model (examples {a}-{b})")
                for a, b in shards]
        jobs += [Job("evaluate_shard", (p, head, c), f"personalized evaluation of client {c}") for c, p in personal]
        personal_ids = [c for c, _ in personal]
        done = self.pool.run(jobs)
        results = [r.value for r in done]
        shard_results, personal_results = results[: len(shards)], results[len(shards):]
        renamed = {"loss": "eval_loss", "n_examples": "eval_examples"}
        out: dict[str, Any] = {renamed.get(k, k): v for k, v in combine(shard_results).items()}
        if personal_ids:
            per_client = [combine([p]) for p in personal_results]
            for key in (k for k in per_client[0] if k != "n_examples"):
                out[f"personal_{key}"] = sum(r[key] for r in per_client) / len(per_client)
            out["personal_clients"] = len(personal_ids)
        blocks = [("global", -1, shard_results)]
        blocks += [("personal", c, [p]) for c, p in zip(personal_ids, personal_results)]
        out["examples"] = example_rows(blocks, round_idx)
        out["worker_restarts"] = sum(r.restarts for r in done)  # workers that died during this evaluation
        return out

    def evaluate_initial(self) -> dict[str, Any]:
        """Round 0: the untrained model, evaluated once per run as the baseline of every later round.

        That is the method's initial global state (``init_global``: for every method ``W0`` plus initial
        adapters with ``B = 0``, i.e. the base model with the initial head), whatever round the driver is
        at (it is rebuilt from the seed). Returns the record ``{"round": 0, "method", metrics, "examples"}``.
        The modules whose initial delta is exactly zero (``B = 0``: all of them for every built-in method) are
        evaluated as ``W0`` itself, so the evaluation is the same computation for every method
        (:mod:`orchestrator.untrained_cache`).
        """
        return {"round": 0, "method": self.cfg.method.name, **self.evaluate(self._initial_state(), 0, drop_zero=True)}

    def untrained_key(self) -> str | None:
        """The key of the round-0 evaluation in :class:`orchestrator.untrained_cache.UntrainedCache`.

        ``None`` when some initial delta is not exactly zero (the untrained model then depends on the method).
        """
        state = self._initial_state()
        personal = self._personal_deltas(state)
        if nonzero_deltas(self.method.global_delta(state)) or any(nonzero_deltas(p) for _, p in personal):
            return None
        return untrained_key(self.cfg, state.head(), [c for c, _ in personal], self.resources.device)

    def _initial_state(self) -> GlobalState:
        return self.state if self.round == 0 else self.method.init_global(self.initial_head)

    def _personal_deltas(self, state: GlobalState) -> list[tuple[int, dict]]:
        """``(client, deltas)`` of every personalized model to evaluate (none unless ``eval_personal``)."""
        if not self.cfg.eval_personal:
            return []
        found = ((c, self.method.personal_delta(state, c)) for c in range(self.num_clients))
        return [(c, p) for c, p in found if p is not None]

    # -------------------------------------------------------------------------------------------- metrics
    def _similarity_module(self) -> str | None:
        return similarity_module(self.cfg.metrics.similarity_module, [m.name for m in self.modules])

    def _similarity(self, starts: list[ClientStart], updates: list[ClientUpdate]) -> list[list[float]] | None:
        m = self.similarity_module
        if m is None or not all("main" in s.adapters and m in s.adapters["main"] for s in starts):
            return None
        if any(None in s.adapters["main"][m].slots or not s.adapters["main"][m].slots for s in starts):
            return None
        rank = max(max(s.adapters["main"][m].slots) for s in starts) + 1  # type: ignore[type-var]
        rank = max(rank, self.method.global_rank)
        return module_cosine_similarity(starts, updates, m, rank).tolist()

    def export_global(self) -> dict[str, bytes]:
        """The global model as PEFT adapter files, written from the global factors and module names (no base model)."""
        from workers.export import export_adapter

        return export_adapter(self.method.global_delta(self.state), self.state.head(), self.data_info["task"])

    def shutdown(self) -> None:
        """Stop the worker actors."""
        self.pool.shutdown()


DriverActor = ray.remote(num_cpus=0)(Driver)


def preload(module: str) -> None:
    """Import ``module`` in a daemon thread, so a later import finds it loaded instead of waiting for it.

    A failure is left to the later import, which raises it where it matters.
    """
    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception:  # the real import reports it
            pass

    threading.Thread(target=load, name=f"preload-{module}", daemon=True).start()


def client_jobs(starts: Sequence[ClientStart], k: int, round_idx: int) -> list[Job]:
    """The pool jobs of round ``round_idx`` (0-based): its client starts, in client-id order, in packs of ``k``.

    ``k = 1``: one ``train`` job per client. ``k > 1``: pack ``p`` is the ``train_pack`` job of
    ``starts[p*k : (p+1)*k]`` (the last pack holds what is left), so which clients train together depends
    on the round's clients and ``k`` only, never on the number of workers or which worker is free first.
    A worker that dies re-runs its whole job (:class:`orchestrator.pool.WorkerPool`), a pack included.
    """
    if k == 1:
        return [Job("train", (s,), f"client {s.client_id} in round {round_idx + 1}") for s in starts]
    packs = [tuple(starts[i: i + k]) for i in range(0, len(starts), k)]
    return [Job("train_pack", (pack,), f"{pack_label([s.client_id for s in pack], round_idx)} (pack {p})")
            for p, pack in enumerate(packs)]


def unpack_updates(values: Sequence[Any], k: int, clients: Sequence[int]) -> tuple[list[ClientUpdate], list[int]]:
    """The updates of :func:`client_jobs`' results, one per client in ``clients`` order, and each one's job index.

    ``values``: the jobs' return values (a ``ClientUpdate`` per ``train`` job, a list per ``train_pack`` job).
    Raises when the updates are not those of ``clients`` in that order.
    """
    packs = [list(v) for v in values] if k > 1 else [[v] for v in values]
    updates = [u for pack in packs for u in pack]
    got = [u.client_id for u in updates]
    if got != list(clients):
        raise RuntimeError(f"the client jobs returned updates of clients {got}; expected {list(clients)}")
    return updates, [p for p, pack in enumerate(packs) for _ in pack]


def startup_message(err: BaseException) -> str:
    """The worker's own error message out of a Ray actor-creation failure (no Ray stack dump)."""
    text = str(err)
    for marker in ("ValueError: ", "FileNotFoundError: ", "KeyError: ", "OSError: ", "RuntimeError: "):
        if marker in text:
            tail = text.rsplit(marker, 1)[1].strip()
            return f"a client worker failed to start: {marker.rstrip(': ')}: {tail.splitlines()[0]}"
    return f"a client worker failed to start: {text.strip().splitlines()[-1] if text.strip() else err!r}"
