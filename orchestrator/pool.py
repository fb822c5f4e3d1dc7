"""A pool of worker actors that runs jobs as workers free up, and survives a worker that dies.

Jobs are submitted to idle workers and collected with ``ray.wait`` as they finish (no per-round
barrier between workers). A worker that dies (``RayActorError``) is replaced by a fresh actor from the
factory and its job re-runs on the next free worker; because every job is a pure function of its
inputs (the ClientStart carries its seeds; workers restore pristine weights), the result is identical
to a fault-free run. A job that raises inside the worker fails the whole call with
:class:`ClientJobError`, which names the job (client and round) and the cause. A tensor that several
jobs of one call share is put in the object store once (:mod:`orchestrator.broadcast`); ``last_broadcast``
holds the byte counts of the latest call.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from orchestrator.broadcast import DEFAULT_MIN_BYTES, BroadcastStats, share_tensors


class ClientJobError(RuntimeError):
    """A client job failed inside a worker (bad data, out of memory, a bug): names the job and the cause.

    The message is ``"<label> failed: <CauseType>: <cause>"``, e.g. ``"client 3 in round 2 failed: ValueError:
    ..."``. ``args`` are the constructor's own arguments, so the error survives pickling (it is raised inside
    the Driver, which is a Ray actor in every sweep trial, and crosses that process boundary).
    """

    def __init__(self, label: str, cause: BaseException):
        super().__init__(label, cause)
        self.label = label
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.label} failed: {type(self.cause).__name__}: {self.cause}"


@dataclass(frozen=True)
class Job:
    """One remote call: ``method(*args)`` on some worker; ``label`` names it in errors."""

    method: str
    args: tuple
    label: str


@dataclass
class JobResult:
    """A job's return value, with the seconds it waited in the pool and the restarts it needed."""

    value: Any
    wall_seconds: float
    restarts: int


class WorkerPool:
    """Runs jobs on a fixed number of actors made by ``factory(index)``; replaces actors that die.

    ``share_min_bytes``: tensors shared by several jobs of a call and at least this large are broadcast
    once (``None``: every job's arguments are serialised on their own).
    """

    def __init__(self, factory: Callable[[int], Any], size: int, max_restarts_per_job: int = 3,
                 share_min_bytes: int | None = DEFAULT_MIN_BYTES):
        if size < 1:
            raise ValueError(f"resources.num_workers={size} must be >= 1")
        self.factory = factory
        self.max_restarts_per_job = max_restarts_per_job
        self.share_min_bytes = share_min_bytes
        self.workers = [factory(i) for i in range(size)]
        self.replaced = 0
        self.last_broadcast = BroadcastStats(0, 0, 0, 0)

    def __len__(self) -> int:
        return len(self.workers)

    def call_all(self, method: str, *args: Any) -> list[Any]:
        """Call ``method`` once on every worker (e.g. to check they are up); returns results in order."""
        return ray.get([getattr(w, method).remote(*args) for w in self.workers])

    def call_one(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the first worker."""
        return self.run([Job(method, args, method)])[0].value

    def run(self, jobs: Sequence[Job], on_done: Callable[[int, JobResult], None] | None = None) -> list[JobResult]:
        """Run ``jobs`` (results in job order). ``on_done(index, result)`` is called as each finishes."""
        shared_args, self.last_broadcast = share_tensors([j.args for j in jobs], ray.put, self.share_min_bytes)
        jobs = [Job(j.method, a, j.label) for j, a in zip(jobs, shared_args)]
        results: list[JobResult | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))
        restarts = [0] * len(jobs)
        idle = deque(range(len(self.workers)))
        pending: dict[Any, tuple[int, int, float]] = {}  # ref -> (job index, worker slot, submit time)
        while queue or pending:
            while queue and idle:
                j, slot = queue.popleft(), idle.popleft()
                job = jobs[j]
                ref = getattr(self.workers[slot], job.method).remote(*job.args)
                pending[ref] = (j, slot, time.perf_counter())
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                j, slot, t0 = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except RayActorError:
                    restarts[j] += 1
                    if restarts[j] > self.max_restarts_per_job:
                        raise ClientJobError(jobs[j].label, RuntimeError(
                            f"its worker died {restarts[j]} times in a row")) from None
                    self._replace(slot)
                    queue.appendleft(j)
                    idle.append(slot)
                    continue
                except RayTaskError as err:
                    raise ClientJobError(jobs[j].label, _cause(err)) from None
                results[j] = JobResult(value, time.perf_counter() - t0, restarts[j])
                idle.append(slot)
                if on_done is not None:
                    on_done(j, results[j])  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def _replace(self, slot: int) -> None:
        try:
            ray.kill(self.workers[slot])
        except Exception:  # noqa: BLE001 - the actor is already gone
            pass
        self.workers[slot] = self.factory(slot)
        self.replaced += 1

    def shutdown(self) -> None:
        """Kill every worker actor."""
        for w in self.workers:
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001
                pass


def _cause(err: RayTaskError) -> BaseException:
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err
