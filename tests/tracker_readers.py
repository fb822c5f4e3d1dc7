"""Read tracker records back with each tracker's own reader (for the tracker tests)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd


def mlflow_runs(folder: Path) -> dict[str, dict]:
    """``{run name: {"params", "metrics": {key: {step: value}}, "artifacts", "status"}}`` of an MLflow file store."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(folder / "mlruns").resolve().as_uri())
    out = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            rid = run.info.run_id
            metrics = {k: {m.step: m.value for m in client.get_metric_history(rid, k)} for k in run.data.metrics}
            artifacts = {a.path for a in client.list_artifacts(rid)}
            out[run.info.run_name] = {"params": run.data.params, "metrics": metrics, "artifacts": artifacts,
                                      "status": run.info.status, "experiment": exp.name}
    return out


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of the event files in ``folder`` (TensorBoard's EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def wandb_records(run_file: Path) -> list[dict]:
    """The records of a ``.wandb`` transaction log, decoded by wandb's own reader (``wandb leet inspect --json``)."""
    exe = Path(sys.executable).parent / "wandb"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "wandb"]
    text = subprocess.run([*cmd, "leet", "inspect", "--json", str(run_file)], capture_output=True, text=True,
                          check=True, timeout=120).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wandb_history(records: list[dict]) -> list[dict]:
    """The history rows (``wandb.log`` calls) of a transaction log."""
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def rounds_table(run_dir: Path) -> dict[str, dict[int, float]]:
    """``{column: {round: value}}`` of ``rounds.csv`` (finite numbers only)."""
    frame = pd.read_csv(run_dir / "rounds.csv")
    out: dict[str, dict[int, float]] = {}
    for col in frame.columns:
        if col == "round" or not pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]):
            continue
        values = {int(r): float(v) for r, v in zip(frame["round"], frame[col]) if math.isfinite(float(v))}
        if values:
            out[col] = values
    return out
