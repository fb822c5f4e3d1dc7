"""The files of one run: config, rounds, clients, similarity, partition, per-example rows and summary.

config.yaml, rounds.csv, clients.csv, similarity.csv, partition.csv, examples.parquet and summary.json.
:class:`RoundFiles` appends each round's rows to rounds.csv, clients.csv and similarity.csv (constant
cost per round); rounds.csv is rewritten (atomically) only when a round brings a new column, e.g. the
first evaluated round. On start and on resume every file is rewritten atomically from the records of the
checkpoint, which also repairs a row cut short by a kill. rounds.csv's first row is round 0: the
untrained model's evaluation (its training, noise, byte and timing columns are empty).

:class:`ExampleFiles` keeps the per-example evaluation rows: each evaluated round (round 0 included)
writes ``checkpoint/examples/round-<round>.parquet`` atomically (constant cost per round); on resume the
files of rounds after the checkpoint are deleted, so they always match the checkpoint's records; the
run's end gathers them, in round order, into ``examples.parquet`` (one atomic write). Its columns
(:data:`workers.eval_results.EXAMPLE_COLUMNS`): ``round`` (int; 0 = the untrained model), ``scope``
(``"global"``: the global model on the global test set; ``"personal"``: a client's personalized model on
its own test split), ``client`` (int, -1 for global), ``example`` (int, the index in that test set),
``label`` and ``prediction`` (int class ids, -1 for generation), ``score`` (float: 1.0 / 0.0 correctness
for classification, the example's ROUGE-L for generation) and ``loss`` (float, the example's mean loss).
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

from core.files import atomic_write_bytes, atomic_write_text
from workers.eval_results import EXAMPLE_COLUMNS

RUN_MARKER = "config.yaml"
EXAMPLES_FILE = "examples.parquet"
NON_SCALAR = ("client_rows", "similarity", "examples")
METRICS = ("accuracy", "mcc", "rouge_l", "personal_accuracy", "personal_mcc", "personal_rouge_l")
EXAMPLE_DTYPES = {"round": "int64", "scope": "str", "client": "int64", "example": "int64", "label": "int64",
                  "prediction": "int64", "score": "float64", "loss": "float64"}


def rounds_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per round (scalars only).

    An integer column that some rounds lack (e.g. ``clients``, empty on round 0) stays integer (nullable),
    so a round's row reads the same whether it was appended alone or rewritten with the others.
    """
    rows = [{k: v for k, v in r.items() if k not in NON_SCALAR} for r in records]
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        values = [r[col] for r in rows if r.get(col) is not None]
        if frame[col].isna().any() and values and all(isinstance(v, int) and not isinstance(v, bool)
                                                      for v in values):
            frame[col] = frame[col].astype("Int64")
    return frame


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


def examples_frame(columns: dict[str, list] | None = None) -> pd.DataFrame:
    """Per-example rows (``workers.eval_results.example_rows``) as a frame with the file's column types."""
    columns = columns or {c: [] for c in EXAMPLE_COLUMNS}
    return pd.DataFrame({c: columns[c] for c in EXAMPLE_COLUMNS}).astype(EXAMPLE_DTYPES)


class ExampleFiles:
    """The per-example rows of every evaluated round: one Parquet file per round, gathered at the end."""

    def __init__(self, out: Path, folder: Path):
        self.out, self.folder = out, folder

    def path(self, round_idx: int) -> Path:
        """The file of one round."""
        return self.folder / f"round-{int(round_idx):06d}.parquet"

    def rounds(self) -> list[int]:
        """The rounds that have a file, in order."""
        return sorted(int(p.stem.split("-", 1)[1]) for p in self.folder.glob("round-*.parquet"))

    def write(self, round_idx: int, columns: dict[str, list]) -> None:
        """One round's rows (atomic)."""
        atomic_write_bytes(self.path(round_idx), examples_frame(columns).to_parquet(index=False))

    def prune(self, last_round: int) -> None:
        """Delete the files of rounds after ``last_round`` (rounds the checkpoint does not hold)."""
        for r in self.rounds():
            if r > last_round:
                self.path(r).unlink(missing_ok=True)

    def gather(self) -> pd.DataFrame:
        """Every round's rows, in round order, written to ``examples.parquet`` (atomic); returns the frame."""
        parts = [pd.read_parquet(self.path(r)) for r in self.rounds()]
        frame = pd.concat(parts, ignore_index=True).astype(EXAMPLE_DTYPES) if parts else examples_frame()
        atomic_write_bytes(self.out / EXAMPLES_FILE, frame.to_parquet(index=False))
        return frame


def write_config(out: Path, config: dict[str, Any], fingerprint: str) -> None:
    """The fully resolved configuration, with its fingerprint."""
    text = yaml.safe_dump({**config, "fingerprint": fingerprint}, sort_keys=False)
    atomic_write_text(out / RUN_MARKER, text)


def summarize(records: list[dict[str, Any]], config: dict[str, Any], fingerprint: str, wall_seconds: float,
              num_workers: int, session: dict[str, float] | None = None,
              data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Final and best metric values, baselines, totals, timings, the overhead ratios and package versions.

    ``records``: the round-0 record (the untrained model's evaluation; optional) and the rounds' records.
    ``final`` is the last evaluated round, ``best`` the maximum of each task metric over rounds >= 1
    (round 0 is the baseline, not a result). ``data`` is the workers' data info: it gives ``test_examples``
    (the size of the global test set), ``data_notes`` and, with the round-0 record, ``baselines``
    (:func:`baselines`).

    Ideal time of a round = sum(client compute) / workers + aggregation +
    evaluation wall time. ``session`` (measured by the caller, over the rounds this process ran):
    ``rounds`` (how many), ``rounds_seconds`` (the caller's wall time of those rounds: the driver's round,
    the Ray calls, the round files and the checkpoints) and ``seconds`` (the same plus the startup of the
    driver and worker actors with their model and data loading, the round-0 evaluation when this session
    ran it, and the final adapter export). Then ``overhead_ratio`` = rounds_seconds / ideal and
    ``overhead_ratio_with_startup`` = seconds / ideal, both over the session's rounds.
    Everything the driver does besides training, aggregation and evaluation (client starts, noise and
    similarity metrics, bookkeeping) counts as overhead.
    """
    frame = rounds_frame(records)
    round0 = next((r for r in records if r["round"] == 0), {})
    frame = frame[frame["round"] >= 1]
    evaluated = frame.dropna(subset=[c for c in ("accuracy", "rouge_l") if c in frame.columns], how="all")
    final = evaluated.iloc[-1].to_dict() if len(evaluated) else {}
    metric_cols = [c for c in frame.columns if c in METRICS]
    best = {c: float(frame[c].max()) for c in metric_cols if frame[c].notna().any()}
    out = {
        "method": config["method"]["name"], "rounds": int(frame["round"].max()), "fingerprint": fingerprint,
        "final": {k: _json_value(v) for k, v in final.items()}, "best": best,
        "bytes_down_total": int(frame["bytes_down"].sum()), "bytes_up_total": int(frame["bytes_up"].sum()),
        "wall_seconds": wall_seconds, "round_seconds_total": float(frame["t_round"].sum()),
        "num_workers": num_workers,
    }
    if data is not None:
        out.update(test_examples=int(data["global_test_size"]),
                   baselines=baselines(data.get("global_test_label_counts"), round0),
                   data_notes=list(data.get("notes", [])))
    if session and session.get("rounds"):
        ran = frame.iloc[-int(session["rounds"]):]
        ideal = float(ran["t_client_compute_sum"].sum() / max(1, num_workers) + ran["t_aggregate"].sum()
                      + ran["t_eval"].sum())
        out.update(session_rounds=int(session["rounds"]), ideal_seconds=ideal,
                   overhead_ratio=session["rounds_seconds"] / ideal if ideal > 0 else float("nan"),
                   overhead_ratio_with_startup=session["seconds"] / ideal if ideal > 0 else float("nan"))
    out["versions"] = package_versions()
    return out


def baselines(label_counts: list[int] | None, round0: dict[str, Any]) -> dict[str, Any]:
    """What a result must beat: the global test set's class rates and the untrained model's metrics.

    ``majority_class`` (the most frequent class id of the global test set, the smallest id on a tie),
    ``majority_rate`` (its fraction of the test set: a constant predictor's accuracy) and ``minority_rate``
    (the fraction of the least frequent class present in the test set); ``None`` for generation.
    ``untrained``: the round-0 evaluation's metrics and ``eval_loss``.
    """
    counts = [int(c) for c in label_counts or []]
    total = sum(counts)
    out: dict[str, Any] = {"majority_class": None, "majority_rate": None, "minority_rate": None}
    if total > 0:
        majority = max(range(len(counts)), key=lambda k: (counts[k], -k))
        out.update(majority_class=majority, majority_rate=counts[majority] / total,
                   minority_rate=min(c for c in counts if c > 0) / total)
    out["untrained"] = {k: _json_value(round0[k]) for k in (*METRICS, "eval_loss") if k in round0}
    return out


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a result, from their installed metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"python": platform.python_version(), **{name: installed(name) for name in
                                                     ("torch", "ray", "transformers", "peft", "pandas")}}


def _json_value(v: Any) -> Any:
    if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """summary.json."""
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=_json_value))
