"""Ray Tune glue: one Tune trial = one federated experiment, reserving its actors' resources.

Each trial is a function trainable wrapped as ``tune.with_resources(trainable, PlacementGroupFactory([driver
bundle] + [worker bundle] * num_workers))``. The driver bundle is empty by default (the trainable and the
Driver actor, ``num_cpus=0``, mostly wait on workers; ``driver_cpus`` reserves CPU for them); Tune then
puts the trainable on bundle 0 with zero resources. Tune schedules the trainable with
``placement_group_capture_child_tasks=True``, so the Driver actor it creates and the ClientWorker actors
the Driver creates all land in the trial's placement group (checked by ``tests/test_sweeps.py``). The
worker bundle comes from :func:`workers.resources.resolve_resources` against the cluster, with its
fail-fast checks, before any trial starts; the resolved GPU share is written into the trial's config
(``resources.gpus_per_worker``) so the Driver, which resolves again against the trial's bundle totals,
asks for exactly the reserved share.

The trainable writes into ``SWEEP_DIR/trials/<trial_id>/`` (a stable id from the trial's position and
labels): the Experiment's own files and checkpoints (the same files as a one-run folder: rounds.csv with
its round-0 row, examples.parquet, summary.json ...), plus ``trial.json`` (status, rounds, wall time,
error message, ``data_notes``, and per attempt the round it started from and the node ids of its trainable
and workers under ``placements``). After every round it calls ``tune.report(round metrics)`` (rounds >= 1;
the untrained model's round 0 is evaluated by the Experiment before and not reported); on rounds where
the Experiment checkpointed it attaches a tiny Tune checkpoint that records the round. On restore it
resumes the Experiment from its folder, which holds the real state; a finished trial is not rerun. The
data notes (split deviations, truncation) are kept in ``trial.json`` (written after every round), and
:class:`sweeps.progress.SweepProgress` prints each distinct note once on the sweep's console.

Warm trials: Tune reuses a finished trial's trainable process, with its placement group, for the next
trial that asks for the same bundles (``reuse_actors``). The trainable keeps its Driver actor, and with it
the ClientWorker actors and their loaded models, in :data:`_WARM`, and the next trial runs on them
(:meth:`orchestrator.driver.Driver.reset`; a worker reloads only what the new config changes), so the
second and later trials of a trainable skip Ray actor start-up, the imports and the model load. Results
are bitwise those of fresh actors. A failed trial, or one run with ``warm=False``, keeps nothing.

The untrained model (round 0) is the same for every method of one model, data setting and seed; it is
evaluated by the first trial of each and kept in ``SWEEP_DIR/cache/untrained/`` for the others
(:mod:`orchestrator.untrained_cache`; ``trial.json``'s ``untrained_cached`` says which trials reused it).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.files import atomic_write_text
from orchestrator.config import RunConfig, build
from orchestrator.outputs import NON_SCALAR
from sweeps.trials import TrialSpec
from workers.resources import resolve_resources

TRIALS_DIR = "trials"
UNTRAINED_CACHE_DIR = "cache/untrained"  # round-0 evaluations shared by the trials (orchestrator.untrained_cache)
TUNE_DIR = "tune"
TRIAL_STATE = "trial.json"
PLACEMENT_FILE = "placement.json"
MAX_ERROR_CHARS = 2000
_WARM: dict[str, Any] = {}  # this trainable process's kept Driver actor: {"driver": handle, "bundles": [...]}


class SweepResourceError(ValueError):
    """A trial whose worker pool can never fit the cluster (raised before any trial starts)."""


# ------------------------------------------------------------------------------------------- resources
def plan_resources(trials: list[TrialSpec], cluster: dict[str, float], driver_cpus: float = 0.0
                   ) -> dict[str, dict[str, Any]]:
    """Per trial: its bundles and the config to run (GPU share pinned); raises listing trials that cannot fit."""
    plan, errors = {}, []
    for t in trials:
        try:
            wr = resolve_resources(t.config.resources, cluster)
        except ValueError as err:
            errors.append(f"{t.trial_id} ({t.describe()}): {err}")
            continue
        if driver_cpus + wr.num_workers * wr.num_cpus > float(cluster.get("CPU", 0.0)) + 1e-9:
            errors.append(f"{t.trial_id}: driver {driver_cpus:g} CPU + {wr.num_workers} workers x "
                          f"{wr.num_cpus:g} CPU exceed the cluster's {cluster.get('CPU', 0):g} CPUs")
            continue
        config = t.config.to_dict()
        if wr.num_gpus > 0:
            config["resources"]["gpus_per_worker"] = wr.num_gpus
        head = {"CPU": float(driver_cpus)} if driver_cpus > 0 else {}
        bundles = [head] + [wr.bundle() for _ in range(wr.num_workers)]
        totals: dict[str, float] = {}
        for b in bundles:
            for k, v in b.items():
                totals[k] = totals.get(k, 0.0) + v
        plan[t.trial_id] = {"config": config, "bundles": bundles, "cluster_resources": totals}
    if errors:
        have = {k: v for k, v in cluster.items() if k in ("CPU", "GPU")}
        raise SweepResourceError(f"{len(errors)} trial(s) can never be placed on this Ray cluster {have} "
                                 "(nothing was started):\n  " + "\n  ".join(errors[:20]))
    return plan


PLACEMENT_STRATEGIES = ("PACK", "SPREAD")


def placement_factory(plan: dict[str, dict[str, Any]], strategy: str = "PACK") -> Callable[[dict], Any]:
    """``resources=`` callable of ``tune.with_resources``: the trial's PlacementGroupFactory.

    ``PACK`` puts a trial's bundles on as few nodes as possible; ``SPREAD`` on as many (both best effort:
    when a node dies, Ray places the lost bundles on the nodes that remain, if they have room).
    """
    from ray import tune

    def factory(config: dict) -> Any:
        return tune.PlacementGroupFactory(plan[config["trial"]]["bundles"], strategy=strategy)

    return factory


# ------------------------------------------------------------------------------------------- trainable
def read_trial_state(out: Path) -> dict[str, Any]:
    """``trial.json`` of a trial folder (empty dict when absent)."""
    path = out / TRIAL_STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state["ended_at"] = time.time()
    atomic_write_text(out / TRIAL_STATE, json.dumps(state, indent=1, default=str))


def short_error(err: BaseException) -> str:
    """``Type: message`` of the root cause, never a stack dump.

    Ray wraps a remote failure (e.g. ``ActorDiedError`` around the Driver's ``WorkerStartupError``) in a
    text that holds the remote traceback; its last ``SomeError: message`` line is the root cause.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1:
        causes = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b.*?: ", ln)]
        if causes:
            name, _, message = causes[-1].partition(": ")
            return f"{name.rsplit('.', 1)[-1]}: {message}"[:MAX_ERROR_CHARS]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:MAX_ERROR_CHARS]


def scalar_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The round record without per-client rows and the similarity matrix (what Tune gets)."""
    return {k: v for k, v in record.items() if k not in NON_SCALAR and isinstance(v, int | float | str | bool)}


def _tune_checkpoint(trial_id: str, round_: int):
    from ray import tune

    folder = tempfile.mkdtemp(prefix="sweep-ckpt-")
    Path(folder, "round.json").write_text(json.dumps({"trial_id": trial_id, "round": round_}))
    return tune.Checkpoint.from_directory(folder), folder


def _tune_checkpoint_round() -> int | None:
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        path = Path(d, "round.json")
        return int(json.loads(path.read_text())["round"]) if path.is_file() else None


def record_placement(out: Path) -> dict[str, Any]:
    """Write ``placement.json``: the trial's placement group, its bundles and what its actors hold.

    ``used``: per placement-group resource (``GPU_group_<i>_<id>`` = bundle ``i``), the amount taken by
    the actors now in it (total minus available), e.g. 0.25 GPU in every worker bundle.
    """
    import ray
    from ray.util import get_current_placement_group

    pg = get_current_placement_group()
    info: dict[str, Any] = {"pid": os.getpid(), "time": time.time(), "node_id": ray.get_runtime_context().get_node_id(),
                            "cluster_gpus": ray.cluster_resources().get("GPU", 0.0)}
    if pg is not None:
        pid = pg.id.hex()
        total, free = ray.cluster_resources(), ray.available_resources()
        info.update(placement_group_id=pid, bundles=pg.bundle_specs,
                    used={k: round(v - free.get(k, 0.0), 6) for k, v in total.items()
                          if k.endswith(f"_{pid}") and not k.startswith("bundle_group")})
    atomic_write_text(out / PLACEMENT_FILE, json.dumps(info, indent=1))
    return info


def _kept_driver(bundles: list) -> Any:
    """The Driver actor a previous trial of this process left for reuse, if it fits ``bundles`` and is alive."""
    import ray

    kept = _WARM.pop("driver", None)
    if kept is None:
        return None
    if _WARM.pop("bundles", None) == bundles:
        try:
            ray.get(kept.describe.remote(), timeout=30)
            return kept
        except Exception:  # noqa: BLE001 - dead or stuck: start fresh
            pass
    _kill_driver(kept)
    return None


def _kill_driver(driver: Any) -> None:
    import ray

    try:
        ray.get(driver.shutdown.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - already gone
        pass
    try:
        ray.kill(driver)
    except Exception:  # noqa: BLE001
        pass


def run_trial(config: dict[str, Any], sweep_dir: str, plan: dict[str, dict[str, Any]], warm: bool = True) -> None:
    """Tune function trainable: run (or resume) the trial ``config["trial"]`` in its own folder.

    ``warm``: run on the Driver and workers a finished trial of this process kept, and keep them afterwards.
    """
    from orchestrator.run import Experiment

    trial_id = config["trial"]
    entry = plan[trial_id]
    cfg: RunConfig = build(RunConfig, entry["config"])
    out = Path(sweep_dir) / TRIALS_DIR / trial_id
    state = read_trial_state(out)
    if state.get("status") == "completed" and (out / "summary.json").is_file():
        _report_finished(out, trial_id, state)
        return
    prior_wall = float(state.get("wall_seconds", 0.0))
    state.update(trial_id=trial_id, attempts=int(state.get("attempts", 0)) + 1, status="running", error=None,
                 started_at=time.time())
    t0 = time.perf_counter()
    exp = None
    kept = _kept_driver(entry["bundles"]) if warm else None
    try:
        tune_round = _tune_checkpoint_round()
        options = dict(resume=True, cluster_resources=entry["cluster_resources"], input_warnings=entry.get("warnings"),
                       untrained_cache=Path(sweep_dir) / UNTRAINED_CACHE_DIR)
        try:
            exp = Experiment(cfg, out, driver=kept, **options)
        except Exception:
            if kept is None:
                raise
            _kill_driver(kept)  # the kept actors cannot serve this trial: fresh ones (a real error raises again)
            kept = None
            exp = Experiment(cfg, out, **options)
        state["setup_seconds"] = time.perf_counter() - t0
        state["warm_start"] = kept is not None
        state["untrained_cached"] = exp.untrained_cached
        state["data_notes"] = exp.data_notes  # printed once on the sweep's console by SweepProgress
        if tune_round is not None and tune_round > exp.completed:
            raise RuntimeError(f"Tune's checkpoint says round {tune_round} but {out} holds {exp.completed} "
                               "rounds: the trial folder was replaced; start a new sweep folder")
        placement = record_placement(out)
        state.setdefault("placements", []).append(
            {"attempt": state["attempts"], "from_round": exp.completed, "trainable_node": placement["node_id"],
             "worker_nodes": [w.get("node_id") for w in exp.description["workers"]]})
        reported = False
        while exp.completed < cfg.rounds:
            record = exp.step()
            state.update(rounds_completed=exp.completed, wall_seconds=prior_wall + time.perf_counter() - t0)
            _write_state(out, state)
            due = cfg.checkpoint_due(record["round"])
            _report(trial_id, record, state, due)
            reported = True
        exp.finish()
        state.update(status="completed", rounds_completed=exp.completed,
                     wall_seconds=prior_wall + time.perf_counter() - t0)
        _write_state(out, state)
        if warm:
            _WARM.update(driver=exp.detach(), bundles=entry["bundles"])
        if not reported:
            _report(trial_id, exp.records[-1], state, True)
    except Exception as err:
        state.update(status="error", error=short_error(err), wall_seconds=prior_wall + time.perf_counter() - t0,
                     rounds_completed=exp.completed if exp is not None else state.get("rounds_completed", 0))
        _write_state(out, state)
        raise RuntimeError(f"trial {trial_id} failed: {state['error']}") from None
    finally:
        if exp is not None:
            exp.close()


def _report(trial_id: str, record: dict[str, Any], state: dict[str, Any], checkpoint: bool) -> None:
    import shutil

    from ray import tune

    metrics = {**scalar_metrics(record), "trial_id": trial_id, "trial_wall_seconds": state["wall_seconds"],
               "trial_status": state["status"]}
    if not checkpoint:
        tune.report(metrics)
        return
    ckpt, folder = _tune_checkpoint(trial_id, int(record["round"]))
    try:
        tune.report(metrics, checkpoint=ckpt)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _report_finished(out: Path, trial_id: str, state: dict[str, Any]) -> None:
    """A restored trial that had already finished: report its last round again, run nothing."""
    import pandas as pd

    rounds = pd.read_csv(out / "rounds.csv")
    record = {k: v.item() if hasattr(v, "item") else v for k, v in rounds.iloc[-1].items()}
    record = {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}
    _report(trial_id, record, state, True)
