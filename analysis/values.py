"""One value per trial from a sweep's long frame, the metrics' conventions and the paper's row/column order.

Round 0 is the untrained model (evaluated before any training, when the run recorded it): ``final`` is a
trial's value at its last evaluated round after 0, ``best`` its best evaluated value after round 0, and
:func:`untrained_values` reads round 0. Curves and plots keep round 0 as their first point.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import GLUE_NAMES, METHOD_NAMES, add_labels, add_setting, usable

AVG = "Avg"
UNTRAINED = "Untrained"
MAJORITY = "Majority class"
BASELINE_ROWS = (MAJORITY, UNTRAINED)
METRICS = ("accuracy", "mcc", "rouge_l", "f1", "eval_loss", "personal_accuracy", "personal_mcc",
           "personal_rouge_l", "personal_loss")
PERCENT_METRICS = ("accuracy", "mcc", "rouge_l", "f1")
RANGES = {"accuracy": (0.0, 1.0), "rouge_l": (0.0, 1.0), "f1": (0.0, 1.0), "mcc": (-1.0, 1.0)}
HOMOGENEOUS_PREFIXES = ("FedIT", "Untuned", *BASELINE_ROWS)
_ROW_RANKS = {MAJORITY: -2, UNTRAINED: -1, "Untuned": 0, "Untuned Model": 0, "FedIT (R)": 1, "FedIT (R/2)": 2,
              "FLoRA": 4, "FlexLoRA": 5, "HETLoRA": 6, "Fed-PLoRA": 9}
_GLUE_ORDER = list(GLUE_NAMES.values())


# ------------------------------------------------------------------------------------------ metrics
def is_percent(metric: str) -> bool:
    """Whether a metric is a fraction shown in percent (accuracy, MCC, Rouge-L, F1 and personal_*)."""
    return metric.removeprefix("personal_") in PERCENT_METRICS


def higher_is_better(metric: str) -> bool:
    """False for losses and noise measurements."""
    return "loss" not in metric and "noise" not in metric


def clip_to_range(metric: str, values: Any) -> Any:
    """``values`` cut to the metric's range (accuracy, Rouge-L, F1: [0, 1]; MCC: [-1, 1]; others unbounded).

    For t-intervals of bounded metrics, which can reach past the bounds with few seeds. NaN stays NaN.
    """
    low, high = RANGES.get(metric.removeprefix("personal_"), (-np.inf, np.inf))
    return np.clip(values, low, high)


def available_metrics(frame: pd.DataFrame) -> list[str]:
    """The evaluation metrics with at least one value in ``frame`` (``train_loss`` is not one)."""
    return [m for m in METRICS if m in frame.columns and frame[m].notna().any()]


# ------------------------------------------------------------------------------------------ ordering
def row_order_key(label: Any) -> tuple:
    """Sort key of a row: the baselines, the paper's order, other methods alphabetically, Fed-PLoRA last."""
    text = METHOD_NAMES.get(str(label), str(label))
    if text in _ROW_RANKS:
        return (_ROW_RANKS[text], "")
    if text.startswith("Untuned"):
        return (0, text.casefold())
    if text.startswith("FedIT"):
        return (3, _natural(text))
    if text.startswith(("Fed-PLoRA", "Fed-PrsLoRA")):
        return (8, text.casefold())
    return (7, text.casefold())


def column_order_key(value: Any) -> tuple:
    """Sort key of a column: GLUE task order, IID before non-IID, then natural order (numbers by value)."""
    if isinstance(value, int | float | np.number):
        return (0, 0, float(value))
    text = str(value)
    task = next((i for i, name in enumerate(_GLUE_ORDER) if text.startswith(name)), len(_GLUE_ORDER))
    return (task, 1 if "non-IID" in text else 0, _natural(text))


def _natural(text: str) -> tuple:
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple((0, float(p), "") if re.fullmatch(r"\d+(?:\.\d+)?", p) else (1, 0.0, p.casefold()) for p in parts)


# ------------------------------------------------------------------------------------------ values
def trial_values(results: pd.DataFrame, metric: str = "accuracy", stat: str = "final",
                 by: tuple[str, ...] = ("label", "setting")) -> pd.DataFrame:
    """One row per trial: ``trial_id``, the ``by`` columns, ``seed`` (if any), ``round`` and ``value``.

    ``stat="final"``: the value at the trial's last evaluated round (metric not NaN); ``"best"``: its best
    evaluated value (max, or min for losses), with the round it was reached. Round 0 (the untrained model)
    is neither: a trial evaluated only at round 0 has no value yet.
    """
    if stat not in ("final", "best"):
        raise ValueError(f"stat={stat!r} must be 'final' or 'best'")
    if metric not in results.columns:
        raise ValueError(f"metric {metric!r} is not a column of the results; available: "
                         f"{available_metrics(results) or 'none'}")
    frame = results.dropna(subset=[metric]).reset_index(drop=True)
    if "trial_id" not in frame.columns:
        frame = frame.assign(trial_id="run")
    keep = ["trial_id", *dict.fromkeys(by), *(["seed"] if "seed" in frame.columns and "seed" not in by else [])]
    if "round" not in frame.columns:
        frame = frame.assign(round=frame.groupby("trial_id").cumcount() + 1)
    frame = frame[frame["round"] > 0].reset_index(drop=True)
    if not len(frame):
        return pd.DataFrame(columns=[*keep, "round", "value"])
    groups = frame.groupby("trial_id", sort=False)
    if stat == "final":
        idx = groups["round"].idxmax()
    else:
        idx = groups[metric].idxmax() if higher_is_better(metric) else groups[metric].idxmin()
    out = frame.loc[idx.to_numpy(), [*keep, "round", metric]].rename(columns={metric: "value"})
    return out.reset_index(drop=True)


def untrained_values(results: pd.DataFrame, metric: str) -> dict[str, float]:
    """``{trial_id: metric at round 0}`` for the trials whose results hold an evaluated round 0."""
    if metric not in results.columns or "round" not in results.columns or "trial_id" not in results.columns:
        return {}
    zero = results[(results["round"] == 0) & results[metric].notna()]
    return {str(t): float(v) for t, v in zip(zero["trial_id"], zero[metric])}


# ------------------------------------------------------------------------------------------ frames
def table_frame(results: pd.DataFrame, rows: str | list[str] = "label", columns: str | list[str] = "setting",
                include_running: bool = False) -> tuple[pd.DataFrame, str, str, dict[str, str]]:
    """``(frame, row column, column column, excluded)``: the usable rows of ``results`` keyed for a table.

    Adds labels and settings where missing, drops failed trials (and running ones unless
    ``include_running``), joins extra row keys into the label ("Fed-PLoRA (train.lr=0.001)"; the label
    alone stays in ``method``, the joined keys in ``group``) and several column keys into one ("IID · 8").
    """
    frame = add_setting(add_labels(results)) if len(results) else results
    frame, excluded = usable(frame, include_running)
    first, extra = (rows, []) if isinstance(rows, str) else (rows[0], list(rows[1:]))
    frame = join_keys(frame.assign(method=frame[first] if first in frame.columns else None, group=""), first, extra)
    rows = first
    if not isinstance(columns, str):
        name = " · ".join(columns)
        frame = frame.assign(**{name: frame[list(columns)].astype(str).agg(" · ".join, axis=1)})
        columns = name
    return frame, rows, columns, excluded


def join_keys(frame: pd.DataFrame, column: str = "label", keys: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """``column`` with the values of ``keys`` appended: "Fed-PLoRA (train.lr=0.001)" (rows split by a grid axis).

    The appended part alone is kept in a ``group`` column (rows of one group are compared with each other).
    """
    if not keys or not len(frame):
        return frame
    parts = frame[list(keys)].apply(lambda r: ", ".join(f"{k}={_short(v)}" for k, v in r.items()), axis=1)
    return frame.assign(**{column: frame[column].astype(str) + " (" + parts + ")", "group": parts})


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
