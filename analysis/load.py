"""Read run folders and sweep folders into typed pandas frames.

Notebook use::

    from analysis import load_run, load_sweep, comparison_table, format_table

    sweep = load_sweep("results/quick")     # DIR/results.parquet, DIR/trials.parquet, DIR/trials/<id>/
    sweep.results        # one row per trial x round: rounds.csv columns + trial_id, status, label, axes, setting
    sweep.trials         # one row per trial (status, label, setting, config axes, final_*, best_*, ...)
    sweep.status_counts  # {"TERMINATED": 34, "ERROR": 2}: failed trials are counted, never averaged
    sweep.similarity     # similarity.csv of every trial that wrote one, with a trial_id column
    print(format_table(comparison_table(sweep.results, metric="accuracy"), fmt="text"))

    sweep.examples       # examples.parquet of every trial (per test example: round, scope, client, example,
                         # label, prediction, score, loss), read on first use; sweep.load_examples({id: rounds})
    sweep.baselines      # one row per trial: test_examples, majority_class/rate, minority_rate, untrained_*
    sweep.name           # the sweep's name (sweep.yaml), else the folder's

    run = load_run("runs/fedplora")        # one orchestrator.run folder
    run.rounds, run.clients, run.similarity, run.partition, run.config, run.summary, run.label, run.examples
    run.as_results()                       # the same long format as a sweep's results

Round 0 of ``rounds.csv`` (when present) is the untrained model's evaluation; ``summary.json`` may carry
``baselines`` (majority class and rate, minority rate, the untrained model's metrics), ``test_examples``
and ``data_notes`` (warnings from splitting and truncation). Folders written before these existed load
the same way, with empty example frames and no baselines.

Trial status: ``trial_state`` maps the raw status (Ray Tune's ``TERMINATED`` / ``ERROR`` / ``RUNNING`` ...,
case-insensitive) to ``ok``, ``failed`` or ``incomplete``. Comparisons use ``ok`` trials only (a frame
without a status column counts as ok); the others are listed by the report's "Trials" section.

Display names follow the Fed-PLoRA paper (:func:`method_label`); the data-split label of a trial is its
``setting`` column when the sweep wrote one, otherwise derived from ``data.partition`` (+ ``data.alpha`` /
``data.classes_per_client``), prefixed by the data set or GLUE task when those vary (:func:`add_setting`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

log = logging.getLogger(__name__)

RUN_MARKER = "config.yaml"
EXAMPLES_FILE = "examples.parquet"
EXAMPLE_COLUMNS = {"round": "int64", "scope": "object", "client": "int64", "example": "int64", "label": "int64",
                   "prediction": "int64", "score": "float64", "loss": "float64"}
BASELINE_KEYS = ("majority_class", "majority_rate", "minority_rate")
TOP_LEVEL_KEYS = ("seed", "rounds", "participation", "eval_every", "eval_personal", "checkpoint_every")
# Columns that must hold integers (nullable where a round has no evaluation).
INT_COLUMNS = ("round", "clients", "bytes_down", "bytes_up", "eval_examples", "personal_clients",
               "worker_restarts", "client", "pack", "rank", "n_examples", "steps", "restarts", "slot_i", "slot_j",
               "n_train", "n_test", "rounds_completed")
# Columns that must hold floats.
FLOAT_COLUMNS = ("init_noise_fn", "init_noise_param", "agg_noise", "agg_noise_rankwise", "accuracy", "mcc",
                 "rouge_l", "eval_loss", "train_loss", "mean_rank", "t_client_compute_sum",
                 "t_client_compute_max", "t_train_wall", "t_client_starts", "t_aggregate", "t_metrics",
                 "t_eval", "t_round", "compute_seconds", "weight", "cosine", "wall_seconds")
# Columns of a sweep's frames that are not config axes.
NON_AXIS_COLUMNS = {"trial_id", "status", "label", "setting", "error", "wall_seconds", "rounds_completed", "metric",
                    "attempts"}
# A sweep without a settings axis writes this setting; it is replaced by the derived split label.
DEFAULT_SETTING = "default"
# Config keys read from a trial's config.yaml when the sweep frames lack them (labels, settings, axes).
ESSENTIAL_KEYS = ("seed", "method.name", "method.selection", "method.unselected", "method.scaling",
                  "method.train_head", "ranks.distribution", "ranks.max_rank", "ranks.mid_rank", "ranks.rank",
                  "data.dataset", "data.glue_task", "data.partition", "data.alpha", "data.classes_per_client",
                  "model.name")
OK_STATES = {"terminated", "completed", "complete", "done", "finished", "success", "succeeded", "ok"}
FAILED_STATES = {"error", "errored", "failed", "failure", "crashed"}

METHOD_NAMES = {"fedplora": "Fed-PLoRA", "fedit": "FedIT", "flora": "FLoRA", "flexlora": "FlexLoRA",
                "hetlora": "HETLoRA", "ffa_lora": "FFA-LoRA", "pfedlora": "pFedLoRA", "fedsa_lora": "FedSA-LoRA",
                "fedex_lora": "FedEx-LoRA", "rbla": "RBLA"}
GLUE_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "qnli": "QNLI", "rte": "RTE"}
DATASET_NAMES = {"natural_instructions": "NI", "rotten_tomatoes": "Rotten Tomatoes",
                 "rotten_tomatoes_instruct": "Rotten Tomatoes (instr.)", "dolly": "Dolly", "glue": "GLUE"}


# ------------------------------------------------------------------------------------------ containers
@dataclass
class RunResult:
    """The files of one ``orchestrator.run`` folder (missing files give empty frames)."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rounds: pd.DataFrame
    clients: pd.DataFrame
    similarity: pd.DataFrame
    partition: pd.DataFrame

    @property
    def label(self) -> str:
        """The paper's display name of the run's method."""
        return method_label(self.config)

    @property
    def status(self) -> str:
        """``TERMINATED`` once summary.json exists (the run finished), else ``INCOMPLETE``."""
        return "TERMINATED" if self.summary else "INCOMPLETE"

    @cached_property
    def examples(self) -> pd.DataFrame:
        """examples.parquet (every evaluated round), empty with the contract's columns when absent."""
        return read_examples(self.path)

    @property
    def baselines(self) -> pd.DataFrame:
        """One row (this run): test_examples, majority_class/rate, minority_rate, untrained_<metric>, data_notes."""
        return baselines_frame({self.path.name: self.summary})

    def flat_config(self) -> dict[str, Any]:
        """The config as dotted keys (``method.name``, ``data.alpha``, ...), without the fingerprint."""
        return {k: v for k, v in flatten_config(self.config).items() if k != "fingerprint"}

    def as_results(self, trial_id: str | None = None) -> pd.DataFrame:
        """rounds.csv in a sweep's long format: + trial_id, status, label, every config key, setting."""
        frame = self.rounds.copy()
        extra = {"trial_id": trial_id or self.path.name, "status": self.status, "label": self.label,
                 **{k: v for k, v in self.flat_config().items() if k not in frame.columns}}
        frame = frame.assign(**{k: [v] * len(frame) for k, v in extra.items()})
        return typed(add_setting(frame))


@dataclass
class SweepResult:
    """A sweep folder: long results, one row per trial, and the per-trial files gathered with a trial_id."""

    path: Path
    results: pd.DataFrame
    trials: pd.DataFrame
    clients: pd.DataFrame = field(default_factory=pd.DataFrame)
    similarity: pd.DataFrame = field(default_factory=pd.DataFrame)
    partition: pd.DataFrame = field(default_factory=pd.DataFrame)
    config: dict[str, Any] = field(default_factory=dict)
    baselines: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def name(self) -> str:
        """The sweep's name (``spec.name`` in sweep.yaml), else the folder's name."""
        spec = self.config.get("spec") if isinstance(self.config.get("spec"), dict) else self.config
        return str(spec.get("name") or self.path.name)

    @cached_property
    def examples(self) -> pd.DataFrame:
        """examples.parquet of every trial folder (all rounds) with a trial_id column; see :meth:`load_examples`."""
        return self.load_examples()

    def load_examples(self, rounds: dict[str, Iterable[int]] | None = None) -> pd.DataFrame:
        """Per-example records of the trials, only the given rounds per trial when ``rounds`` is given.

        ``rounds``: ``{trial_id: [0, 10]}``; trials not in it are skipped. Trials without the file add nothing.
        """
        ids = sorted(rounds) if rounds is not None else sorted(p.name for p in (self.path / "trials").glob("*"))
        frames = []
        for trial_id in ids:
            frame = read_examples(self.path / "trials" / str(trial_id), None if rounds is None else rounds[trial_id])
            if len(frame):
                frames.append(frame.assign(trial_id=str(trial_id)))
        return pd.concat(frames, ignore_index=True) if frames else read_examples(self.path / "none").assign(
            trial_id=pd.Series(dtype=str))

    @property
    def status_counts(self) -> dict[str, int]:
        """Number of trials per raw status."""
        if "status" not in self.trials.columns:
            return {"TERMINATED": len(self.trials)}
        return {str(k): int(v) for k, v in self.trials["status"].fillna("UNKNOWN").value_counts().items()}

    @property
    def failed(self) -> pd.DataFrame:
        """The trials whose status is a failure (excluded from every comparison)."""
        if "status" not in self.trials.columns:
            return self.trials.iloc[0:0]
        return self.trials[self.trials["status"].map(trial_state) == "failed"]

    def run(self, trial_id: str) -> RunResult:
        """The run folder of one trial."""
        return load_run(self.path / "trials" / str(trial_id))


# ------------------------------------------------------------------------------------------ labels
def config_value(config: dict[str, Any], key: str, default: Any = None) -> Any:
    """``key`` (dotted) from a nested config dict, a flat dotted dict or a DataFrame row."""
    if key in config:
        value = config[key]
        return default if is_missing(value) else value
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if is_missing(node) else node


def method_label(config: dict[str, Any], global_rank: int | None = None) -> str:
    """The paper's display name of a run's method, from its (nested or dotted) config.

    ``fedplora`` -> "Fed-PLoRA" (rsLoRA scaling: "Fed-PrsLoRA"; non-default options in parentheses, e.g.
    "Fed-PLoRA (drop)", "Fed-PLoRA (fixed)", "Fed-PLoRA (weight norm)"); ``fedit`` -> "FedIT (R)" when its
    rank equals ``global_rank`` (default: the run's ``ranks.max_rank``), "FedIT (R/2)" at half of it,
    else "FedIT (rank r)"; ``flora`` -> "FLoRA", ``flexlora`` -> "FlexLoRA", ``hetlora`` -> "HETLoRA",
    ``ffa_lora`` -> "FFA-LoRA", ``pfedlora`` -> "pFedLoRA", ``fedsa_lora`` -> "FedSA-LoRA", ``fedex_lora`` ->
    "FedEx-LoRA", ``rbla`` -> "RBLA"; unknown names pass through. A frozen classification head adds
    "frozen head".
    """
    name = config_value(config, "method.name")
    if name is None:  # a rounds.csv row carries the method's name in its ``method`` column
        name = config.get("method") if isinstance(config.get("method"), str) else "unknown"
    name = str(name)
    extras = []
    if name == "fedit":
        max_rank = int(config_value(config, "ranks.max_rank", 16))
        rank = int(config_value(config, "ranks.rank", max_rank))
        ref = int(global_rank or max_rank)
        base = "FedIT (R)" if rank == ref else "FedIT (R/2)" if 2 * rank == ref else f"FedIT (rank {rank})"
    elif name == "fedplora":
        base = "Fed-PrsLoRA" if config_value(config, "method.scaling", "standard") == "rslora" else "Fed-PLoRA"
        if config_value(config, "method.unselected", "fold") == "drop":
            extras.append("drop")
        selection = config_value(config, "method.selection", "random")
        if selection != "random":
            extras.append(str(selection).replace("_", " "))
    else:
        base = METHOD_NAMES.get(name, name)
    if config_value(config, "method.train_head", True) in (False, "false", "False", 0):
        extras.append("frozen head")
    return f"{base} ({', '.join(extras)})" if extras else base


def setting_label(partition: Any, alpha: Any = None, classes_per_client: Any = None) -> str:
    """"IID", "non-IID (Dir 0.5)", "non-IID (2 classes/client)", "non-IID (natural)" from ``data.*``."""
    if is_missing(partition):
        return "unknown split"
    partition = str(partition)
    if partition == "iid":
        return "IID"
    if partition == "dirichlet":
        return f"non-IID (Dir {float(alpha):g})" if not is_missing(alpha) else "non-IID (Dir)"
    if partition == "pathological":
        if is_missing(classes_per_client):
            return "non-IID (pathological)"
        k = int(classes_per_client)
        return f"non-IID ({k} class{'es' if k != 1 else ''}/client)"
    if partition == "natural":
        return "non-IID (natural)"
    return partition


def dataset_label(row: dict[str, Any]) -> str:
    """"CoLA", "NI", "Rotten Tomatoes", ... from ``data.glue_task`` / ``data.dataset``."""
    task = config_value(row, "data.glue_task")
    if task is not None:
        return GLUE_NAMES.get(str(task), str(task))
    dataset = config_value(row, "data.dataset")
    return DATASET_NAMES.get(str(dataset), str(dataset)) if dataset is not None else ""


def add_setting(frame: pd.DataFrame) -> pd.DataFrame:
    """Add a ``setting`` column where missing: the split label, prefixed by the data set when that varies.

    A missing value or the sweep's placeholder ``"default"`` (no settings axis) is replaced.
    """
    given = frame["setting"].where(frame["setting"] != DEFAULT_SETTING) if "setting" in frame.columns else None
    if given is not None and given.notna().all():
        return frame
    records = frame.to_dict("records")
    splits = [setting_label(config_value(r, "data.partition"), config_value(r, "data.alpha"),
                            config_value(r, "data.classes_per_client")) for r in records]
    datasets = [dataset_label(r) for r in records]
    if len(set(datasets)) > 1:
        splits = [f"{d} ({s})" if len(set(splits)) > 1 else d for d, s in zip(datasets, splits)]
    derived = pd.Series(splits, index=frame.index, dtype=object)
    out = frame.copy()
    out["setting"] = given.where(given.notna(), derived) if given is not None else derived
    return out


def add_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Add (or fill) the ``label`` column with :func:`method_label` of each row's config axes.

    A label that is a raw method name (``fedplora``: what a sweep without variants writes) is replaced too.
    FedIT's "R" is the largest ``ranks.max_rank`` of the heterogeneous methods in the frame.
    """
    given = frame["label"].where(~frame["label"].isin(list(METHOD_NAMES))) if "label" in frame.columns else None
    if given is not None and given.notna().all():
        return frame
    ref = None
    if "method.name" in frame.columns and "ranks.max_rank" in frame.columns:
        het = frame.loc[frame["method.name"] != "fedit", "ranks.max_rank"].dropna()
        ref = int(het.max()) if len(het) else None
    derived = pd.Series([method_label(r, ref) for r in frame.to_dict("records")], index=frame.index, dtype=object)
    out = frame.copy()
    out["label"] = given.where(given.notna(), derived) if given is not None else derived
    return out


# ------------------------------------------------------------------------------------------ status, types
def trial_state(status: Any) -> str:
    """``ok`` (finished), ``failed`` or ``incomplete`` (pending, running, paused, unknown) for a raw status."""
    if is_missing(status):
        return "ok"
    text = str(status).strip().lower()
    return "ok" if text in OK_STATES else "failed" if text in FAILED_STATES else "incomplete"


def usable(frame: pd.DataFrame, include_running: bool = False) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows of finished trials (plus running ones if asked) and ``{trial_id: status}`` of those left out."""
    if "status" not in frame.columns or not len(frame):
        return frame, {}
    states = frame["status"].map(trial_state)
    keep = (states == "ok") | ((states == "incomplete") & include_running)
    dropped = frame.loc[~keep]
    ids = dropped["trial_id"] if "trial_id" in dropped.columns else pd.Series(dropped.index.astype(str))
    excluded = {str(t): str(s) for t, s in zip(ids, dropped["status"])}
    return frame.loc[keep], excluded


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Known integer columns as nullable ``Int64``, known float columns as ``float64``, trial_id as str."""
    out = frame.copy()
    for col in out.columns:
        if col in INT_COLUMNS or col == "seed":
            values = pd.to_numeric(out[col], errors="coerce")
            if values.notna().any() and (values.dropna() % 1 == 0).all():
                out[col] = values.astype("Int64")
        elif (col in FLOAT_COLUMNS or col.startswith(("personal_", "final_", "best_"))
              or col.startswith("t_")) and col != "personal_clients":
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    if "trial_id" in out.columns:
        out["trial_id"] = out["trial_id"].astype(str)
    return out


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"method.name": ..., "data.alpha": ...}`` (lists as tuples, so they group)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = tuple(value) if isinstance(value, list) else value
    return out


def axis_columns(frame: pd.DataFrame) -> list[str]:
    """The config-axis columns of a sweep frame (dotted keys and the top-level run options)."""
    return [c for c in frame.columns if c not in NON_AXIS_COLUMNS
            and ("." in c or c in TOP_LEVEL_KEYS) and not c.startswith(("final_", "best_"))]


# ------------------------------------------------------------------------------------------ loading
def load_run(path: str | Path) -> RunResult:
    """Read one run folder written by ``orchestrator.run`` (or one trial folder of a sweep)."""
    path = Path(path)
    if not (path / RUN_MARKER).is_file() and not (path / "rounds.csv").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a run folder (no {RUN_MARKER} or rounds.csv)")
    config = yaml.safe_load((path / RUN_MARKER).read_text()) or {} if (path / RUN_MARKER).is_file() else {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    rounds = read_csv_or_empty(path / "rounds.csv")
    if "round" not in rounds.columns:
        rounds = pd.DataFrame({"round": pd.Series(dtype="Int64")})
    return RunResult(path=path, config=config, summary=summary, rounds=typed(rounds),
                     clients=typed(read_csv_or_empty(path / "clients.csv")),
                     similarity=typed(read_csv_or_empty(path / "similarity.csv")),
                     partition=typed(read_csv_or_empty(path / "partition.csv")))


def load_sweep(path: str | Path) -> SweepResult:
    """Read a sweep folder: results.parquet, trials.parquet and the per-trial run folders in ``trials/``.

    Works on partial sweeps: without results.parquet the long frame is rebuilt from the trial folders;
    without trials.parquet the per-trial frame is derived from the long one. Config keys needed for labels
    and settings that the frames lack are read from each trial's config.yaml.
    """
    path = Path(path)
    trial_dirs = sorted(p for p in (path / "trials").glob("*") if p.is_dir()) if (path / "trials").is_dir() else []
    if (path / "results.parquet").is_file():
        results = pd.read_parquet(path / "results.parquet")
    elif trial_dirs:
        runs = [load_run(d) for d in trial_dirs if (d / RUN_MARKER).is_file()]
        results = pd.concat([r.as_results() for r in runs], ignore_index=True) if runs else pd.DataFrame()
    else:
        raise FileNotFoundError(f"{str(path)!r} is not a sweep folder (no results.parquet and no trials/*/)")
    if "trial_id" not in results.columns:
        results = results.assign(trial_id="0")
    results = results.assign(trial_id=results["trial_id"].astype(str))
    trials = (pd.read_parquet(path / "trials.parquet") if (path / "trials.parquet").is_file()
              else _trials_from_results(results))
    trials = trials.assign(trial_id=trials["trial_id"].astype(str))
    missing = sorted(set(results["trial_id"]) - set(trials["trial_id"]))
    if missing:
        trials = pd.concat([trials, _trials_from_results(results[results["trial_id"].isin(missing)])],
                           ignore_index=True)
    configs = {d.name: flatten_config(yaml.safe_load((d / RUN_MARKER).read_text()) or {})
               for d in trial_dirs if (d / RUN_MARKER).is_file()}
    trials, results = _fill_from_configs(trials, configs), _fill_from_configs(results, configs)
    trials = add_setting(add_labels(trials))
    results = _copy_trial_columns(results, trials, ("label", "setting", "status"))
    frames = {name: _gather(trial_dirs, f"{name}.csv") for name in ("clients", "similarity", "partition")}
    sweep_cfg = yaml.safe_load((path / "sweep.yaml").read_text()) or {} if (path / "sweep.yaml").is_file() else {}
    summaries = {d.name: json.loads((d / "summary.json").read_text()) for d in trial_dirs
                 if (d / "summary.json").is_file()}
    return SweepResult(path=path, results=typed(results), trials=typed(trials), config=sweep_cfg,
                       baselines=baselines_frame(summaries), **frames)


def _trials_from_results(results: pd.DataFrame) -> pd.DataFrame:
    if not len(results):
        return pd.DataFrame({"trial_id": pd.Series(dtype=str)})
    keep = [c for c in results.columns if c in ("trial_id", "status", "label", "setting") or c in axis_columns(results)]
    first = results.groupby("trial_id", sort=False)[keep[1:]].first().reset_index() if len(keep) > 1 else (
        results[["trial_id"]].drop_duplicates())
    done = results.groupby("trial_id", sort=False)["round"].max().rename("rounds_completed") if "round" in results \
        else pd.Series(dtype="Int64", name="rounds_completed")
    return first.merge(done, left_on="trial_id", right_index=True, how="left")


def _fill_from_configs(frame: pd.DataFrame, configs: dict[str, dict[str, Any]]) -> pd.DataFrame:
    if not configs or "trial_id" not in frame.columns or not len(frame):
        return frame
    out = frame.copy()
    for key in ESSENTIAL_KEYS:
        values = out["trial_id"].map(lambda t, k=key: configs.get(t, {}).get(k, np.nan))
        if key not in out.columns:
            if values.notna().any():
                out[key] = values
        else:
            out[key] = out[key].where(out[key].notna(), values)
    return out


def _copy_trial_columns(results: pd.DataFrame, trials: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The per-trial frame is authoritative for label, setting and status."""
    out = results.copy()
    for col in columns:
        if col in trials.columns and len(out):
            mapped = out["trial_id"].map(dict(zip(trials["trial_id"], trials[col])))
            out[col] = mapped.where(mapped.notna(), out[col]) if col in out.columns else mapped
    return add_setting(add_labels(out)) if len(out) else out


def _gather(trial_dirs: list[Path], name: str) -> pd.DataFrame:
    frames = []
    for d in trial_dirs:
        frame = read_csv_or_empty(d / name)
        if len(frame.columns):
            frames.append(frame.assign(trial_id=d.name))
    return typed(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()


def read_examples(folder: Path, rounds: Iterable[int] | None = None) -> pd.DataFrame:
    """``folder/examples.parquet`` (only ``rounds`` when given), typed; empty with the columns when absent."""
    file = Path(folder) / EXAMPLES_FILE
    wanted = None if rounds is None else sorted({int(r) for r in rounds})
    if not file.is_file() or wanted == []:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in EXAMPLE_COLUMNS.items()})
    frame = pd.read_parquet(file, filters=[("round", "in", wanted)] if wanted is not None else None)
    for col, dtype in EXAMPLE_COLUMNS.items():
        if col in frame.columns and dtype != "object":
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(dtype)
    return frame.reset_index(drop=True)


def baselines_frame(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per trial from its summary.json (keyed by trial id); NaN where a summary lacks a value.

    Columns: ``trial_id``, ``test_examples``, ``majority_class``, ``majority_rate``, ``minority_rate``,
    ``untrained_<metric>`` and ``data_notes`` (a tuple of strings). Runs written before baselines were
    recorded give NaN.
    """
    rows = []
    for trial_id, summary in summaries.items():
        base = summary.get("baselines") or {}
        row: dict[str, Any] = {"trial_id": str(trial_id), "test_examples": summary.get("test_examples", np.nan)}
        row.update({k: base.get(k, np.nan) for k in BASELINE_KEYS})
        row.update({f"untrained_{k}": v for k, v in (base.get("untrained") or {}).items()})
        row["data_notes"] = tuple(str(n) for n in summary.get("data_notes") or ())
        rows.append(row)
    columns = ["trial_id", "test_examples", *BASELINE_KEYS, "data_notes"]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    for col in ("test_examples", *BASELINE_KEYS):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def read_csv_or_empty(path: Path) -> pd.DataFrame:
    """The CSV at ``path``, or an empty frame when it is absent or empty."""
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def is_missing(value: Any) -> bool:
    """None, NaN or NA (and never an error for values pandas cannot test)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
