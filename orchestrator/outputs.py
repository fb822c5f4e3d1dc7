"""The files of one run: config.yaml, rounds.csv, clients.csv, similarity.csv, partition.csv, summary.json.

:class:`RoundFiles` appends each round's rows to rounds.csv, clients.csv and similarity.csv (constant
cost per round); rounds.csv is rewritten (atomically) only when a round brings a new column, e.g. the
first evaluated round. On start and on resume every file is rewritten atomically from the records of the
checkpoint, which also repairs a row cut short by a kill.
"""

from __future__ import annotations

import io
import json
import math
import platform
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from core.files import atomic_write_text

RUN_MARKER = "config.yaml"
NON_SCALAR = ("client_rows", "similarity")


def rounds_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per round (scalars only)."""
    return pd.DataFrame([{k: v for k, v in r.items() if k not in NON_SCALAR} for r in records])


def clients_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per client job."""
    return pd.DataFrame([row for r in records for row in r.get("client_rows", [])])


def similarity_frame(records: list[dict[str, Any]], module: str | None) -> pd.DataFrame:
    """Long format: round, module, slot_i, slot_j, cosine."""
    rows = []
    for r in records:
        for i, row in enumerate(r.get("similarity") or []):
            for j, value in enumerate(row):
                rows.append({"round": r["round"], "module": module, "slot_i": i, "slot_j": j, "cosine": value})
    return pd.DataFrame(rows, columns=["round", "module", "slot_i", "slot_j", "cosine"])


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Atomic CSV write."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    atomic_write_text(path, buf.getvalue())


class RoundFiles:
    """rounds.csv, clients.csv and (when measured) similarity.csv of one run, kept current round by round."""

    def __init__(self, out: Path, similarity_module: str | None):
        self.out, self.similarity_module = out, similarity_module
        self.columns: dict[str, list[str]] = {}

    def frames(self, records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
        """The files' contents for ``records``."""
        out = {"rounds.csv": rounds_frame(records), "clients.csv": clients_frame(records)}
        if any(r.get("similarity") for r in records):
            out["similarity.csv"] = similarity_frame(records, self.similarity_module)
        return out

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Every file from ``records`` (atomic writes)."""
        frames = self.frames(records)
        self.columns = {}
        for name in ("rounds.csv", "clients.csv", "similarity.csv"):
            if name in frames:
                write_csv(frames[name], self.out / name)
                self.columns[name] = list(frames[name].columns)
            else:
                (self.out / name).unlink(missing_ok=True)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add the rows of the last of ``records``; rewrite everything if they bring a new column."""
        new = {name: f for name, f in self.frames(records[-1:]).items() if not f.empty}
        if any(not set(f.columns) <= set(self.columns.get(name, ())) for name, f in new.items()):
            self.rewrite(records)
            return
        for name, frame in new.items():
            with open(self.out / name, "a", encoding="utf-8", newline="") as f:
                frame.reindex(columns=self.columns[name]).to_csv(f, index=False, header=False)


def write_config(out: Path, config: dict[str, Any], fingerprint: str) -> None:
    """The fully resolved configuration, with its fingerprint."""
    text = yaml.safe_dump({**config, "fingerprint": fingerprint}, sort_keys=False)
    atomic_write_text(out / RUN_MARKER, text)


def summarize(records: list[dict[str, Any]], config: dict[str, Any], fingerprint: str, wall_seconds: float,
              num_workers: int, session: dict[str, float] | None = None) -> dict[str, Any]:
    """Final and best metric values, totals, timings, the overhead ratios and package versions.

    Ideal time of a round = sum(client compute) / workers + aggregation +
    evaluation wall time. ``session`` (measured by the caller, over the rounds this process ran):
    ``rounds`` (how many), ``rounds_seconds`` (the caller's wall time of those rounds: the driver's round,
    the Ray calls, the round files and the checkpoints) and ``seconds`` (the same plus the startup of the
    driver and worker actors with their model and data loading, and the final adapter export). Then
    ``overhead_ratio`` = rounds_seconds / ideal and ``overhead_ratio_with_startup`` = seconds / ideal, both
    over the session's rounds.
    Everything the driver does besides training, aggregation and evaluation (client starts, noise and
    similarity metrics, bookkeeping) counts as overhead.
    """
    frame = rounds_frame(records)
    evaluated = frame.dropna(subset=[c for c in ("accuracy", "rouge_l") if c in frame.columns], how="all")
    final = evaluated.iloc[-1].to_dict() if len(evaluated) else {}
    metric_cols = [c for c in frame.columns if c in ("accuracy", "mcc", "rouge_l", "personal_accuracy",
                                                      "personal_mcc", "personal_rouge_l")]
    best = {c: float(frame[c].max()) for c in metric_cols if frame[c].notna().any()}
    out = {
        "method": config["method"]["name"], "rounds": int(frame["round"].max()), "fingerprint": fingerprint,
        "final": {k: _json_value(v) for k, v in final.items()}, "best": best,
        "bytes_down_total": int(frame["bytes_down"].sum()), "bytes_up_total": int(frame["bytes_up"].sum()),
        "wall_seconds": wall_seconds, "round_seconds_total": float(frame["t_round"].sum()),
        "num_workers": num_workers,
    }
    if session and session.get("rounds"):
        ran = frame.iloc[-int(session["rounds"]):]
        ideal = float(ran["t_client_compute_sum"].sum() / max(1, num_workers) + ran["t_aggregate"].sum()
                      + ran["t_eval"].sum())
        out.update(session_rounds=int(session["rounds"]), ideal_seconds=ideal,
                   overhead_ratio=session["rounds_seconds"] / ideal if ideal > 0 else float("nan"),
                   overhead_ratio_with_startup=session["seconds"] / ideal if ideal > 0 else float("nan"))
    out["versions"] = package_versions()
    return out


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a result."""
    import peft
    import ray
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "pandas": pd.__version__}


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """summary.json."""
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=_json_value))
