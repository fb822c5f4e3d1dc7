"""Write a Markdown report of a sweep folder or of one run folder.

    python -m analysis.report DIR [--metric accuracy] [--stat final|best] [--axis KEY ...] [--no-figures]

For a sweep folder (``results.parquet`` / ``trials.parquet`` / ``trials/<id>/``) or a single run folder
(``config.yaml`` + ``rounds.csv``) it writes ``DIR/report.md`` (setup, the comparison table, figures, a
"Reading" section of facts computed from the numbers, and the status of every trial),
``DIR/comparison.csv``, ``DIR/comparison.tex`` and ``DIR/figures/*.png``, prints the table and the report's
path. Partial sweeps are fine: failed and unfinished trials are listed, never averaged. A metric with no
values (``--metric accuracy`` on a causal-LM sweep) falls back to the first available one (Rouge-L...).

Notebook use::

    from analysis.report import write_report
    path = write_report("results/quick", metric="accuracy", stat="final")
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis import plots
from analysis.load import (
    NON_AXIS_COLUMNS,
    RUN_MARKER,
    add_labels,
    add_setting,
    flatten_config,
    is_missing,
    load_run,
    load_sweep,
    trial_state,
)
from analysis.tables import (
    AVG,
    HOMOGENEOUS_PREFIXES,
    available_metrics,
    column_leaders,
    comparison_table,
    format_table,
    is_percent,
    join_keys,
    row_order_key,
    trial_values,
    write_table,
)
from core.naming import slug

SETUP_KEYS = ("model.name", "data.dataset", "data.glue_task", "data.num_clients", "data.partition", "data.alpha",
              "data.classes_per_client", "participation", "rounds", "eval_every", "method.name",
              "ranks.distribution", "ranks.max_rank", "ranks.mid_rank", "ranks.rank", "train.optimizer",
              "train.lr", "train.local_steps", "train.batch_size")
IGNORED_KEYS = ("fingerprint", "resources.", "checkpoint_every")


@dataclass
class _Input:
    """What a report needs, from a sweep or from one run."""

    kind: str
    path: Path
    results: pd.DataFrame
    trials: pd.DataFrame
    configs: pd.DataFrame
    similarity: pd.DataFrame
    partition: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ input
def _read(path: Path) -> _Input:
    if (path / "results.parquet").is_file() or (path / "trials.parquet").is_file() or (path / "trials").is_dir():
        sweep = load_sweep(path)
        configs = []
        for trial_id in sweep.trials["trial_id"]:
            marker = path / "trials" / trial_id / RUN_MARKER
            row = flatten_config(yaml.safe_load(marker.read_text()) or {}) if marker.is_file() else {}
            configs.append({"trial_id": trial_id, **row})
        # config.yaml of each trial where present, the trial frame's axes (and status, label...) elsewhere
        config_frame = (pd.DataFrame(configs).set_index("trial_id")
                        .combine_first(sweep.trials.set_index("trial_id")).reset_index())
        return _Input("sweep", path, sweep.results, sweep.trials, config_frame, sweep.similarity, sweep.partition)
    if (path / RUN_MARKER).is_file() or (path / "rounds.csv").is_file():
        run = load_run(path)
        results = run.as_results()
        trial_id = path.name
        trials = pd.DataFrame([{"trial_id": trial_id, "status": run.status, "label": run.label,
                                "setting": results["setting"].iloc[0] if len(results) else None,
                                "rounds_completed": int(run.rounds["round"].max()) if len(run.rounds) else 0,
                                "error": None, **run.flat_config()}])
        trials = add_setting(add_labels(trials))
        return _Input("run", path, results, trials, trials.copy(), run.similarity.assign(trial_id=trial_id),
                      run.partition.assign(trial_id=trial_id), run.summary)
    raise FileNotFoundError(f"{str(path)!r} is neither a sweep folder (results.parquet, trials/) nor a run folder "
                            f"({RUN_MARKER}, rounds.csv)")


# ------------------------------------------------------------------------------------------ report
def write_report(path: str | Path, metric: str | None = None, stat: str = "final", axes: list[str] | None = None,
                 figures: bool = True, echo: Callable[[str], None] = print) -> Path:
    """Write ``report.md``, ``comparison.csv``, ``comparison.tex`` and ``figures/`` into ``path``.

    ``metric``: default the sweep's headline metric (trials.parquet ``metric``), else ``accuracy``.
    ``axes``: config keys to plot the metric against (besides grid axes that vary within a method and
    setting: those also split the table's rows). ``figures=False`` skips the figures (a table-only report).
    """
    path = Path(path)
    data = _read(path)
    notes: list[str] = []
    if metric is None:
        given = data.trials["metric"].dropna() if "metric" in data.trials.columns else pd.Series(dtype=object)
        metric = str(given.mode().iloc[0]) if len(given) else "accuracy"
    extra = _extra_axes(data)
    for key in extra:
        if key not in data.results.columns and len(data.results):
            data.results[key] = data.results["trial_id"].map(dict(zip(data.configs["trial_id"], data.configs[key])))
    available = available_metrics(data.results)
    if metric not in available and available:
        notes.append(f"`{metric}` has no values here; the report uses `{available[0]}`.")
        metric = available[0]
    personal = [m for m in available if m.startswith("personal_") and m != metric]
    if personal:
        notes.append(f"Personalized metrics are also recorded ({', '.join(personal)}): "
                     f"`--metric {personal[0]}` compares them.")
    table = None
    if metric in data.results.columns:
        table = comparison_table(data.results, metric=metric, rows=["label", *extra], stat=stat,
                                 include_running=data.kind == "run")
        write_table(table, path / "comparison.csv")
        (path / "comparison.tex").write_text(format_table(table, fmt="latex", hetero=True) + "\n")
    drawn, skipped = _figures(data, path / "figures", metric, stat, axes or [], extra) if figures else ([], [])
    text = _markdown(data, table, metric, stat, drawn, skipped, notes, extra)
    out = path / "report.md"
    out.write_text(text)
    if table is not None and len(table):
        echo(format_table(table, fmt="text"))
    else:
        echo("no finished trial with an evaluated round yet")
    echo(f"report: {out}")
    return out


def _markdown(data: _Input, table: pd.DataFrame | None, metric: str, stat: str, figures: list[tuple[str, Path]],
              skipped: list[str], notes: list[str], extra: list[str]) -> str:
    title = "Sweep report" if data.kind == "sweep" else "Run report"
    lines = [f"# {title}: {data.path.name}", ""]
    lines += ["## Setup", "", *_setup(data), ""]
    lines += ["## Comparison", ""]
    if table is not None and len(table):
        n = table.xs("n", axis=1, level="stat").drop(columns=[AVG], errors="ignore")
        per_cell = sorted({int(v) for v in n.to_numpy().ravel() if v > 0})
        unit = " (x100)" if is_percent(metric) else ""
        caption = (f"`{metric}`{unit} of the run ({_stat_phrase(stat)})." if data.kind == "run" else
                   f"`{metric}`{unit}, {stat} value per trial ({_stat_phrase(stat)}); mean ± std (sample std) over "
                   f"the trials of each cell, {'/'.join(map(str, per_cell))} per cell. Bold: best mean per column; "
                   "italic: best heterogeneous method.")
        lines += [caption, "",
                  format_table(table, fmt="markdown", hetero=True), "",
                  "Files: [comparison.csv](comparison.csv) (raw values), [comparison.tex](comparison.tex) "
                  "(LaTeX, needs `booktabs`).", ""]
        lines += _cell_notes(extra)
    else:
        lines += ["No finished trial has an evaluated round yet.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    lines += ["## Reading", "", *_reading(data, table, extra), ""]
    lines += ["## Figures", ""]
    for caption, fig in figures:
        rel = fig.relative_to(data.path).as_posix()
        lines += [f"**{caption}** ([{rel}]({rel}))", "", f"![{caption}]({rel})", ""]
    if skipped:
        lines += ["Not drawn:", "", *[f"- {s}" for s in skipped], ""]
    lines += ["## Trials", "", *_trials_section(data, metric), ""]
    lines += ["## Definitions", "",
              "- `final`: value at a trial's last evaluated round; `best`: best evaluated value of a trial.",
              "- Initialization noise (parameter space) is the paper's Eq. 2 (rank-wise, zero-padded factor "
              "differences, summed over the round's clients); function space is "
              "`||dW_global - dW_client_start||_F`. Aggregation noise is Eq. 3 on the clients' effective "
              "end-of-round adapters (fold + trained) with the method's weights; see orchestrator/metrics.py.",
              "- Heterogeneous methods: every row except FedIT and Untuned.", ""]
    return "\n".join(lines)


def _stat_phrase(stat: str) -> str:
    return "last evaluated round" if stat == "final" else "best evaluated round"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _setup(data: _Input) -> list[str]:
    configs = data.configs
    keys = [c for c in configs.columns if c not in NON_AXIS_COLUMNS and not c.startswith(IGNORED_KEYS)
            and not c.startswith(("final_", "best_"))]
    fixed, varied = [], []
    for key in keys:
        unique = list(dict.fromkeys("null" if is_missing(v) else _fmt_value(v) for v in configs[key].tolist()))
        if len(unique) > 1:
            varied.append(f"`{key}`: {', '.join(unique[:8])}{', ...' if len(unique) > 8 else ''}")
        elif unique and key in SETUP_KEYS and unique[0] != "null":
            fixed.append(f"`{key}` = {unique[0]}")
    counts = data.trials["status"].fillna("UNKNOWN").value_counts() if "status" in data.trials else pd.Series()
    lines = []
    if data.kind == "sweep":
        status = ", ".join(f"{int(v)} {k}" for k, v in counts.items())
        lines.append(f"- {len(data.trials)} trial{'s' if len(data.trials) != 1 else ''} ({status}).")
        labels = sorted(data.trials["label"].dropna().unique(), key=row_order_key)
        lines.append(f"- Methods: {', '.join(labels)}.")
        lines.append(f"- Settings: {', '.join(map(str, data.trials['setting'].dropna().unique()))}.")
        if (data.path / "sweep.yaml").is_file():
            lines.append("- Sweep specification: [sweep.yaml](sweep.yaml).")
    else:
        row = data.trials.iloc[0]
        lines.append(f"- Method: {row['label']}; setting: {row['setting']}; status: {row['status']}.")
    if fixed:
        lines.append("- Fixed: " + "; ".join(fixed) + ".")
    if varied:
        lines.append("- Varied: " + "; ".join(varied) + ".")
    s = data.summary
    if s:
        final = {k: v for k, v in s.get("final", {}).items() if k in ("accuracy", "mcc", "rouge_l", "eval_loss",
                                                                        "personal_accuracy")}
        lines.append(f"- Summary: {s.get('rounds')} rounds; final {_dict_text(final)}; "
                     f"best {_dict_text(s.get('best'))}; "
                     f"{_bytes(s.get('bytes_down_total'))} down, {_bytes(s.get('bytes_up_total'))} up; "
                     f"wall {_num(s.get('wall_seconds'))} s; overhead ratio {_num(s.get('overhead_ratio'), 3)}.")
    return lines


def _cell_notes(extra: list[str]) -> list[str]:
    """A note naming the grid axes that split the table's rows."""
    if not extra:
        return []
    text = ", ".join(f"`{k}`" for k in extra)
    return [f"Rows are split by {text}: it varies within a method and setting, so each cell holds one value "
            "of it (the by-axis figures plot the metric against it).", ""]


def _extra_axes(data: _Input) -> list[str]:
    configs, trials = data.configs, data.trials
    if not len(configs) or "label" not in trials.columns:
        return []
    states = trials["status"].map(trial_state) if "status" in trials else pd.Series("ok", index=trials.index)
    ok = set(trials.loc[states == "ok", "trial_id"])
    frame = configs.drop(columns=[c for c in ("label", "setting") if c in configs.columns]).merge(
        trials[["trial_id", "label", "setting"]], on="trial_id")
    frame = frame[frame["trial_id"].isin(ok)]
    skip = ("final_", "best_", *IGNORED_KEYS)
    extra = []
    for col in frame.columns:
        if col == "seed" or col in NON_AXIS_COLUMNS or col.startswith(skip):
            continue
        values = frame[col].map(lambda v: None if is_missing(v) else _fmt_value(v))
        if (values.groupby([frame["label"], frame["setting"]]).nunique(dropna=True) > 1).any():
            extra.append(col)
    return extra


def _figures(data: _Input, folder: Path, metric: str, stat: str, axes: list[str],
             extra: list[str]) -> tuple[list, list[str]]:
    collector = _Collect()
    plot_log = logging.getLogger(plots.__name__)
    plot_log.addHandler(collector)
    figures: list[tuple[str, Path]] = []

    def add(caption: str, result: Path | None) -> None:
        if result is not None:
            figures.append((caption, result))
        else:
            collector.name_last(caption)

    try:
        results = join_keys(add_labels(data.results), "label", extra)  # the table's rows
        add(f"{metric} vs round", plots.plot_curves(results, folder / f"curves_{metric}.png", metric=metric))
        add("train loss vs round", plots.plot_curves(results, folder / "curves_train_loss.png", metric="train_loss"))
        add("initialization and aggregation noise", plots.plot_noise(results, folder / "noise.png"))
        add(f"{metric} vs communication", plots.plot_communication(results, folder / f"communication_{metric}.png",
                                                                    metric=metric))
        for axis in dict.fromkeys([*axes, *extra]):
            add(f"{stat} {metric} by {axis}", plots.plot_by_axis(data.results, folder / f"by_{slug(axis)}.png",
                                                                 axis=axis, metric=metric, stat=stat))
        for setting, trial_id in _pick_trials(data, data.similarity):
            add(f"module similarity, {setting} (trial {trial_id}, last round)",
                plots.plot_similarity(data.similarity, folder / f"similarity_{slug(setting)}.png", trial_id=trial_id))
        if not len(data.similarity):
            add("module similarity", plots.plot_similarity(None, folder / "similarity.png"))
        for setting, trial_id in _pick_trials(data, data.partition, prefer=None):
            add(f"partition, {setting} (trial {trial_id})",
                plots.plot_partition(data.partition, folder / f"partition_{slug(setting)}.png", trial_id=trial_id))
        if not len(data.partition):
            add("partition", plots.plot_partition(None, folder / "partition.png"))
    finally:
        plot_log.removeHandler(collector)
    return figures, collector.lines


class _Collect(logging.Handler):
    """Keeps the reasons the plot functions give for skipping a figure."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._pending: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        self._pending = str(args[-1]) if isinstance(args, tuple) and args else record.getMessage()

    def name_last(self, caption: str) -> None:
        self.lines.append(f"{caption}: {self._pending or 'no data'}")
        self._pending = None


def _pick_trials(data: _Input, frame: pd.DataFrame, prefer: str | None = "Fed-PLoRA") -> list[tuple[str, str]]:
    """One finished trial per setting that has rows in ``frame`` (Fed-PLoRA first, then lowest seed)."""
    if frame is None or not len(frame) or "trial_id" not in frame.columns:
        return []
    trials = data.trials[data.trials["trial_id"].isin(set(frame["trial_id"].astype(str)))].copy()
    if "status" in trials:
        trials = trials[trials["status"].map(trial_state) != "failed"]
    trials["_pref"] = (trials["label"] != prefer).astype(int) if prefer else 0
    sort = ["_pref", *(["seed"] if "seed" in trials.columns else []), "trial_id"]
    picked = []
    for setting, group in trials.groupby("setting", sort=False):
        picked.append((str(setting), str(group.sort_values(sort)["trial_id"].iloc[0])))
    return picked


# ------------------------------------------------------------------------------------------ reading
def _reading(data: _Input, table: pd.DataFrame | None, extra: list[str]) -> list[str]:
    if table is None or not len(table):
        return ["- Nothing to compare yet."]
    scale = 100.0 if table.attrs.get("percent") else 1.0
    if data.kind == "run":
        return _run_reading(data, table, scale)
    unit = " points" if scale == 100.0 else ""
    lines = []
    for lead in column_leaders(table).to_dict("records"):
        where = "on average" if lead["column"] == AVG else f"in {lead['column']}"
        text = f"- {where[0].upper()}{where[1:]}, {lead['leader']} leads with {lead['mean'] * scale:.2f}"
        if lead["runner_up"] is not None:
            text += (f", {lead['margin'] * scale:.2f}{unit} ahead of {lead['runner_up']} "
                     f"({lead['runner_up_mean'] * scale:.2f})")
        lines.append(text + ".")
    if extra:  # compare the methods at each value of the axes that split the rows
        for values, sub in data.results.groupby(extra, dropna=False):
            values = values if isinstance(values, tuple) else (values,)
            where = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(extra, values))
            sub_table = comparison_table(sub, metric=table.attrs["metric"], stat=table.attrs["stat"])
            lines += _method_lines(sub_table, scale, unit, f"At {where}: ")
    else:
        lines += _method_lines(table, scale, unit)
    excluded = table.attrs.get("excluded", {})
    if excluded:
        states = pd.Series(list(excluded.values())).value_counts()
        counts = ", ".join(f"{v} {k}" for k, v in states.items())
        lines.append(f"- Not in the table: {len(excluded)} trials ({counts}).")
    return lines


def _method_lines(table: pd.DataFrame, scale: float, unit: str, prefix: str = "") -> list[str]:
    """Fed-PLoRA against the best heterogeneous baseline and against FedIT, per column (facts only)."""
    if "Fed-PLoRA" not in table.index:
        return []
    higher = table.attrs.get("higher_is_better", True)
    baselines = [r for r in table.index if not str(r).startswith((*HOMOGENEOUS_PREFIXES, "Fed-PLoRA", "Fed-PrsLoRA"))]
    columns = [c for c in dict.fromkeys(table.columns.get_level_values(0)) if c != AVG]
    lines = []
    if baselines:
        leads, parts = 0, []
        for col in columns:
            comp = _compare(table, "Fed-PLoRA", baselines, col, higher)
            if comp is not None:
                leads += comp[0] > 0
                parts.append(f"{col}: {comp[0] * scale:+.2f}{unit} vs {comp[1]}{comp[2]}")
        if parts:
            lines.append(f"- {prefix}Fed-PLoRA is ahead of the best heterogeneous baseline ({', '.join(baselines)}) "
                         f"in {leads} of {len(parts)} settings; difference to the best of them: {'; '.join(parts)}.")
    for ref in ("FedIT (R/2)", "FedIT (R)"):
        if ref in table.index:
            parts = [f"{col}: {comp[0] * scale:+.2f}{unit}{comp[2]}" for col in columns
                     if (comp := _compare(table, "Fed-PLoRA", [ref], col, higher)) is not None]
            if parts:
                lines.append(f"- {prefix}Fed-PLoRA vs {ref} (homogeneous): {'; '.join(parts)}.")
    return lines


def _compare(table: pd.DataFrame, row: str, others: list[str], col: Any, higher: bool) -> tuple | None:
    """(signed advantage of ``row`` over the best of ``others``, that rival, an overlap remark) or None."""
    mean = table.loc[row, (col, "mean")]
    rivals = table.loc[others, (col, "mean")].dropna()
    if is_missing(mean) or not len(rivals):
        return None
    rival = rivals.idxmax() if higher else rivals.idxmin()
    diff = (mean - rivals[rival]) * (1 if higher else -1)
    spread = [table.loc[row, (col, "std")], table.loc[rival, (col, "std")]]
    if any(is_missing(s) for s in spread):
        remark = " (a single trial on one side: no deviation)"
    elif abs(diff) > max(spread):
        remark = " (larger than either std)"
    else:
        remark = " (within one std)"
    return diff, rival, remark


def _run_reading(data: _Input, table: pd.DataFrame, scale: float) -> list[str]:
    metric, rounds = table.attrs["metric"], data.results
    evaluated = rounds.dropna(subset=[metric]).sort_values("round")
    if not len(evaluated):
        return ["- No evaluated round yet."]
    last = evaluated.iloc[-1]
    best = evaluated.loc[evaluated[metric].idxmax() if table.attrs.get("higher_is_better", True)
                         else evaluated[metric].idxmin()]
    lines = [f"- Final {metric} {last[metric] * scale:.2f} at round {int(last['round'])}; best "
             f"{best[metric] * scale:.2f} at round {int(best['round'])} ({len(evaluated)} evaluated rounds)."]
    if "bytes_down" in rounds and "bytes_up" in rounds:
        lines.append(f"- Communication: {_bytes(rounds['bytes_down'].sum())} down, "
                     f"{_bytes(rounds['bytes_up'].sum())} up in total.")
    for col in ("init_noise_param", "agg_noise"):
        if col in rounds and rounds[col].notna().any():
            lines.append(f"- Mean `{col}` per round: {rounds[col].mean():.4g}.")
    return lines


# ------------------------------------------------------------------------------------------ trials
def _trials_section(data: _Input, metric: str) -> list[str]:
    trials = data.trials.copy()
    if not len(trials):
        return ["No trials."]
    finals = {}
    if metric in data.results.columns:
        vals = trial_values(data.results, metric, "final", by=())
        finals = dict(zip(vals["trial_id"].astype(str), vals["value"]))
    scale = 100.0 if is_percent(metric) else 1.0
    rounds_total = data.configs.set_index("trial_id")["rounds"].to_dict() if "rounds" in data.configs else {}
    trials["_key"] = trials["label"].map(row_order_key)
    extra = [c for c in _extra_axes(data) if c in trials.columns]
    order = ["_key", "setting", *extra, *(["seed"] if "seed" in trials.columns else []), "trial_id"]
    lines = ["| Trial | Method | Setting | Seed | Status | Rounds | Final " + metric + " | Note |",
             "|---|---|---|---:|---|---:|---:|---|"]
    for row in trials.sort_values(order).to_dict("records"):
        trial_id = str(row["trial_id"])
        done = row.get("rounds_completed")
        if is_missing(done) and "round" in data.results.columns:
            done = data.results.loc[data.results["trial_id"] == trial_id, "round"].max()
        total = rounds_total.get(trial_id)
        rounds = f"{'' if is_missing(done) else int(done)}{'' if is_missing(total) else f'/{int(total)}'}"
        final = finals.get(trial_id)
        final_text = "" if final is None or is_missing(final) else f"{final * scale:.2f}"
        state = trial_state(row.get("status"))
        note = "" if state == "ok" else "not in the table"
        error = row.get("error")
        if not is_missing(error) and str(error).strip():
            note = f"{note}: {_one_line(str(error))}" if note else _one_line(str(error))
        seed = row.get("seed")
        seed_text = "" if is_missing(seed) else int(seed)
        lines.append(f"| {trial_id} | {row.get('label')} | {row.get('setting')} | "
                     f"{seed_text} | {row.get('status')} | {rounds} | {final_text} | {note} |")
    return lines


# ------------------------------------------------------------------------------------------ small helpers
def _one_line(text: str, limit: int = 140) -> str:
    line = next((ln.strip() for ln in reversed(text.strip().splitlines()) if ln.strip()), "")
    line = line.replace("|", "\\|")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _bytes(value: Any) -> str:
    if is_missing(value):
        return "?"
    value = float(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _num(value: Any, digits: int = 1) -> str:
    if is_missing(value) or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return f"{float(value):.{digits}f}"


def _dict_text(values: dict[str, Any] | None) -> str:
    items = [f"{k} {float(v):.4g}" for k, v in (values or {}).items() if not is_missing(v)]
    return ", ".join(items) or "-"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="a sweep folder or a run folder")
    parser.add_argument("--metric", help="task metric of the table (default: the sweep's metric, else accuracy)")
    parser.add_argument("--stat", default="final", choices=("final", "best"),
                        help="per-trial value: at the last evaluated round, or the best (default: final)")
    parser.add_argument("--axis", action="append", default=[], metavar="KEY",
                        help="also plot the metric against this config axis (repeatable), e.g. ranks.max_rank")
    parser.add_argument("--no-figures", action="store_true", help="write the tables and the report only")
    args = parser.parse_args(argv)
    try:
        write_report(args.dir, metric=args.metric, stat=args.stat, axes=args.axis, figures=not args.no_figures)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
