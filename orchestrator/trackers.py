"""Experiment trackers for one run: MLflow, TensorBoard and Weights & Biases, through their own clients.

What a tracker receives (the same for the three):

- parameters: the fully resolved run config, flattened to dotted keys (``method.name``, ``train.lr`` ...);
- a step series: every round's scalar metrics (the columns of ``rounds.csv``) at ``step = round``, round 0
  (the untrained model) included;
- the final summary: ``summary.json``'s ``final`` and ``best`` metrics as ``final/<metric>``,
  ``best/<metric>`` (MLflow metrics at the last round, TensorBoard scalars at the last round, the W&B
  run summary);
- artifacts where the tracker stores files (MLflow, W&B): ``config.yaml``, ``rounds.csv``,
  ``summary.json`` and the final adapter (``adapter/``). TensorBoard stores no files.

The report of a run or sweep folder (``report.md``, ``comparison.csv/.tex``, ``figures/``) is written later
by ``analysis.report``; ``--log`` there records it as a run of its own, ``<folder> report``
(:func:`log_report`): files in MLflow and W&B, the text of ``report.md`` in TensorBoard.

Everything is local and offline: MLflow writes a file store (``<dir>/mlruns``; the file store is in
maintenance mode in MLflow 3, so ``MLFLOW_ALLOW_FILE_STORE=true`` is set for it) unless
``MLFLOW_TRACKING_URI`` names another store; TensorBoard writes event files (tensorboardX) under
``<dir>/tensorboard/<run>``; W&B runs in offline mode (``WANDB_MODE=offline`` unless the caller set
``WANDB_MODE``) and writes ``<dir>/wandb/offline-run-*/run-*.wandb`` (``wandb sync`` uploads it later).
``<dir>`` is ``logging.dir``, by default ``<run folder>/trackers``.

The tracker packages are optional extras (``pip install hetfedlora[trackers]``): nothing here imports them
at module level, and :func:`check_installed` names the pip command for a missing one when the options are
parsed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.validation import check_choice

TRACKERS = ("mlflow", "tensorboard", "wandb")
# the module each tracker needs in this process, and the pip command that installs it
REQUIRED_MODULES = {"mlflow": ("mlflow", "mlflow-skinny"), "tensorboard": ("tensorboardX", "tensorboardX"),
                    "wandb": ("wandb", "wandb")}
ARTIFACT_FILES = ("config.yaml", "rounds.csv", "summary.json")
ARTIFACT_DIRS = ("adapter",)
REPORT_FILES = ("report.md", "comparison.csv", "comparison.tex")
REPORT_DIRS = ("figures",)
NON_METRIC_KEYS = ("round",)
DEFAULT_EXPERIMENT = "hetfedlora"


class TrackerMissingError(ValueError):
    """A tracker was requested whose package is not installed (raised when the options are parsed)."""


@dataclass(frozen=True)
class LoggingConfig:
    """The ``logging:`` section: which trackers record the run, where, and under which experiment name.

    ``trackers``: any of ``mlflow``, ``tensorboard``, ``wandb`` (also ``--log NAME``, repeatable).
    ``dir``: the folder of the offline records ("" = ``<run or sweep folder>/trackers``).
    ``experiment``: the MLflow experiment / W&B project ("" = ``hetfedlora`` for a run, the sweep's name
    for a sweep). Not part of the config's fingerprint: logging never changes a result.
    """

    trackers: tuple[str, ...] = ()
    dir: str = ""
    experiment: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.trackers, str) or not isinstance(self.trackers, tuple | list):
            raise ValueError(f"logging.trackers={self.trackers!r} must be a list; choose from {list(TRACKERS)}")
        for name in self.trackers:
            check_choice("logging.trackers", name, TRACKERS)
        if not isinstance(self.dir, str) or not isinstance(self.experiment, str):
            raise ValueError("logging.dir and logging.experiment must be strings")

    def with_trackers(self, extra: list[str] | tuple[str, ...] | None) -> LoggingConfig:
        """The section with ``extra`` trackers added (``--log``), each name once, in the order first given."""
        names = tuple(dict.fromkeys([*self.trackers, *(extra or ())]))
        return LoggingConfig(trackers=names, dir=self.dir, experiment=self.experiment)

    def folder(self, out: Path) -> Path:
        """Where the offline records go."""
        return Path(self.dir) if self.dir else out / "trackers"


def check_installed(names: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`TrackerMissingError` naming the pip command for every requested tracker not installed."""
    missing = [name for name in dict.fromkeys(names)
               if importlib.util.find_spec(REQUIRED_MODULES[name][0]) is None]
    if missing:
        pips = " ".join(REQUIRED_MODULES[n][1] for n in missing)
        raise TrackerMissingError(f"--log {' --log '.join(missing)}: the package(s) are not installed; "
                                  f"pip install 'hetfedlora[trackers]' (or: pip install {pips})")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys (lists as their JSON text): the parameters a tracker records."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out


def round_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric scalars of a round record (a row of ``rounds.csv``), without ``round`` itself."""
    return {k: float(v) for k, v in record.items()
            if k not in NON_METRIC_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """``final/<metric>`` and ``best/<metric>`` of ``summary.json`` (finite numbers only)."""
    out: dict[str, float] = {}
    for part in ("final", "best"):
        for key, value in (summary.get(part) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{part}/{key}"] = float(value)
    return out


def mlflow_uri(folder: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a local file store in ``folder/mlruns`` (allowed explicitly)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (folder / "mlruns").resolve().as_uri()


def wandb_mode() -> str:
    """``WANDB_MODE`` when the caller set it, else ``offline`` (set in the environment: Ray's W&B callback reads it)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.environ["WANDB_MODE"]


class _Mlflow:
    def __init__(self, folder: Path, experiment: str, run_name: str, params: dict[str, Any]):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=mlflow_uri(folder))
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # the store's batch limit
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def files(self, out: Path, names: tuple[str, ...] = ARTIFACT_FILES, dirs: tuple[str, ...] = ARTIFACT_DIRS) -> None:
        for name in names:
            if (out / name).is_file():
                self.client.log_artifact(self.run_id, str(out / name))
        for name in dirs:
            if (out / name).is_dir():
                self.client.log_artifacts(self.run_id, str(out / name), artifact_path=name)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class _TensorBoard:
    def __init__(self, folder: Path, run_name: str, params: dict[str, Any]):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(folder / "tensorboard" / run_name))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def files(self, out: Path, names: tuple[str, ...] = ARTIFACT_FILES, dirs: tuple[str, ...] = ARTIFACT_DIRS) -> None:
        """TensorBoard stores no files; a Markdown file's text is kept as a text summary."""
        for name in names:
            if name.endswith(".md") and (out / name).is_file():
                self.writer.add_text(name, (out / name).read_text(), 0)
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, folder: Path, experiment: str, run_name: str, params: dict[str, Any]):
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(project=experiment, name=run_name, dir=str(folder), config=params,
                              mode=wandb_mode(), reinit="create_new")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({"round": step, **metrics}, step=step)

    def summary(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def files(self, out: Path, names: tuple[str, ...] = ARTIFACT_FILES, dirs: tuple[str, ...] = ARTIFACT_DIRS) -> None:
        artifact = self.wandb.Artifact(f"run-{self.run.id}", type="run")
        for name in names:
            if (out / name).is_file():
                artifact.add_file(str(out / name))
        for name in dirs:
            if (out / name).is_dir():
                artifact.add_dir(str(out / name), name=name)
        self.run.log_artifact(artifact)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class RunTrackers:
    """The trackers of one run: parameters at the start, one step per round, the summary and files at the end.

    ``RunTrackers(cfg.logging, out, cfg.to_dict())``; then :meth:`log_round` for round 0 and every round,
    :meth:`finish` with ``summary.json``'s content, and :meth:`close` (``failed=True`` on an error).
    A resumed run logs into a new tracker run holding every round from 0 (the rounds already done too),
    so each tracker run is complete.
    """

    def __init__(self, logging: LoggingConfig, out: Path, config: dict[str, Any], name: str | None = None,
                 experiment: str | None = None):
        check_installed(logging.trackers)
        folder = logging.folder(out)
        experiment = logging.experiment or experiment or DEFAULT_EXPERIMENT
        params = flatten({k: v for k, v in config.items() if k != "logging"})
        name = name or out.resolve().name
        self.writers: list[Any] = []
        try:
            for tracker in logging.trackers:
                if tracker == "mlflow":
                    self.writers.append(_Mlflow(folder, experiment, name, params))
                elif tracker == "tensorboard":
                    self.writers.append(_TensorBoard(folder, name, params))
                else:
                    self.writers.append(_Wandb(folder, experiment, name, params))
        except Exception:
            self.close(failed=True)
            raise
        self.last_round = 0

    def log_round(self, record: dict[str, Any]) -> None:
        """One round's scalar metrics at ``step = round``."""
        self.last_round = int(record["round"])
        metrics = round_metrics(record)
        for w in self.writers:
            w.log(metrics, self.last_round)

    def finish(self, summary: dict[str, Any], out: Path) -> None:
        """The final summary (at the last round's step) and the run's files as artifacts."""
        values = summary_metrics(summary)
        for w in self.writers:
            if isinstance(w, _Wandb):
                w.summary(values)
            else:
                w.log(values, self.last_round)
            w.files(out)

    def close(self, failed: bool = False) -> None:
        """End every tracker run (``FAILED`` / exit code 1 when ``failed``)."""
        for w in self.writers:
            try:
                w.close(failed)
            except Exception:  # noqa: BLE001 - one tracker failing to close must not hide the others
                pass
        self.writers = []


def log_report(logging: LoggingConfig, out: Path, experiment: str | None = None) -> None:
    """Record the report files of the run or sweep folder ``out`` as a tracker run ``<folder> report``."""
    trackers = RunTrackers(logging, out, {"report_of": str(out.resolve())}, name=f"{out.resolve().name} report",
                           experiment=experiment)
    try:
        for w in trackers.writers:
            w.files(out, REPORT_FILES, REPORT_DIRS)
    except Exception:
        trackers.close(failed=True)
        raise
    trackers.close()
