"""System heterogeneity: which sampled clients answer a round, how long they take, which updates count.

A FedScale-style device model (Lai et al., "FedScale", ICML 2022; over-selection as in Bonawitz et al.,
"Towards Federated Learning at Scale", MLSys 2019), in simulated time, separate from wall time: nothing
sleeps, and every decision is a pure function of (seed, round, client), so a result never depends on
the number of workers or on the order in which jobs finish.

Round ``t`` (0-based) of a run with ``m = clients_per_round``:

1. Sample ``m' = min(N, ceil(m * (1 + over_selection)))`` clients (the driver's stream (seed, "sample",
   t); ``m' = m`` without over-selection, so the sample is the same as without this section).
2. Availability: sampled client ``c`` answers with probability ``p_c`` (a Bernoulli draw from the stream
   (seed, "system", "available", t, c)), or, with a trace file, iff ``c`` is listed for round ``t + 1``.
   A client that does not answer is dropped (``unavailable``) and does no work.
3. Simulated compute time of an answering client: ``time_c = work_c * speed_c * seconds_per_example``,
   where ``work_c = local steps x batch size`` (the examples its job processes, from ``train`` and the
   client's data size; ``workers.train_config.TrainConfig.total_steps``) and ``speed_c`` the client's
   speed factor (fixed per client: drawn once from the stream (seed, "system", "speed", c), or given).
   This is deterministic by construction (never measured): compute proportional to processed examples;
   the LoRA rank's share of the compute and communication time are not modelled.
4. Deadline ``D``: a client with ``time_c > D`` is dropped (``deadline``).
5. Over-selection: of the clients that made it, the first ``m`` to finish (by ``time_c``, ties by client
   id) are kept; the rest are dropped (``over_selected``).

Only the kept clients train; their updates are aggregated (partial aggregation). A dropped client's
work is discarded with it, including any local state it would have changed. The round's simulated
length is the finish time of its last kept client when ``m`` updates arrived, otherwise the deadline
(the server waited for it) or, without a deadline, the last kept client's finish time (0 with none).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from core.rng import generator
from core.validation import check_choice, is_number

SPEED_MODES = ("constant", "lognormal", "uniform", "list")
UNAVAILABLE, DEADLINE, OVER_SELECTED, USED = "unavailable", "deadline", "over_selected", "used"


@dataclass(frozen=True)
class SystemConfig:
    """The ``system`` section: client availability, speed, a round deadline and over-selection.

    ``availability``: probability that a sampled client answers in a round (every client), unless
    ``availability_per_client`` (one probability per client) or ``availability_trace`` (a CSV file with
    columns ``round,client``: the clients available in each 1-based round; the trace repeats with the
    period of its largest round; a round it does not list has no client available) is given.
    ``speed``: the clients' speed factors (a straggler's factor multiplies its compute time):
    ``constant`` (1), ``lognormal`` (``exp(speed_spread * z)``, ``z ~ N(0, 1)``), ``uniform`` (in
    ``[1, 1 + speed_spread]``) or ``list`` (``speed_factors``, one per client). ``deadline``: simulated
    seconds a round waits (``None``: no deadline). ``over_selection``: sample this fraction more clients
    and keep the first ``clients_per_round`` to finish. ``seconds_per_example``: simulated seconds of
    one example's forward and backward pass at speed 1.
    """

    availability: float = 1.0
    availability_per_client: tuple[float, ...] = ()
    availability_trace: str | None = None
    speed: str = "constant"
    speed_spread: float = 0.0
    speed_factors: tuple[float, ...] = ()
    deadline: float | None = None
    over_selection: float = 0.0
    seconds_per_example: float = 1.0

    def __post_init__(self) -> None:
        _check_probability("system.availability", self.availability)
        for i, p in enumerate(self.availability_per_client):
            _check_probability(f"system.availability_per_client[{i}]", p)
        if self.availability_trace is not None:
            if self.availability_per_client:
                raise ValueError("give system.availability_per_client or system.availability_trace, not both")
            if not isinstance(self.availability_trace, str) or not Path(self.availability_trace).is_file():
                raise ValueError(f"system.availability_trace={self.availability_trace!r} is not a file; give a CSV "
                                 "with columns round,client")
        check_choice("system.speed", self.speed, SPEED_MODES)
        if not (is_number(self.speed_spread) and self.speed_spread >= 0):
            raise ValueError(f"system.speed_spread={self.speed_spread!r} must be a finite number >= 0")
        for i, s in enumerate(self.speed_factors):
            if not (is_number(s) and s > 0):
                raise ValueError(f"system.speed_factors[{i}]={s!r} must be a finite number > 0")
        if (self.speed == "list") != bool(self.speed_factors):
            raise ValueError("system.speed_factors (one factor per client) is used iff system.speed='list'; got "
                             f"speed={self.speed!r} with {len(self.speed_factors)} factors")
        if self.deadline is not None and not (is_number(self.deadline) and self.deadline > 0):
            raise ValueError(f"system.deadline={self.deadline!r} must be a finite number > 0 (simulated seconds) "
                             "or null (no deadline)")
        if not (is_number(self.over_selection) and self.over_selection >= 0):
            raise ValueError(f"system.over_selection={self.over_selection!r} must be a finite number >= 0")
        if not (is_number(self.seconds_per_example) and self.seconds_per_example > 0):
            raise ValueError(f"system.seconds_per_example={self.seconds_per_example!r} must be a finite number > 0")

    @property
    def active(self) -> bool:
        """Whether any option differs from "every client answers at once" (the section's defaults)."""
        return self != SystemConfig()

    def check_clients(self, num_clients: int) -> None:
        """The per-client lists and the trace against ``data.num_clients``."""
        for name, values in (("availability_per_client", self.availability_per_client),
                             ("speed_factors", self.speed_factors)):
            if values and len(values) != num_clients:
                raise ValueError(f"system.{name} has {len(values)} entries; give one per client "
                                 f"(data.num_clients={num_clients})")
        if self.availability_trace is not None:
            read_trace(self.availability_trace, num_clients)


def _check_probability(name: str, value: object) -> None:
    if not (is_number(value) and 0.0 <= value <= 1.0):  # type: ignore[operator]
        raise ValueError(f"{name}={value!r} must be a probability in [0, 1]")


def read_trace(path: str, num_clients: int) -> dict[int, frozenset[int]]:
    """``{1-based round: available clients}`` from a CSV with columns ``round,client``."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"round", "client"} <= set(reader.fieldnames):
            raise ValueError(f"system.availability_trace={path!r} needs the columns round,client; got "
                             f"{reader.fieldnames}")
        rows: dict[int, set[int]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                r, c = int(row["round"]), int(row["client"])
            except (TypeError, ValueError):
                raise ValueError(f"system.availability_trace={path!r} line {line}: round and client must be "
                                 f"integers; got {row}") from None
            if r < 1 or not 0 <= c < num_clients:
                raise ValueError(f"system.availability_trace={path!r} line {line}: round must be >= 1 and client "
                                 f"in [0, {num_clients - 1}] (data.num_clients={num_clients}); got {r},{c}")
            rows.setdefault(r, set()).add(c)
    if not rows:
        raise ValueError(f"system.availability_trace={path!r} lists no (round, client) row")
    return {r: frozenset(cs) for r, cs in rows.items()}


@dataclass(frozen=True)
class RoundPlan:
    """Who is sampled, who answers and in what simulated time, and whose update is aggregated in one round.

    ``sampled``: the sampled clients (sorted); ``kept``: those that train and are aggregated (sorted);
    ``outcome[c]``: ``used`` or the reason ``c`` was dropped; ``sim_seconds[c]``: simulated compute time
    of every client that answered; ``round_seconds``: the round's simulated length.
    """

    round: int
    sampled: tuple[int, ...]
    kept: tuple[int, ...]
    outcome: dict[int, str]
    sim_seconds: dict[int, float]
    round_seconds: float

    def counts(self) -> dict[str, int]:
        """``sampled``, ``updates`` and ``dropped_<reason>`` counts (the round's columns in rounds.csv)."""
        out = {"sampled": len(self.sampled), "updates": len(self.kept)}
        for reason in (UNAVAILABLE, DEADLINE, OVER_SELECTED):
            out[f"dropped_{reason}"] = sum(1 for o in self.outcome.values() if o == reason)
        return out


class SystemModel:
    """The system section applied to one run: speed factors fixed per client, a plan per round."""

    def __init__(self, cfg: SystemConfig, seed: int, num_clients: int, clients_per_round: int,
                 work: list[float]):
        if len(work) != num_clients:
            raise ValueError(f"work has {len(work)} entries for {num_clients} clients")
        cfg.check_clients(num_clients)
        self.cfg, self.seed, self.num_clients, self.m = cfg, seed, num_clients, clients_per_round
        self.work = [float(w) for w in work]
        self.speed = speed_factors(cfg, seed, num_clients)
        self.trace = read_trace(cfg.availability_trace, num_clients) if cfg.availability_trace else None

    @property
    def num_sampled(self) -> int:
        """``m' = min(N, ceil(m (1 + over_selection)))`` (``m`` itself without over-selection)."""
        return min(self.num_clients, math.ceil(self.m * (1.0 + self.cfg.over_selection) - 1e-9))

    def available(self, round_idx: int, client: int) -> bool:
        """Whether ``client`` answers in 0-based round ``round_idx``."""
        if self.trace is not None:
            period = max(self.trace)
            return client in self.trace.get(round_idx % period + 1, frozenset())
        p = self.cfg.availability_per_client[client] if self.cfg.availability_per_client else self.cfg.availability
        if p >= 1.0:
            return True
        u = torch.rand(1, generator=generator(self.seed, "system", "available", round_idx, client), dtype=torch.float64)
        return bool(u.item() < p)

    def compute_seconds(self, client: int) -> float:
        """Simulated compute time of ``client``'s job: ``work x speed x seconds_per_example``."""
        return self.work[client] * self.speed[client] * self.cfg.seconds_per_example

    def plan(self, round_idx: int, sampled: list[int]) -> RoundPlan:
        """Steps 2-5 of the module docstring for the ``sampled`` clients of round ``round_idx``."""
        outcome: dict[int, str] = {}
        times: dict[int, float] = {}
        for c in sorted(sampled):
            if not self.available(round_idx, c):
                outcome[c] = UNAVAILABLE
                continue
            times[c] = self.compute_seconds(c)
            if self.cfg.deadline is not None and times[c] > self.cfg.deadline:
                outcome[c] = DEADLINE
        in_time = sorted((times[c], c) for c in times if c not in outcome)
        for _, c in in_time[self.m:]:
            outcome[c] = OVER_SELECTED
        kept = sorted(c for _, c in in_time[: self.m])
        for c in kept:
            outcome[c] = USED
        last = max((times[c] for c in kept), default=0.0)
        waited = len(kept) < self.m and self.cfg.deadline is not None
        return RoundPlan(round_idx, tuple(sorted(sampled)), tuple(kept), outcome, times,
                         float(self.cfg.deadline) if waited else last)


def speed_factors(cfg: SystemConfig, seed: int, num_clients: int) -> list[float]:
    """Client ``c``'s speed factor (multiplies its compute time), from the stream (seed, "system", "speed", c)."""
    if cfg.speed == "list":
        return [float(s) for s in cfg.speed_factors]
    if cfg.speed == "constant":
        return [1.0] * num_clients
    out = []
    for c in range(num_clients):
        g = generator(seed, "system", "speed", -1, c)
        if cfg.speed == "lognormal":
            out.append(math.exp(cfg.speed_spread * torch.randn(1, generator=g, dtype=torch.float64).item()))
        else:
            out.append(1.0 + cfg.speed_spread * torch.rand(1, generator=g, dtype=torch.float64).item())
    return out


def job_work(total_steps: int, batch_size: int) -> float:
    """Examples one local job processes: ``local steps x batch size`` (the unit of simulated compute)."""
    return float(total_steps * batch_size)
