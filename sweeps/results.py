"""The sweep's result tables, built from the trial folders (the source of truth) and Tune's statuses.

- ``results.parquet``: long, one row per trial x round: every ``rounds.csv`` column + ``trial_id``,
  ``status``, ``label`` (the variant), ``setting``, ``seed``, every grid axis as a column named by its
  dotted key, and ``method.name``, ``ranks.distribution``, ``data.partition``.
- ``trials.parquet``: one row per trial: the same identifying columns, ``status`` (``completed``,
  ``error``, ``incomplete``, ``pending``), ``final_<metric>`` (value at the last evaluated round after
  training), ``best_<metric>`` (max over the rounds after training, task metrics only),
  ``untrained_<metric>`` (round 0, the model before training, when the run evaluated it; see
  :mod:`analysis.values` for these rules), ``wall_seconds`` (the trial's own wall time, setup included,
  summed over attempts), ``rounds_completed``, ``attempts`` and ``error`` (a message).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.load import read_csv_or_empty
from analysis.values import trial_values, untrained_values
from core.files import atomic_write_bytes
from sweeps.trials import TrialSpec, columns_of
from sweeps.tune_runner import TRIALS_DIR, read_trial_state

TASK_METRICS = ("accuracy", "mcc", "rouge_l", "personal_accuracy", "personal_mcc", "personal_rouge_l")
LOSSES = ("eval_loss", "train_loss")


def trial_status(state: dict[str, Any], tune_error: str | None, has_rounds: bool) -> str:
    """One status per trial: the trial's own record first, then Tune's."""
    if state.get("status") == "completed":
        return "completed"
    if state.get("status") == "error" or tune_error:
        return "error"
    return "incomplete" if state or has_rounds else "pending"


def build_tables(sweep_dir: Path, trials: list[TrialSpec], tune_errors: dict[str, str] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, trials)`` frames of a sweep folder; ``tune_errors``: trial id -> Tune's error message."""
    tune_errors = tune_errors or {}
    long_parts, rows = [], []
    for t in trials:
        out = sweep_dir / TRIALS_DIR / t.trial_id
        state = read_trial_state(out)
        rounds = read_csv_or_empty(out / "rounds.csv")
        ident = columns_of(t)
        status = trial_status(state, tune_errors.get(t.trial_id), len(rounds) > 0)
        error = state.get("error") or tune_errors.get(t.trial_id)
        if len(rounds):
            frame = rounds.copy()
            for key, value in reversed(list({**ident, "status": status}.items())):
                if key in frame.columns:
                    frame = frame.drop(columns=key)
                frame.insert(0, key, value)
            long_parts.append(frame)
        row = {**ident, "status": status, "metric": t.metric}
        row.update(_final_best(rounds))
        row.update(wall_seconds=float(state.get("wall_seconds", float("nan"))),
                   rounds_completed=int(rounds["round"].max()) if len(rounds) else 0,
                   rounds=t.config.rounds, attempts=int(state.get("attempts", 0)),
                   error=None if status == "completed" else error)
        rows.append(row)
    results = pd.concat(long_parts, ignore_index=True) if long_parts else pd.DataFrame(columns=["trial_id"])
    table = pd.DataFrame(rows)
    table["error"] = table["error"].astype("str")  # a text column even when no trial failed (missing = NaN)
    return _arrow_safe(results), _arrow_safe(table)


def _final_best(rounds: pd.DataFrame) -> dict[str, float]:
    """``final_<col>``, ``best_<col>`` (task metrics) and ``untrained_<col>`` of one trial's rounds.csv."""
    out: dict[str, float] = {}
    frame = rounds.assign(trial_id="trial")
    for col in TASK_METRICS + LOSSES:
        if col not in rounds.columns or not rounds[col].notna().any():
            continue
        for stat in ("final", "best") if col in TASK_METRICS else ("final",):
            vals = trial_values(frame, col, stat, by=())
            if len(vals):
                out[f"{stat}_{col}"] = float(vals["value"].iloc[0])
        out.update({f"untrained_{col}": v for v in untrained_values(frame, col).values()})
    return out


def _arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of mixed Python types (e.g. a grid axis of ints and nulls) become strings for Parquet."""
    for col in frame.columns:
        if frame[col].dtype == object:
            kinds = {type(v) for v in frame[col] if v is not None and not (isinstance(v, float) and v != v)}
            if len(kinds) > 1:
                frame[col] = frame[col].map(lambda v: None if v is None else json.dumps(v, default=str))
    return frame


def write_tables(sweep_dir: Path, results: pd.DataFrame, trials: pd.DataFrame) -> None:
    """Atomic writes of ``results.parquet`` and ``trials.parquet``."""
    for name, frame in (("results.parquet", results), ("trials.parquet", trials)):
        atomic_write_bytes(sweep_dir / name, frame.to_parquet(index=False))


def format_trials(trials: pd.DataFrame) -> str:
    """A compact text table of the trials (label, setting, seed, status, final metric, wall time)."""
    lines = []
    for _, r in trials.iterrows():
        metric = r.get("metric")
        value = r.get(f"final_{metric}")
        shown = f"{metric}={value:.4f}" if isinstance(value, float) and value == value else r["status"]
        wall = r["wall_seconds"]
        wall_text = f"{wall:7.1f} s" if wall == wall else "      - s"
        lines.append(f"  {r['trial_id']:<44} {r['label']:<14} {r['setting']:<20} seed {r['seed']}  {shown:<18} "
                     f"{wall_text}  {r['rounds_completed']}/{r['rounds']} rounds")
    return "\n".join(lines)
