"""The files of one run: config.yaml, rounds.csv, clients.csv, similarity.csv, partition.csv, summary.json.

Every file is rewritten atomically after each round from the records so far, so a run killed at any
moment leaves consistent files, and a resumed run continues them from its checkpoint.
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

from orchestrator.checkpoint import atomic_write_text

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


def write_round_files(out: Path, records: list[dict[str, Any]], similarity_module: str | None) -> None:
    """Rewrite rounds.csv, clients.csv and (when measured) similarity.csv from all records so far."""
    write_csv(rounds_frame(records), out / "rounds.csv")
    write_csv(clients_frame(records), out / "clients.csv")
    if any(r.get("similarity") for r in records):
        write_csv(similarity_frame(records, similarity_module), out / "similarity.csv")


def write_config(out: Path, config: dict[str, Any], fingerprint: str) -> None:
    """The fully resolved configuration, with its fingerprint."""
    text = yaml.safe_dump({**config, "fingerprint": fingerprint}, sort_keys=False)
    atomic_write_text(out / RUN_MARKER, text)


def summarize(records: list[dict[str, Any]], config: dict[str, Any], fingerprint: str,
              wall_seconds: float, num_workers: int) -> dict[str, Any]:
    """Final and best metric values, totals, timings, the overhead ratio and package versions.

    Overhead ratio = wall time / ideal, ideal = sum(client compute) / workers + aggregation + metrics +
    evaluation wall time (DESIGN.md: our overhead should be close to zero).
    """
    frame = rounds_frame(records)
    evaluated = frame.dropna(subset=[c for c in ("accuracy", "rouge_l") if c in frame.columns], how="all")
    final = evaluated.iloc[-1].to_dict() if len(evaluated) else {}
    metric_cols = [c for c in frame.columns if c in ("accuracy", "mcc", "rouge_l", "personal_accuracy",
                                                      "personal_mcc", "personal_rouge_l")]
    best = {c: float(frame[c].max()) for c in metric_cols if frame[c].notna().any()}
    ideal = (frame["t_client_compute_sum"].sum() / max(1, num_workers) + frame["t_aggregate"].sum()
             + frame["t_metrics"].sum() + frame["t_eval"].sum() + frame["t_client_starts"].sum())
    run_seconds = float(frame["t_round"].sum())
    return {
        "method": config["method"]["name"], "rounds": int(frame["round"].max()), "fingerprint": fingerprint,
        "final": {k: _json_value(v) for k, v in final.items()}, "best": best,
        "bytes_down_total": int(frame["bytes_down"].sum()), "bytes_up_total": int(frame["bytes_up"].sum()),
        "wall_seconds": wall_seconds, "round_seconds_total": run_seconds,
        "ideal_seconds": float(ideal), "overhead_ratio": run_seconds / ideal if ideal > 0 else float("nan"),
        "num_workers": num_workers, "versions": package_versions(),
    }


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
