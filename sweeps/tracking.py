"""Experiment trackers for a sweep: Ray Tune's own logger callbacks, one tracker run per trial.

``--log mlflow`` uses :class:`ray.air.integrations.mlflow.MLflowLoggerCallback`, ``--log tensorboard``
:class:`ray.tune.logger.TBXLoggerCallback` and ``--log wandb``
:class:`ray.air.integrations.wandb.WandbLoggerCallback`, each extended by the few steps that make a
trial's tracker run match a single run's (:mod:`orchestrator.trackers`):

- parameters: the trial's fully resolved run config (dotted keys), not only Tune's ``{"trial": id}``;
- the step of a round's metrics is the round (Tune's ``training_iteration`` restarts its count when a
  finished trial is restored, the round does not): MLflow steps and TensorBoard ``global_step`` are the
  round (TensorBoard tags are Ray's ``ray/tune/<metric>``); W&B logs Tune's ``training_iteration`` as its
  step and the ``round`` column alongside;
- at the trial's end: the rows of ``rounds.csv`` Tune did not report (round 0, the untrained model,
  evaluated before Tune's first report; after a resume, the rounds before it) at their steps (MLflow and
  TensorBoard take steps out of order; W&B does not, so its history holds the reported rounds only),
  ``final/<metric>`` and ``best/<metric>`` from the trial's ``summary.json`` (MLflow,
  TensorBoard; W&B's run summary holds the last round's values), and the trial's files as artifacts
  (MLflow: ``config.yaml``, ``rounds.csv``, ``summary.json``, ``adapter/``; W&B: ``adapter/`` as the
  trial's model artifact).

All offline, under ``<dir>`` = ``logging.dir`` or ``SWEEP_DIR/trackers``: ``mlruns/`` (an MLflow file
store, unless ``MLFLOW_TRACKING_URI`` is set), ``tensorboard/<trial_id>/`` and ``wandb/offline-run-*``
(``WANDB_MODE=offline`` unless set). The tracker packages are imported only when a tracker is requested.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.trackers import (
    ARTIFACT_DIRS,
    ARTIFACT_FILES,
    LoggingConfig,
    check_installed,
    flatten,
    mlflow_uri,
    round_metrics,
    summary_metrics,
    wandb_mode,
)
from sweeps.trials import TrialSpec
from sweeps.tune_runner import TRIALS_DIR

TUNE_ONLY_KEYS = ("done", "trial_wall_seconds")


class _Trials:
    """What the callbacks know about the trials: resolved parameters and folders, by trial id."""

    def __init__(self, trials: list[TrialSpec], sweep_dir: Path):
        self.params = {t.trial_id: flatten({k: v for k, v in t.config.to_dict().items() if k != "logging"})
                       for t in trials}
        self.sweep_dir = sweep_dir

    def id_of(self, trial: Any) -> str:
        return str(trial.config.get("trial"))

    def folder(self, trial: Any) -> Path:
        return self.sweep_dir / TRIALS_DIR / self.id_of(trial)

    def summary(self, trial: Any) -> dict[str, float]:
        path = self.folder(trial) / "summary.json"
        return summary_metrics(json.loads(path.read_text())) if path.is_file() else {}

    def unreported_rounds(self, trial: Any, reported: set[int]) -> list[tuple[int, dict[str, float]]]:
        """``(round, metrics)`` of the rows of ``rounds.csv`` that Tune did not report to this callback.

        Round 0 (the untrained model, evaluated before Tune's first report) and, after a resume, the rounds
        run before the interruption.
        """
        path = self.folder(trial) / "rounds.csv"
        if not path.is_file():
            return []
        import pandas as pd

        out = []
        for _, row in pd.read_csv(path).iterrows():
            values = {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
            if int(values["round"]) not in reported:
                out.append((int(values["round"]), round_metrics(values)))
        return out


def metrics_of(result: dict[str, Any]) -> dict[str, float]:
    """The round's metrics in a Tune result: finite numbers, without Tune's own bookkeeping keys."""
    from ray.tune.result import AUTO_RESULT_KEYS

    return {k: v for k, v in round_metrics(result).items() if k not in AUTO_RESULT_KEYS and k not in TUNE_ONLY_KEYS}


def tracker_callbacks(logging: LoggingConfig, trials: list[TrialSpec], sweep_dir: Path, sweep_name: str) -> list[Any]:
    """The Tune callbacks of ``logging.trackers`` (none when empty)."""
    if not logging.trackers:
        return []
    check_installed(logging.trackers)
    facts = _Trials(trials, sweep_dir)
    folder = logging.folder(sweep_dir)
    experiment = logging.experiment or sweep_name
    out = []
    for name in logging.trackers:
        if name == "mlflow":
            out.append(_mlflow_callback(facts, folder, experiment))
        elif name == "tensorboard":
            out.append(_tensorboard_callback(facts, folder))
        else:
            out.append(_wandb_callback(facts, folder, experiment))
    return out


def _mlflow_callback(facts: _Trials, folder: Path, experiment: str) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MlflowTrials(MLflowLoggerCallback):
        """MLflowLoggerCallback with resolved parameters, round steps, the summary and the trial's files."""

        def log_trial_start(self, trial: Any) -> None:
            super().log_trial_start(trial)
            self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=facts.params[facts.id_of(trial)])

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            if trial not in self._trial_runs:
                self.log_trial_start(trial)
            reported.setdefault(trial, set()).add(int(result["round"]))
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics_of(result),
                                         step=int(result["round"]))

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            run_id = self._trial_runs.get(trial)
            if run_id is not None:
                last = int((trial.last_result or {}).get("round", 0))
                for rnd, metrics in facts.unreported_rounds(trial, reported.pop(trial, set())):
                    self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=metrics, step=rnd)
                self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=facts.summary(trial), step=last)
                client = self.mlflow_util._get_client()
                src = facts.folder(trial)
                for name in ARTIFACT_FILES:
                    if (src / name).is_file():
                        client.log_artifact(run_id, str(src / name))
                for name in ARTIFACT_DIRS:
                    if (src / name).is_dir():
                        client.log_artifacts(run_id, str(src / name), artifact_path=name)
            super().log_trial_end(trial, failed)

    reported: dict[Any, set[int]] = {}
    return MlflowTrials(tracking_uri=mlflow_uri(folder), experiment_name=experiment)


def _tensorboard_callback(facts: _Trials, folder: Path) -> Any:
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.result import TIMESTEPS_TOTAL

    class TensorBoardTrials(TBXLoggerCallback):
        """TBXLoggerCallback writing ``<dir>/tensorboard/<trial_id>/`` with the round as the step."""

        def log_trial_start(self, trial: Any) -> None:
            if trial in self._trial_writer:
                self._trial_writer[trial].close()
            writer = self._summary_writer_cls(str(folder / "tensorboard" / facts.id_of(trial)), flush_secs=30)
            params = facts.params[facts.id_of(trial)]
            writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)
            self._trial_writer[trial] = writer
            self._trial_result[trial] = {}

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            # Ray's step is ``timesteps_total`` when set: the round
            reported.setdefault(trial, set()).add(int(result["round"]))
            super().log_trial_result(iteration, trial, {**metrics_of(result), TIMESTEPS_TOTAL: int(result["round"])})

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            writer = self._trial_writer.get(trial)
            if writer is not None:
                last = int((trial.last_result or {}).get("round", 0))
                for rnd, metrics in facts.unreported_rounds(trial, reported.pop(trial, set())):
                    for key, value in metrics.items():
                        writer.add_scalar(f"ray/tune/{key}", value, global_step=rnd)
                for key, value in facts.summary(trial).items():
                    writer.add_scalar(f"ray/tune/{key}", value, global_step=last)
            super().log_trial_end(trial, failed)

    reported: dict[Any, set[int]] = {}
    return TensorBoardTrials()


def _wandb_callback(facts: _Trials, folder: Path, project: str) -> Any:
    from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

    folder.mkdir(parents=True, exist_ok=True)

    class WandbTrials(WandbLoggerCallback):
        """WandbLoggerCallback (offline by default) with the resolved config and the adapter as an artifact."""

        def log_trial_start(self, trial: Any) -> None:
            tid = facts.id_of(trial)
            self.kwargs = {**base_kwargs, "config": {"trial": tid, **facts.params[tid]}}
            super().log_trial_start(trial)

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            adapter = facts.folder(trial) / "adapter"
            if trial in self._trial_queues and adapter.is_dir():
                self._trial_queues[trial].put((_QueueItem.CHECKPOINT, str(adapter)))
            super().log_trial_end(trial, failed)

    base_kwargs = {"dir": str(folder), "mode": wandb_mode()}
    return WandbTrials(project=project, **base_kwargs)
