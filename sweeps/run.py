"""Run a sweep of federated experiments on Ray Tune.

    python -m sweeps.run --preset quick --out results/quick
    python -m sweeps.run --config configs/sweeps/tiny_smoke.yaml --out DIR [--set key=value ...]
    python -m sweeps.run --resume DIR                  # continue an interrupted sweep (errored trials too)
    python -m sweeps.run --list-presets
    python -m sweeps.run --config examples/custom_method/sweep.yaml --out DIR     # plugins: in the YAML
    python -m sweeps.run --preset quick --plugin my_method.py --set ... --out DIR  # or on the command line
    python -m sweeps.run --preset paper_glue --out DIR --address auto --max-concurrent 8 --max-failures 2

Writes ``DIR/sweep.yaml`` (the resolved spec, the ``--set`` overrides, the trial list and the sweep's
fingerprint), one folder per trial in ``DIR/trials/<trial_id>/`` (an ``orchestrator.run`` folder plus
``trial.json``), Tune's own state in ``DIR/tune/``, and at the end ``DIR/results.parquet`` (one row per
trial x round) and ``DIR/trials.parquet`` (one row per trial). Every bad input (unknown key or method,
empty grid, bad value in any trial, a pool that cannot fit the cluster, a folder holding another sweep)
fails before any trial starts; data, model and method are checked for every trial before Ray starts
(:mod:`orchestrator.preflight`). Ctrl-C or SIGTERM stops the sweep (Tune's graceful stop) and prints the
command that resumes it. On a multi-node cluster DIR must be on storage every node can write.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from core.plugins import load_plugins
from orchestrator import preflight
from orchestrator.failures import report_failure, run_guarded
from orchestrator.run import init_ray
from orchestrator.signals import exit_process, forward_sigterm_as_sigint
from orchestrator.trackers import TRACKERS, LoggingConfig, check_installed
from sweeps.spec import (
    SweepSpec,
    SweepSpecError,
    available_presets,
    load_preset,
    load_spec_file,
    parse_overrides,
    parse_spec,
    with_plugins,
)
from sweeps.trials import TrialSpec, expand, sweep_fingerprint
from workers.resources import PLACEMENT_KEYS

SWEEP_FILE = "sweep.yaml"


class SweepSetupError(ValueError):
    """The sweep folder or the command line does not fit the request (raised before any trial starts)."""


# ------------------------------------------------------------------------------------------- the folder
def sweep_record(spec: SweepSpec, overrides: dict[str, Any], trials: list[TrialSpec]) -> dict[str, Any]:
    """What ``sweep.yaml`` holds."""
    return {"fingerprint": sweep_fingerprint(trials), "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "spec": spec.to_dict(), "overrides": overrides,
            "trials": [{"trial_id": t.trial_id, "label": t.label, "setting": t.setting, "seed": t.seed,
                        "axes": t.axes} for t in trials]}


def load_sweep_dir(out: Path) -> tuple[SweepSpec, dict[str, Any], dict[str, Any]]:
    """``(spec, overrides, record)`` of the sweep stored in ``out``."""
    path = out / SWEEP_FILE
    if not path.is_file():
        raise SweepSetupError(f"--resume {str(out)!r}: no sweep there (missing {SWEEP_FILE})")
    record = yaml.safe_load(path.read_text()) or {}
    return parse_spec(record["spec"]), dict(record.get("overrides") or {}), record


def check_out_dir(out: Path, trials: list[TrialSpec], resume: bool) -> dict[str, Any] | None:
    """Refuse a folder that holds a different sweep (or any other files); returns the stored record."""
    path = out / SWEEP_FILE
    if not path.is_file():
        if resume:
            raise SweepSetupError(f"--resume {str(out)!r}: no sweep there (missing {SWEEP_FILE})")
        if out.exists() and any(out.iterdir()):
            raise SweepSetupError(f"--out {str(out)!r} is not empty and holds no sweep; use a new folder")
        return None
    record = yaml.safe_load(path.read_text()) or {}
    fingerprint = sweep_fingerprint(trials)
    if record.get("fingerprint") != fingerprint:
        raise SweepSetupError(
            f"{str(out)!r} holds a different sweep ({record.get('spec', {}).get('name')!r}, fingerprint "
            f"{record.get('fingerprint')}; this one is {fingerprint}): {describe_difference(record, trials)}. "
            "Use a new --out folder (or --resume DIR without --preset/--config/--set to continue that sweep)")
    if not resume:
        raise SweepSetupError(f"--out {str(out)!r} already holds this sweep; pass --resume {out} to continue it")
    return record


def describe_difference(record: dict[str, Any], trials: list[TrialSpec]) -> str:
    """A short account of how a stored sweep differs from ``trials``."""
    from orchestrator.run import config_diff

    stored = {t["trial_id"]: t for t in record.get("trials", [])}
    ids = [t.trial_id for t in trials]
    added = [i for i in ids if i not in stored]
    removed = [i for i in stored if i not in set(ids)]
    if added or removed:
        return (f"{len(stored)} stored trials vs {len(ids)} now; new: {added[:3]}{'...' if len(added) > 3 else ''}; "
                f"gone: {removed[:3]}{'...' if len(removed) > 3 else ''}")
    try:
        old_spec = parse_spec(record["spec"])
        old = {t.trial_id: t for t in expand(old_spec, record.get("overrides") or {})}
        for t in trials:
            diff = config_diff(old[t.trial_id].config.to_dict(), t.config.to_dict())
            diff = [d for d in diff if d.split(":")[0] not in {f"resources.{k}" for k in PLACEMENT_KEYS}]
            if diff:
                return f"trial {t.trial_id} changed: {', '.join(diff[:4])}"
    except (SweepSpecError, KeyError, ValueError):
        pass
    return "same trial ids, different configs"


def resolve_request(args: argparse.Namespace) -> tuple[SweepSpec, dict[str, Any], list[TrialSpec], Path]:
    """The spec, overrides, validated trials and folder of the command line (nothing started yet)."""
    given = sum(bool(x) for x in (args.preset, args.config))
    if given > 1:
        raise SweepSetupError("give either --preset or --config, not both")
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise SweepSetupError("--resume DIR continues the sweep in DIR; drop --out or make it the same folder")
    out = Path(args.resume or args.out or "")
    if not (args.resume or args.out):
        raise SweepSetupError("--out DIR is required (or --resume DIR)")
    plugins = list(getattr(args, "plugin", None) or [])
    load_plugins(plugins)  # before any method name is checked
    if args.resume and not given and not args.overrides:
        spec, overrides, _ = load_sweep_dir(out)
        spec = with_plugins(spec, plugins)
    elif not given:
        raise SweepSetupError(f"--preset NAME or --config FILE is required; presets: {available_presets()}")
    else:
        spec = with_plugins(load_preset(args.preset) if args.preset else load_spec_file(args.config), plugins)
        overrides = parse_overrides(args.overrides)
    trials = expand(spec, overrides)
    check_out_dir(out, trials, bool(args.resume))
    return spec, overrides, trials, out


# ------------------------------------------------------------------------------------------------ Ray
def run_sweep(spec: SweepSpec, overrides: dict[str, Any], trials: list[TrialSpec], out: Path, *, resume: bool = False,
              max_concurrent: int | None = None, driver_cpus: float = 0.0, summary_every: float = 60.0,
              log: Callable[[str], None] = print, logging: LoggingConfig | None = None,
              warm_trials: bool = True, max_failures: int = 0, placement: str = "PACK",
              input_warnings: dict[str, list[str]] | None = None) -> Any:
    """Run (or continue) the sweep in ``out`` on the connected Ray cluster; writes the result tables.

    ``warm_trials``: a trial runs on the workers (and loaded models) of the trial its Tune process ran before
    (``sweeps.tune_runner``); ``False`` starts fresh actors for every trial. ``max_failures``: Tune restarts a
    failed trial (a lost node, a killed actor) up to this many times; it resumes from the trial's last
    checkpoint (``checkpoint_every``) to the same numbers. ``placement``: the placement-group strategy of
    every trial (``PACK`` or ``SPREAD`` over the nodes).

    Returns the trials frame. Raises :class:`~sweeps.tune_runner.SweepResourceError` before any trial
    starts when a trial's pool cannot fit the cluster. ``input_warnings``: per trial id, the pre-flight
    warnings (:func:`check_trials`), kept in the trial's ``summary.json``.
    """
    import ray
    from ray import tune

    from core.files import atomic_write_text
    from sweeps.progress import SweepProgress
    from sweeps.results import build_tables, format_trials, write_tables
    from sweeps.tracking import tracker_callbacks
    from sweeps.tune_runner import TUNE_DIR, placement_factory, plan_resources, run_trial, short_error

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative data paths keep working in trials
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter at verbose=0 prints nothing
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    out = out.resolve()
    cluster = ray.cluster_resources()
    plan = plan_resources(trials, cluster, driver_cpus)
    for tid, notes in (input_warnings or {}).items():
        plan[tid]["warnings"] = notes
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SWEEP_FILE).is_file():
        atomic_write_text(out / SWEEP_FILE, yaml.safe_dump(sweep_record(spec, overrides, trials), sort_keys=False))
    ids = [t.trial_id for t in trials]
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep_dir=str(out), plan=plan, warm=warm_trials),
                                    resources=placement_factory(plan, placement))
    progress = SweepProgress(trials, out, summary_every=summary_every, log=log)
    callbacks = [progress, *tracker_callbacks(logging or spec.logging_config(), trials, out, spec.name)]
    workers = {plan[i]["bundles"][1].get("CPU", 0) for i in ids}
    log(f"sweep {spec.name!r}: {len(trials)} trials, fingerprint {sweep_fingerprint(trials)}, cluster "
        f"CPU={cluster.get('CPU', 0):g} GPU={cluster.get('GPU', 0):g}, max concurrent "
        f"{max_concurrent or 'as many as fit'}, per-worker CPU {sorted(workers)} -> {out}")
    tune_path = out / TUNE_DIR
    t0 = time.perf_counter()
    if resume and tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        _override_restored(tuner, callbacks, max_concurrent, log)
    else:
        tuner = tune.Tuner(
            trainable, param_space={"trial": tune.grid_search(ids)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True,
                                        trial_name_creator=lambda t: t.config["trial"],
                                        trial_dirname_creator=lambda t: t.config["trial"]),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(out), verbose=0, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    _quiet_trial_tracebacks()
    grid = tuner.fit()
    tune_errors = {}
    for result in grid:
        if result.error is not None and result.config:
            tune_errors[result.config["trial"]] = short_error(result.error)
    results, table = build_tables(out, trials, tune_errors)
    write_tables(out, results, table)
    wall = time.perf_counter() - t0
    counts = table["status"].value_counts().to_dict()
    _append_run_log(out, {"finished": _dt.datetime.now().isoformat(timespec="seconds"), "resume": resume,
                          "sweep_seconds": wall, "max_concurrent": max_concurrent, "driver_cpus": driver_cpus,
                          "cluster": {k: cluster.get(k, 0.0) for k in ("CPU", "GPU")}, "statuses": counts,
                          "trial_seconds_sum": float(table["wall_seconds"].fillna(0).sum())})
    ended = "finished" if table["status"].isin(["completed", "error"]).all() else "stopped"
    log(f"sweep {spec.name!r} {ended} after {wall:.1f} s: {counts}\n{format_trials(table)}\n"
        f"tables: {out / 'results.parquet'}, {out / 'trials.parquet'}")
    if not table["status"].isin(["completed", "error"]).all():
        unfinished = int((~table["status"].isin(["completed", "error"])).sum())
        log(f"{unfinished} trial(s) did not finish; their last checkpoints are whole. Continue with:\n"
            f"  {resume_command(out)}")
    return table


class _DropTrialTracebacks(logging.Filter):
    """Drop Tune's per-trial failure tracebacks and its resume hint after Ctrl-C.

    The progress line and ``trial.json`` carry a trial's message; the hint names ``Tuner.restore``, and the
    sweep prints its own command.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not msg.startswith(("Trial task failed for trial", "Trials did not complete",
                                   "Experiment has been interrupted"))  # the last one names Tune's own resume call


def _quiet_trial_tracebacks() -> None:
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTrialTracebacks) for f in logger.filters):
            logger.addFilter(_DropTrialTracebacks())


def _append_run_log(out: Path, entry: dict[str, Any]) -> None:
    """``DIR/runs.json``: one entry per (resumed) run of the sweep: wall time, concurrency, statuses."""
    import json

    from core.files import atomic_write_text

    path = out / "runs.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    atomic_write_text(path, json.dumps(runs + [entry], indent=1, default=str))


def _override_restored(tuner: Any, callbacks: list[Any], max_concurrent: int | None,
                       log: Callable[[str], None]) -> None:
    """Give a restored Tuner this run's callbacks (progress printer, trackers) and ``--max-concurrent``.

    ``Tuner.restore`` brings back the interrupted run's callbacks and concurrency (pickled in ``tuner.pkl``)
    and has no public way to change them, so they are set on its internal state.
    """
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None or not hasattr(internal, "_run_config") or not hasattr(internal, "_tune_config"):
        log("note: this Ray version hides the restored Tuner's settings; keeping the interrupted run's "
            "progress printer and concurrency")
        return
    internal._run_config.callbacks = callbacks
    internal._tune_config.max_concurrent_trials = max_concurrent


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m sweeps.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help=f"a built-in sweep: {', '.join(available_presets())}")
    parser.add_argument("--config", help="a sweep YAML file")
    parser.add_argument("--out", help="results folder")
    parser.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR (unfinished and errored trials)")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE",
                        help="a Python file (or module) that @registers a method; imported here and in every trial")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one run-config option in every trial, e.g. --set rounds=5")
    parser.add_argument("--address", help="Ray cluster address ('auto' joins a running cluster)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    parser.add_argument("--num-gpus", type=int, help="GPUs of a local Ray instance (default: detected)")
    parser.add_argument("--max-concurrent", type=int, help="at most N trials at once (default: as many as fit)")
    parser.add_argument("--driver-cpus", type=float, default=0.0,
                        help="CPUs reserved per trial for its driver (default 0: it waits on workers)")
    parser.add_argument("--max-failures", type=int, default=0,
                        help="restart a failed trial (e.g. its node died) up to N times from its last checkpoint")
    parser.add_argument("--placement", choices=["PACK", "SPREAD"], default="PACK",
                        help="spread a trial's actors over as few (PACK) or as many (SPREAD) nodes as possible")
    parser.add_argument("--summary-every", type=float, default=60.0, help="seconds between progress summaries")
    parser.add_argument("--worker-logs", action="store_true", help="show the actors' own log lines")
    parser.add_argument("--cold-trials", action="store_true",
                        help="fresh worker actors for every trial (default: reuse finished trials' loaded models)")
    parser.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    parser.add_argument("--log", action="append", default=[], choices=TRACKERS, metavar="TRACKER",
                        help=f"record every trial in a tracker (repeatable): {', '.join(TRACKERS)}; offline, in "
                             "DIR/trackers unless the sweep's logging.dir says otherwise")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    if args.list_presets:
        print("\n".join(available_presets()))
        return 0
    try:
        if args.max_concurrent is not None and args.max_concurrent < 1:
            raise SweepSetupError(f"--max-concurrent {args.max_concurrent} must be >= 1")
        if args.max_failures < 0:
            raise SweepSetupError(f"--max-failures {args.max_failures} must be >= 0")
        with preflight.input_warnings() as notes:
            spec, overrides, trials, out = resolve_request(args)
        logging_config = spec.logging_config(args.log)
        check_installed(logging_config.trackers)
        cluster = None if args.address else preflight.local_cluster_resources(args.num_cpus, args.num_gpus)
        per_trial = check_trials(trials, cluster, args.driver_cpus)
    except KeyboardInterrupt:
        print("\ninterrupted during the checks; nothing was started", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a message, the traceback only with --debug
        report_failure(err, debug=args.debug)
        return 2
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    for note in dict.fromkeys(n for ns in per_trial.values() for n in ns):
        print(f"warning: {note} ({sum(note in ns for ns in per_trial.values())} trial(s))", file=sys.stderr)
    per_trial = {tid: notes + ns for tid, ns in per_trial.items()}
    tables = []

    def body() -> None:
        forward_sigterm_as_sigint()  # SIGTERM stops the sweep the way Ctrl-C does (Tune's graceful stop)
        tables.append(run_sweep(spec, overrides, trials, out, resume=bool(args.resume),
                                max_concurrent=args.max_concurrent, driver_cpus=args.driver_cpus,
                                summary_every=args.summary_every, logging=logging_config,
                                warm_trials=not args.cold_trials, max_failures=args.max_failures,
                                placement=args.placement, input_warnings=per_trial))

    code = run_guarded(lambda: init_ray(args.address, args.num_cpus, args.num_gpus, log_to_driver=args.worker_logs),
                       body, lambda: resume_lines(out), args.debug)
    if code or not tables:
        return code
    statuses = tables[0]["status"]
    if not statuses.isin(["completed", "error"]).all():
        return 130  # stopped by Ctrl-C / SIGTERM (Tune's graceful stop): resumable
    return 0 if (statuses == "completed").all() else 1


def resume_command(out: Path) -> str:
    """``python -m sweeps.run --resume DIR`` (DIR quoted for the shell)."""
    import shlex

    return f"python -m sweeps.run --resume {shlex.quote(str(out))}"


def resume_lines(out: Path) -> list[str]:
    """How to continue the sweep in ``out`` (nothing when it was never started there)."""
    if not (out / SWEEP_FILE).is_file():
        return []
    return ["finished trials and each unfinished trial's last checkpoint are kept; resume with:",
            f"  {resume_command(out)}"]


def check_trials(trials: list[TrialSpec], cluster: dict[str, float] | None, driver_cpus: float = 0.0
                 ) -> dict[str, list[str]]:
    """Pre-flight checks of every trial (:func:`orchestrator.preflight.check_run`) before Ray starts.

    Raises one :class:`SweepSetupError` listing every trial that cannot run; returns each trial's warnings.
    Data and model checks are shared among trials with the same data config and seed / model config.
    """
    from sweeps.tune_runner import plan_resources

    if cluster is not None:
        plan_resources(trials, cluster, driver_cpus)
    cache = preflight.PreflightCache()
    notes, errors = {}, {}
    for t in trials:
        try:
            notes[t.trial_id] = preflight.check_run(t.config, None, cache)
        except ValueError as err:
            errors.setdefault(str(err), []).append(t.trial_id)
    if errors:
        lines = [f"{message}  <- {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}"
                 for message, ids in errors.items()]
        raise SweepSetupError(f"{sum(map(len, errors.values()))} trial(s) cannot run (nothing was started):\n  "
                              + "\n  ".join(lines))
    return notes


if __name__ == "__main__":
    exit_process(main())
