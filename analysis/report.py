"""Write a Markdown report of a sweep folder or of one run folder.

    python -m analysis.report DIR [--metric accuracy] [--stat final|best] [--focus METHOD] [--axis KEY ...]
                                  [--no-figures]

For a sweep folder (``results.parquet`` / ``trials.parquet`` / ``trials/<id>/``) or a single run folder
(``config.yaml`` + ``rounds.csv``) it writes ``DIR/report.md`` (setup, data notes, the comparison table
with 95% intervals, the untrained model and the majority-class rate, figures, a "Reading" section that
claims only significant differences, and the status of every trial), ``DIR/comparison.csv`` (one row per
cell, with its interval), ``DIR/comparison.tex`` and ``DIR/figures/*.png``, prints the table and the
report's path. Partial sweeps are fine: failed and unfinished trials are listed, never averaged. A metric
with no values (``--metric accuracy`` on a causal-LM sweep) falls back to the first available one.
``--focus`` names the method the Reading compares with the others (default: the sweep's ``focus`` key,
else its first variant). The statistics are those of :mod:`analysis.evidence`.

Notebook use::

    from analysis.report import write_report
    path = write_report("results/quick", metric="accuracy", stat="final", focus="FLoRA")
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

from analysis import plots, stats
from analysis.describe import (
    IGNORED_KEYS,
    data_note_lines,
    fmt_value,
    option_lines,
    test_set_line,
    trial_lines,
)
from analysis.evidence import Evidence, assess, needed_rounds
from analysis.load import (
    NON_AXIS_COLUMNS,
    RUN_MARKER,
    RunResult,
    SweepResult,
    add_labels,
    add_setting,
    flatten_config,
    is_missing,
    load_run,
    load_sweep,
    trial_state,
)
from analysis.reading import focus_method, format_bytes, run_reading, sweep_reading
from analysis.tables import (
    AVG,
    available_metrics,
    evidence_table,
    format_table,
    is_percent,
    join_keys,
    row_order_key,
    table_legend,
    trial_values,
    write_table,
)
from core.naming import slug
from orchestrator.trackers import TRACKERS, LoggingConfig, check_installed, log_report


@dataclass
class _Input:
    """What a report needs, from a sweep or from one run."""

    kind: str
    path: Path
    source: SweepResult | RunResult
    results: pd.DataFrame
    trials: pd.DataFrame
    configs: pd.DataFrame
    similarity: pd.DataFrame
    partition: pd.DataFrame
    baselines: pd.DataFrame
    name: str
    sweep_config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    records: int = 0  # per-example records read for the table

    def examples(self, rounds: dict[str, set[int]]) -> pd.DataFrame:
        """The per-example records of the given rounds of each trial (with a trial_id column)."""
        if isinstance(self.source, SweepResult):
            return self.source.load_examples(rounds)
        trial_id = self.path.name
        frame = self.source.examples
        return frame[frame["round"].isin(rounds.get(trial_id, set()))].assign(trial_id=trial_id)


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
        return _Input("sweep", path, sweep, sweep.results, sweep.trials, config_frame, sweep.similarity,
                      sweep.partition, sweep.baselines, sweep.name, sweep.config)
    if (path / RUN_MARKER).is_file() or (path / "rounds.csv").is_file():
        run = load_run(path)
        results = run.as_results()
        trial_id = path.name
        trials = pd.DataFrame([{"trial_id": trial_id, "status": run.status, "label": run.label,
                                "setting": results["setting"].iloc[0] if len(results) else None,
                                "rounds_completed": int(run.rounds["round"].max()) if len(run.rounds) else 0,
                                "error": None, **run.flat_config()}])
        trials = add_setting(add_labels(trials))
        return _Input("run", path, run, results, trials, trials.copy(), run.similarity.assign(trial_id=trial_id),
                      run.partition.assign(trial_id=trial_id), run.baselines, path.name, summary=run.summary)
    raise FileNotFoundError(f"{str(path)!r} is neither a sweep folder (results.parquet, trials/) nor a run folder "
                            f"({RUN_MARKER}, rounds.csv)")


# ------------------------------------------------------------------------------------------ report
def write_report(path: str | Path, metric: str | None = None, stat: str = "final", axes: list[str] | None = None,
                 figures: bool = True, echo: Callable[[str], None] = print, focus: str | None = None) -> Path:
    """Write ``report.md``, ``comparison.csv``, ``comparison.tex`` and ``figures/`` into ``path``.

    ``metric``: default the sweep's headline metric (trials.parquet ``metric``), else ``accuracy``.
    ``axes``: config keys to plot the metric against (besides grid axes that vary within a method and
    setting: those also split the table's rows). ``figures=False`` skips the figures (a table-only report).
    ``focus``: the method the Reading compares with the others (see :func:`analysis.reading.focus_method`).
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
    ev = second = None
    if metric in data.results.columns:
        side = ["mcc"] if metric == "accuracy" and "mcc" in available else []
        examples = data.examples(needed_rounds(data.results, [metric, *side]))
        data.records = len(examples)
        common = dict(stat=stat, rows=["label", *extra], include_running=data.kind == "run", examples=examples,
                      baselines=data.baselines)
        ev = assess(data.results, metric=metric, **common)
        second = assess(data.results, metric=side[0], tests=False, **common) if side else None
    table = evidence_table(ev) if ev is not None else None
    if table is not None:
        write_table(table, path / "comparison.csv")
        (path / "comparison.tex").write_text(format_table(table, fmt="latex") + "\n")
    labels = list(dict.fromkeys(data.trials["label"].dropna().astype(str))) if "label" in data.trials else []
    focus = focus_method(data.sweep_config, labels, focus) if data.kind == "sweep" else None
    drawn, skipped = _figures(data, path / "figures", metric, stat, axes or [], extra, focus) if figures else ([], [])
    text = _markdown(data, ev, second, stat, drawn, skipped, notes, extra, focus)
    out = path / "report.md"
    out.write_text(text)
    if table is not None and len(table):
        echo(format_table(table, fmt="text"))
    else:
        echo("no finished trial with an evaluated round yet")
    for line in data_note_lines(data.baselines):
        echo(f"data note: {line[2:]}")
    echo(f"report: {out}")
    return out


def _markdown(data: _Input, ev: Evidence | None, second: Evidence | None, stat: str,
              figures: list[tuple[str, Path]], skipped: list[str], notes: list[str], extra: list[str],
              focus: str | None) -> str:
    title = "Sweep report" if data.kind == "sweep" else "Run report"
    lines = [f"# {title}: {data.name}", ""]
    lines += ["## Setup", "", *_setup(data, ev), ""]
    data_notes = data_note_lines(data.baselines)
    if data_notes:
        lines += ["## Data notes", "", "Warnings raised while splitting and truncating the data:", "", *data_notes, ""]
    lines += ["## Comparison", ""]
    table = evidence_table(ev) if ev is not None else None
    if table is not None and len(table):
        lines += [_caption(data, table, stat), "", format_table(table, fmt="markdown"), "",
                  "Files: [comparison.csv](comparison.csv) (one row per cell, raw values, with the interval, status "
                  "and mark), [comparison.tex](comparison.tex) (LaTeX, needs `booktabs`).", ""]
        lines += _cell_notes(extra)
        lines += _secondary(second)
        lines += _best_vs_final(ev, stat)
    else:
        lines += ["No finished trial has an evaluated round yet.", ""]
    notes = notes + (ev.notes if ev is not None else [])
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    reading = ["- Nothing to compare yet."] if ev is None else (
        run_reading(ev, data.results) if data.kind == "run" else sweep_reading(ev, focus))
    lines += ["## Reading", "", *([f"Focus method: {focus} (`--focus` to change).", ""] if focus else []),
              *reading, ""]
    lines += ["## Figures", ""]
    for caption, fig in figures:
        rel = fig.relative_to(data.path).as_posix()
        lines += [f"**{caption}** ([{rel}]({rel}))", "", f"![{caption}]({rel})", ""]
    if skipped:
        lines += ["Not drawn:", "", *[f"- {s}" for s in skipped], ""]
    lines += ["## Trials", "", *_trials_section(data, ev.metric if ev is not None else "accuracy"), ""]
    lines += ["## Definitions", "", *DEFINITIONS, ""]
    return "\n".join(lines)


DEFINITIONS = [
    "- `final`: value at a trial's last evaluated round after training; `best`: its best evaluated value after "
    "training. Round 0 is the untrained model (the base model with the initial adapters and head), evaluated "
    "before any training; curves start there.",
    "- Untrained: the mean over seeds of the trials' round-0 values; Majority class: the accuracy of predicting "
    "the test set's most frequent class (its MCC is 0).",
    "- Intervals (95%): a t-interval over seeds when a cell has 2 or more; for one seed, a percentile bootstrap "
    f"over the test examples ({stats.N_RESAMPLES:,} resamples, fixed seed), which covers test-set sampling, not "
    "seed variance.",
    "- Tests: each method cell against each baseline (one-sided, paired on the same test examples), every pair "
    "of methods in a column (two-sided, paired on the same test examples and seeds): McNemar's exact test for "
    "the accuracy of one seed, else a two-stage paired bootstrap over seeds and examples (p from the bootstrap "
    "standard error), or a paired t-test over seeds without per-example records. Holm's correction runs over "
    "all the table's tests; significant means below 5% after it. See analysis/evidence.py and analysis/stats.py.",
    "- Examples or seeds to resolve a gap: the size at which a paired two-sided test at 5% has 80% power for the "
    "observed gap, `n = ((z_0.975 + z_0.8) sd / gap)^2` with the sd of the per-example (or per-seed) "
    "differences (normal approximation; t quantiles for seeds); Holm's correction raises it.",
    "- Initialization noise (parameter space) is the paper's Eq. 2 (rank-wise, zero-padded factor differences, "
    "summed over the round's clients); function space is `||dW_global - dW_client_start||_F`. Aggregation "
    "noise is Eq. 3 on the clients' effective end-of-round adapters (fold + trained) with the method's "
    "weights; see orchestrator/metrics.py.",
]


def _caption(data: _Input, table: pd.DataFrame, stat: str) -> str:
    metric = table.attrs["metric"]
    unit = " (x100)" if is_percent(metric) else ""
    per_cell = sorted({int(v) for v in table.xs("n", axis=1, level="stat").drop(columns=[AVG], errors="ignore")
                       .to_numpy().ravel() if v > 0})
    seeds = f"{'/'.join(map(str, per_cell))} seed{'s' if per_cell != [1] else ''} per cell"
    what = "of the run" if data.kind == "run" else f"{stat} value per trial ({_stat_phrase(stat)}), {seeds}"
    return f"`{metric}`{unit} {what}: {table_legend(table)}"


def _secondary(ev: Evidence | None) -> list[str]:
    """The MCC table next to accuracy: intervals only (the claims rest on the headline metric's tests)."""
    if ev is None or not len(ev.cells):
        return []
    table = evidence_table(ev)
    unit = " (x100)" if is_percent(ev.metric) else ""
    return [f"`{ev.metric}`{unit} of the same trials: {table_legend(table)[:-1]}; no tests on this table (the marks "
            "above rest on the headline metric).", "", format_table(table, fmt="markdown", best=None), ""]


def _best_vs_final(ev: Evidence, stat: str) -> list[str]:
    """Cells whose best value (over the evaluated rounds) differs from the final one at the shown precision."""
    cells = ev.cells[(ev.cells["kind"] == "method") & (ev.cells["column"] != AVG)]
    scale = 100.0 if is_percent(ev.metric) else 1.0
    differ = cells[(cells["final"] * scale).round(2) != (cells["best"] * scale).round(2)].dropna(subset=["final"])
    if not len(differ):
        return []
    lines = [f"Best vs final (the table shows `{stat}`): cells where they differ.", "",
             "| Method | Setting | final | best |", "|---|---|---:|---:|"]
    lines += [f"| {r['row']} | {r['column']} | {r['final'] * scale:.2f} | {r['best'] * scale:.2f} |"
              for _, r in differ.iterrows()]
    return lines + [""]


def _stat_phrase(stat: str) -> str:
    return "last evaluated round" if stat == "final" else "best evaluated round"


def _setup(data: _Input, ev: Evidence | None) -> list[str]:
    lines = trial_lines(data.kind, data.trials)
    if data.kind == "sweep" and (data.path / "sweep.yaml").is_file():
        lines.append("- Sweep specification: [sweep.yaml](sweep.yaml).")
    lines += option_lines(data.configs)
    size = test_set_line(ev.cells if ev is not None else pd.DataFrame(), data.baselines)
    lines += [size] if size else ["- Test set: size not recorded."]
    if ev is not None and not data.records:
        lines.append("- No per-example records (examples.parquet) here: intervals and tests come from the seeds "
                     "alone, and a one-seed cell has neither.")
    s = data.summary
    if s:
        lines.append(f"- Summary: {s.get('rounds')} rounds; {format_bytes(s.get('bytes_down_total'))} down, "
                     f"{format_bytes(s.get('bytes_up_total'))} up; wall {_num(s.get('wall_seconds'))} s; overhead "
                     f"ratio {_num(s.get('overhead_ratio'), 3)}.")
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
    skip = ("final_", "best_", "untrained_", *IGNORED_KEYS)
    extra = []
    for col in frame.columns:
        if col == "seed" or col in NON_AXIS_COLUMNS or col.startswith(skip):
            continue
        values = frame[col].map(lambda v: None if is_missing(v) else fmt_value(v))
        if (values.groupby([frame["label"], frame["setting"]]).nunique(dropna=True) > 1).any():
            extra.append(col)
    return extra


def _figures(data: _Input, folder: Path, metric: str, stat: str, axes: list[str], extra: list[str],
             focus: str | None) -> tuple[list, list[str]]:
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
        add(f"{metric} vs round (round 0: the untrained model)",
            plots.plot_curves(results, folder / f"curves_{metric}.png", metric=metric, baselines=data.baselines))
        add("train loss vs round", plots.plot_curves(results, folder / "curves_train_loss.png", metric="train_loss"))
        add("initialization and aggregation noise", plots.plot_noise(results, folder / "noise.png"))
        add(f"{metric} vs communication", plots.plot_communication(results, folder / f"communication_{metric}.png",
                                                                    metric=metric))
        for axis in dict.fromkeys([*axes, *extra]):
            add(f"{stat} {metric} by {axis}", plots.plot_by_axis(data.results, folder / f"by_{slug(axis)}.png",
                                                                 axis=axis, metric=metric, stat=stat))
        for setting, trial_id in _pick_trials(data, data.similarity, prefer=focus or "Fed-PLoRA"):
            add(f"rank-slot similarity, {setting} (trial {trial_id}, last round)",
                plots.plot_similarity(data.similarity, folder / f"similarity_{slug(setting)}.png", trial_id=trial_id))
        if not len(data.similarity):
            add("rank-slot similarity", plots.plot_similarity(None, folder / "similarity.png"))
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


def _pick_trials(data: _Input, frame: pd.DataFrame, prefer: str | None) -> list[tuple[str, str]]:
    """One finished trial per setting that has rows in ``frame`` (``prefer``'s first, then lowest seed)."""
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


def _num(value: Any, digits: int = 1) -> str:
    if is_missing(value) or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return f"{float(value):.{digits}f}"


def saved_logging(path: Path) -> tuple[LoggingConfig, str | None]:
    """The saved ``logging`` section of a folder (without its trackers) and the sweep's name, if any.

    From a sweep folder's ``sweep.yaml`` or a run folder's ``config.yaml``: where the folder's tracker
    records are, so the report joins them; the sweep's name is its trackers' default experiment.
    """
    sweep, run = path / "sweep.yaml", path / "config.yaml"
    spec = (yaml.safe_load(sweep.read_text()) or {}).get("spec", {}) if sweep.is_file() else {}
    section = spec.get("logging") or ((yaml.safe_load(run.read_text()) or {}).get("logging") if run.is_file() else {})
    section = {k: v for k, v in (section or {}).items() if k != "trackers"}
    return LoggingConfig(**section), spec.get("name")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="a sweep folder or a run folder")
    parser.add_argument("--metric", help="task metric of the table (default: the sweep's metric, else accuracy)")
    parser.add_argument("--stat", default="final", choices=("final", "best"),
                        help="per-trial value: at the last evaluated round, or the best (default: final)")
    parser.add_argument("--focus", metavar="METHOD",
                        help="the method the Reading compares with the others (default: the sweep's focus key, "
                             "else its first variant)")
    parser.add_argument("--axis", action="append", default=[], metavar="KEY",
                        help="also plot the metric against this config axis (repeatable), e.g. ranks.max_rank")
    parser.add_argument("--no-figures", action="store_true", help="write the tables and the report only")
    parser.add_argument("--log", action="append", default=[], choices=TRACKERS, metavar="TRACKER",
                        help=f"also record the report and figures in a tracker (repeatable): {', '.join(TRACKERS)}; "
                             "in the folder's tracker store (its logging.dir, else DIR/trackers)")
    args = parser.parse_args(argv)
    try:
        check_installed(args.log)
        write_report(args.dir, metric=args.metric, stat=args.stat, axes=args.axis, figures=not args.no_figures,
                     focus=args.focus)
        if args.log:
            tracking, experiment = saved_logging(Path(args.dir))
            log_report(tracking.with_trackers(args.log), Path(args.dir), experiment)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
