"""One federated run from the command line.

    python -m orchestrator.run --config configs/minilm_fedplora.yaml --out runs/fedplora [--set key=value ...]
    python -m orchestrator.run --resume runs/fedplora          # continue a killed run
    python -m orchestrator.run --config ... --out DIR --overwrite
    python -m orchestrator.run --plugin my_method.py --set method.name=mymethod --out DIR   # a method of your own

Writes ``DIR/config.yaml`` (fully resolved), ``rounds.csv``, ``clients.csv``, ``similarity.csv``,
``partition.csv``, ``examples.parquet``, ``summary.json``, ``checkpoint/`` (every ``checkpoint_every``
rounds) and the final global adapter in PEFT format in ``DIR/adapter/``. Every bad input fails before any
work starts (:mod:`orchestrator.preflight`, before Ray starts), in a few lines (``--debug``: the traceback);
Ctrl-C or SIGTERM stops the run at once and prints the command that resumes it (:mod:`orchestrator.failures`).

Before round 1 the untrained model (the method's initial state) is evaluated once: rounds.csv's round-0
row, round 0 of examples.parquet and ``summary.json``'s ``baselines.untrained``. Its record is the first
line of ``checkpoint/records.jsonl`` and its rows ``checkpoint/examples/round-000000.parquet``, so a
resumed run keeps it (also when no round was checkpointed yet) and never evaluates it again. Each evaluated
round's per-example rows go to ``checkpoint/examples/round-<round>.parquet`` (files of rounds after the
checkpoint are deleted on resume); the end of the run gathers them into ``examples.parquet``
(:mod:`orchestrator.outputs`). The data notes of the workers (split deviations, truncation by
``data.max_length``) are printed once at the start and written to ``summary.json`` (``data_notes``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from orchestrator import remote
from orchestrator.checkpoint import (
    META_FILE,
    RECORDS_FILE,
    append_record,
    load_checkpoint,
    read_records,
    save_checkpoint,
    write_records,
)
from orchestrator.config import RunConfig, build, load_config
from orchestrator.failures import report_failure, resume_lines, run_guarded
from orchestrator.outputs import (
    RUN_MARKER,
    ExampleFiles,
    RoundFiles,
    summarize,
    write_config,
    write_csv,
    write_summary,
)
from orchestrator.preflight import (
    check_output_folder,
    check_resources,
    check_run,
    input_warnings,
    local_cluster_resources,
)
from orchestrator.progress import Progress
from orchestrator.signals import exit_process
from orchestrator.trackers import TRACKERS, RunTrackers, check_installed
from orchestrator.untrained_cache import UntrainedCache

CHECKPOINT_DIR = "checkpoint"
EXAMPLES_DIR = "examples"


class RunSetupError(ValueError):
    """Bad command-line input detected before any work."""


def prepare_out_dir(out: Path, cfg: RunConfig | None, resume: bool, overwrite: bool) -> RunConfig:
    """Check the output folder against the request; returns the config to run (the saved one on resume)."""
    marker = out / RUN_MARKER
    if resume:
        if not marker.is_file():
            raise RunSetupError(f"--resume {str(out)!r}: no run there (missing {RUN_MARKER})")
        saved_dict = yaml.safe_load(marker.read_text())
        saved_fp = saved_dict.pop("fingerprint", None)
        saved = build(RunConfig, saved_dict)
        if cfg is not None and cfg.fingerprint() != saved.fingerprint():
            diff = ", ".join(config_diff(saved.to_dict(), cfg.to_dict()))
            raise RunSetupError(f"--resume {str(out)!r}: the run there has a different config (changed: {diff}); "
                                "use a new --out, or --overwrite to start over")
        if saved_fp is not None and saved_fp != saved.fingerprint():
            raise RunSetupError(f"{marker} was edited by hand (fingerprint mismatch); start a new run")
        return cfg or saved
    if cfg is None:
        raise RunSetupError("--config or --set is required unless --resume is given")
    if out.exists() and not out.is_dir():
        raise RunSetupError(f"--out {str(out)!r} is a file; give a folder (new or empty)")
    if marker.is_file() and not completed_any_round(out):
        shutil.rmtree(out)  # a run that stopped before its first round: nothing of value, never blocks a new one
    if marker.exists() or (out.exists() and any(out.iterdir())):
        if not overwrite:
            raise RunSetupError(f"--out {str(out)!r} already holds files of another run; pass --resume {out} to "
                                "continue it or --overwrite to replace it")
        shutil.rmtree(out)
    return cfg


def completed_any_round(out: Path) -> bool:
    """Whether the run in ``out`` finished a round (a checkpoint, or a round >= 1 in its records)."""
    folder = out / CHECKPOINT_DIR
    if (folder / META_FILE).is_file():
        return True
    try:
        return any(line.strip() and json.loads(line).get("round", 0) >= 1
                   for line in (folder / RECORDS_FILE).read_text().splitlines())
    except (OSError, ValueError):
        return False


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(config_diff(va, vb, f"{prefix}{k}."))
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


class Experiment:
    """Drives one run: a Driver actor (with its worker pool), the output files and the checkpoints.

    ``driver``: a Driver actor kept from a finished run (:meth:`detach`) to run this one on the same workers
    (:meth:`orchestrator.driver.Driver.reset`); ``None`` starts a new one. ``untrained_cache``: a folder of
    round-0 evaluations shared by several runs (a sweep's ``cache/untrained``,
    :mod:`orchestrator.untrained_cache`): the untrained model is evaluated once per model, data and seed there.
    ``prefetch``: :meth:`step` starts the next round on the driver as soon as it has the current one's record
    (and, when a checkpoint is due, asked for its state first), so the files, the checkpoint and whatever the
    caller does between steps (a Tune report) overlap the next round instead of delaying it.
    """

    def __init__(self, cfg: RunConfig, out: Path, resume: bool = False,
                 cluster_resources: dict[str, float] | None = None, worker_options: dict | None = None,
                 driver_options: dict | None = None, input_warnings: list[str] | None = None,
                 driver: Any = None, untrained_cache: Path | None = None, prefetch: bool = True):
        from orchestrator.driver import DriverActor

        self.cfg, self.out = cfg, out
        self.untrained_cache = untrained_cache
        self.prefetch = prefetch
        self._pending: tuple[Any, float] | None = None  # the next round's ObjectRef and when it was started
        self._last_step_end: float | None = None
        self.untrained_cached = False  # whether round 0 came from the untrained cache
        self.input_warnings = list(input_warnings or [])  # pre-flight warnings, kept in summary.json
        self.fingerprint = cfg.fingerprint()
        records: list[dict[str, Any]] = []
        start_state = None
        folder = out / CHECKPOINT_DIR
        self.examples = ExampleFiles(out, folder / EXAMPLES_DIR)
        if resume and (folder / META_FILE).is_file():
            start_state, info = load_checkpoint(folder)
            if info.get("fingerprint") != self.fingerprint:
                raise RunSetupError(f"the checkpoint in {folder} was written by a different config")
            records = read_records(folder, int(info["round"]))
            self.examples.prune(int(info["round"]))
        elif resume and folder.is_dir() and saved_fingerprint(out) == self.fingerprint:
            records = read_records(folder, 0)  # no round was checkpointed: keep round 0, start from round 1
            self.examples.prune(0)
        elif folder.is_dir():
            shutil.rmtree(folder)
        self.baseline: dict[str, Any] | None = records[0] if records and records[0]["round"] == 0 else None
        self.records: list[dict[str, Any]] = [r for r in records if r["round"] >= 1]
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg.to_dict(), self.fingerprint)
        self.t_start = time.perf_counter()
        if driver is not None:
            self.driver = driver
            self.description = remote.get(driver.reset.remote(cfg, cluster_resources))
        else:
            self.driver = DriverActor.options(**(driver_options or {})).remote(cfg, cluster_resources,
                                                                               worker_options)
            self.description = remote.get(self.driver.describe.remote())
        if start_state is not None:
            remote.get(self.driver.set_state.remote(start_state, len(self.records)))
        if self.baseline is None or 0 not in self.examples.rounds():
            self.baseline = self._evaluate_initial()
        import pandas as pd

        write_csv(pd.DataFrame(self.description["partition"]), out / "partition.csv")
        self.files = RoundFiles(out, self.description["similarity_module"])
        self.files.rewrite(self.all_records)
        self.session_rounds, self.session_round_seconds = 0, 0.0
        self.startup_seconds = time.perf_counter() - self.t_start

    @property
    def completed(self) -> int:
        """Number of completed (trained) rounds."""
        return len(self.records)

    @property
    def all_records(self) -> list[dict[str, Any]]:
        """The round-0 record (the untrained model) followed by the records of the completed rounds."""
        return ([self.baseline] if self.baseline is not None else []) + self.records

    @property
    def data_notes(self) -> list[str]:
        """What the user must know about the data (split deviations, truncation), one sentence each."""
        return list(self.description["data"].get("notes", []))

    def _evaluate_initial(self) -> dict[str, Any]:
        """Evaluate the untrained model (round 0) and keep its rows and record (written before round 1's).

        With an ``untrained_cache`` and an untrained model that is the same for every method, the record comes
        from the cache (computed by the first run of this model, data and seed); ``method`` is this run's.
        """
        def evaluate() -> dict[str, Any]:
            return remote.get(self.driver.evaluate_initial.remote())

        key = remote.get(self.driver.untrained_key.remote()) if self.untrained_cache is not None else None
        if key is None:
            record = evaluate()
        else:
            cached, self.untrained_cached = UntrainedCache(self.untrained_cache).get_or_compute(key, evaluate)
            record = {**cached, "method": self.cfg.method.name, "examples": dict(cached["examples"])}
            if self.untrained_cached:
                record["worker_restarts"] = 0  # this run evaluated nothing
        self.examples.write(0, record.pop("examples"))
        write_records(self.out / CHECKPOINT_DIR, [record] + self.records)
        return record

    def step(self) -> dict[str, Any]:
        """Run one round, append its rows and record, checkpoint when due; returns the round's record.

        The round's per-example rows (an evaluated round's ``examples``) go to their own file first, and are
        not part of the returned record.
        """
        ref, started = self._pending or (self.driver.run_round.remote(), time.perf_counter())
        self._pending = None
        record = remote.get(ref)
        due = self.cfg.checkpoint_due(record["round"])
        state = self.driver.get_state.remote() if due else None  # the driver's calls run in order: before the next
        if self.prefetch and record["round"] < self.cfg.rounds:
            self._pending = (self.driver.run_round.remote(), time.perf_counter())
        examples = record.pop("examples", None)
        if examples is not None:
            self.examples.write(record["round"], examples)
        self.records.append(record)
        append_record(self.out / CHECKPOINT_DIR, record)
        self.files.append(self.all_records)
        if state is not None:
            self.checkpoint(state)
        self.session_rounds += 1
        end = time.perf_counter()  # each second counted once, also when the round ran before this call
        self.session_round_seconds += end - max(started, self._last_step_end or started)
        self._last_step_end = end
        return record

    def checkpoint(self, state: Any = None) -> None:
        """Save the driver's state after the completed rounds (atomic); ``state``: a ``get_state`` ObjectRef."""
        state, completed = remote.get(self.driver.get_state.remote() if state is None else state)
        save_checkpoint(self.out / CHECKPOINT_DIR, state, {"round": completed, "fingerprint": self.fingerprint})

    def finish(self) -> dict[str, Any]:
        """Export the final global adapter (PEFT format), gather examples.parquet and write summary.json."""
        from workers.export import write_adapter

        t0 = time.perf_counter()
        files = remote.get(self.driver.export_global.remote())
        write_adapter(files, self.out / "adapter")
        self.examples.gather()
        wall = time.perf_counter() - self.t_start
        # measured piece by piece, so time spent between the calls (another run interleaved) does not count
        session = {"rounds": self.session_rounds, "rounds_seconds": self.session_round_seconds,
                   "seconds": self.startup_seconds + self.session_round_seconds + time.perf_counter() - t0}
        summary = summarize(self.all_records, self.cfg.to_dict(), self.fingerprint, wall,
                            self.description["num_workers"], session, data=self.description["data"])
        summary["warnings"] = self.input_warnings
        write_summary(self.out, summary)
        return summary

    def detach(self) -> Any:
        """Hand the driver actor (and its loaded workers) over for another run; :meth:`close` then keeps it."""
        driver, self.driver = self.driver, None
        self._closed = True
        return driver

    def close(self, wait: bool = True) -> None:
        """Stop the driver and its workers (``wait=False``: kill them now, e.g. on Ctrl-C mid-round)."""
        import ray

        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            if wait:  # the driver's calls run in order: this waits for a round in progress
                remote.get(self.driver.shutdown.remote())
            ray.kill(self.driver)  # its worker actors die with it (Ray kills the actors an actor owns)
        except Exception:  # noqa: BLE001 - already gone
            pass


def progress_line(record: dict[str, Any], total: int, status: str) -> str:
    """``[round 3/20] accuracy=0.712 train_loss=0.532 agg_noise=0.01 | 3/20 rounds, 4.1 s/round, ETA 1m10s``."""
    parts = [f"[round {record['round']}/{total}]"]
    for key in ("accuracy", "mcc", "rouge_l", "personal_accuracy", "train_loss", "agg_noise", "init_noise_fn"):
        if key in record and record[key] == record[key]:
            parts.append(f"{key}={record[key]:.4g}")
    if "note" in record and isinstance(record["note"], str):
        parts.append(f"({record['note']})")
    parts.append(f"| {status}")
    return " ".join(parts)


def baseline_line(record: dict[str, Any] | None) -> str:
    """``[round 0] untrained: accuracy=0.64 mcc=0 eval_loss=0.69``."""
    parts = [f"{k}={record[k]:.4g}" for k in ("accuracy", "mcc", "rouge_l", "eval_loss")
             if record and k in record and record[k] == record[k]]
    return "[round 0] untrained: " + (" ".join(parts) or "not evaluated")


def saved_fingerprint(out: Path) -> str | None:
    """The config fingerprint saved in ``out``'s config.yaml (``None`` when there is none)."""
    marker = out / RUN_MARKER
    if not marker.is_file():
        return None
    return (yaml.safe_load(marker.read_text()) or {}).get("fingerprint")


def run(cfg: RunConfig, out: Path, resume: bool = False, log: Callable[[str], None] = print,
        **experiment_options: Any) -> dict[str, Any]:
    """Run (or continue) one experiment to its last round; returns the summary.

    A live progress bar in a terminal (when ``log`` is ``print``), one line per round otherwise; the
    trackers of ``cfg.logging`` get the config, every round (round 0 first), the summary and the files.
    """
    exp = Experiment(cfg, out, resume=resume, **experiment_options)
    trackers, failed = None, True
    try:
        if cfg.logging.trackers:
            trackers = RunTrackers(cfg.logging, out, cfg.to_dict())
            for record in exp.all_records:
                trackers.log_round(record)
        log(f"{cfg.method.name}: {exp.description['data']['num_clients']} clients, {cfg.clients_per_round} per "
            f"round, ranks {sorted(set(exp.description['client_ranks']))}, {exp.description['num_workers']} workers, "
            f"rounds {exp.completed + 1}..{cfg.rounds} -> {out}")
        log(baseline_line(exp.baseline))
        for note in exp.data_notes:
            log(f"data note: {note}")
        progress = Progress(cfg.rounds, exp.completed, desc=cfg.method.name, log=log,
                            live=None if log is print else False)
        while exp.completed < cfg.rounds:
            record = exp.step()
            if trackers is not None:
                trackers.log_round(record)
            progress.update(exp.completed, plain=False)
            progress.write(progress_line(record, cfg.rounds, progress.status()))
        progress.close()
        summary = exp.finish()
        if trackers is not None:
            trackers.finish(summary, out)
        failed = False
        ratio = (f"overhead ratio {summary['overhead_ratio']:.3f} ({summary['overhead_ratio_with_startup']:.3f} with "
                 "startup); " if "overhead_ratio" in summary else "")
        log(f"done: final {summary['final'].get('accuracy', summary['final'].get('rouge_l'))}; {ratio}files in {out}")
        return summary
    except KeyboardInterrupt:
        exp.close(wait=False)
        raise
    finally:
        exp.close()
        if trackers is not None:
            trackers.close(failed=failed)


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
             log_to_driver: bool = True) -> None:
    """Start (or join) Ray quietly: token auth off for local runs, no dashboard, worker logs if ``log_to_driver``.

    A local instance starts its worker processes at nice 0 (Ray's default is 15): the client workers are
    the run's compute, and at nice 15 they lose the CPU to any other process (measured in
    ``benchmarks/results/driver.md``). Set ``RAY_worker_niceness`` yourself to keep Ray's default.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Ray's tqdm manager would replace builtins.print in this process, and a sweep's callbacks (which hold
    # print) could then no longer be pickled into Tune's experiment state
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": log_to_driver,
                              "configure_logging": True, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": a new instance even when `ray start` runs on this machine (ray.init() would join that one)
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="run config YAML (defaults for every missing option)")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one option, e.g. --set method.name=flora --set data.num_clients=20")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE",
                        help="a Python file (or module) that @registers a method; added to the config's plugins, "
                             "imported by every process of the run")
    parser.add_argument("--address", help="Ray cluster address ('auto' to join a running cluster)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the fully resolved config (every option with its value) and exit")
    parser.add_argument("--log", action="append", default=[], choices=TRACKERS, metavar="TRACKER",
                        help=f"record the run in a tracker (repeatable): {', '.join(TRACKERS)}; offline, "
                             "in DIR/trackers unless logging.dir says otherwise")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    if args.print_config:
        try:
            print(yaml.safe_dump(load_config(args.config, args.overrides, args.plugin).to_dict(), sort_keys=False),
                  end="")
        except Exception as err:  # noqa: BLE001 - a message, the traceback only with --debug
            report_failure(err, debug=args.debug)
            return 2
        return 0
    try:
        with input_warnings() as notes:
            cfg = _cli_config(args)
        if args.resume and args.out and Path(args.out) != Path(args.resume):
            raise RunSetupError("--resume DIR continues the run in DIR; drop --out or make it the same folder")
        out = Path(args.resume or args.out or "")
        if not args.resume and not args.out:
            raise RunSetupError("--out DIR is required")
        cluster = None if args.address else local_cluster_resources(args.num_cpus)
        if cfg is not None:  # checked before the output folder is touched
            notes += check_run(cfg, cluster)
        check_installed(tuple(dict.fromkeys([*args.log, *(cfg.logging.trackers if cfg is not None else ())])))
        check_output_folder(out)
        checked, cfg = cfg is not None, prepare_out_dir(out, cfg, bool(args.resume), args.overwrite)
        notes += [] if checked else check_run(cfg, cluster)
        cfg = dataclasses.replace(cfg, logging=cfg.logging.with_trackers(args.log))
        check_installed(cfg.logging.trackers)
    except KeyboardInterrupt:
        print("\ninterrupted during the checks; nothing was started", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a message, the traceback only with --debug
        report_failure(err, debug=args.debug)
        return 2
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)

    def body() -> None:
        import ray

        check_resources(cfg, ray.cluster_resources())
        run(cfg, out, resume=bool(args.resume), input_warnings=notes)

    return run_guarded(lambda: init_ray(args.address, args.num_cpus), body, lambda: resume_lines(out), args.debug)


def _cli_config(args: argparse.Namespace) -> RunConfig | None:
    """The config the command line asks for (``None``: the saved one of ``--resume DIR``)."""
    if args.config:
        return load_config(args.config, args.overrides, args.plugin)
    if args.resume and (args.overrides or args.plugin):  # on top of the saved config (e.g. more rounds)
        return load_config(Path(args.resume) / RUN_MARKER, args.overrides, args.plugin)
    return load_config(None, args.overrides, args.plugin) if args.overrides or args.plugin else None


if __name__ == "__main__":
    exit_process(main())
