"""Paper-style comparison tables: rows = methods (and the baselines), columns = settings, 95% intervals.

Notebook use::

    from analysis import load_sweep, comparison_table, format_table, write_table

    sweep = load_sweep("results/quick")
    table = comparison_table(sweep, metric="accuracy", stat="final")   # or stat="best"; or a results frame
    table.xs("mean", axis=1, level="stat")        # means only: rows = methods, columns = settings (+ "Avg")
    print(format_table(table, fmt="markdown"))    # "82.00 [79.17, 84.83]", marks as below
    print(format_table(table, fmt="latex"))       # booktabs; bold best, dagger: not significantly worse
    write_table(table, "comparison.csv")          # one row per cell: accuracy, accuracy_lo, accuracy_hi, n_seeds...

``comparison_table`` returns a frame indexed by the row key (``label`` by default, in the paper's order:
the baselines "Majority class" and "Untrained", FedIT (R), FedIT (R/2), FLoRA, FlexLoRA, HETLoRA, the
others, Fed-PLoRA last) with two column levels ``(column, stat)``; ``stat`` in :data:`STATS`: ``mean``
(over the seeds), ``lo`` / ``hi`` (its 95% interval), ``std`` / ``min`` / ``max`` (over seeds), ``n``
(seeds), ``interval`` (``seeds``: t over seeds; ``examples``: bootstrap over test examples, one seed;
``reference``: the majority rate; ``none``), ``test_examples``, ``status`` ("≈ majority", "≈ untrained",
"untested": never ranked), ``mark`` (``best``; ``tie``: not significantly worse than the best),
``p_untrained`` / ``p_majority`` (Holm-adjusted one-sided p-values against the baselines), ``final`` and
``best`` (the mean of each trial's final and best value). The rules are in :mod:`analysis.evidence`; the
tests behind the marks are ``assess(...).tests``. Failed trials never enter a cell;
``table.attrs["excluded"]`` lists the trials left out with their status.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.evidence import Evidence, assess
from analysis.values import (  # noqa: F401  (re-exported: the table API of earlier versions)
    AVG,
    BASELINE_ROWS,
    HOMOGENEOUS_PREFIXES,
    METRICS,
    PERCENT_METRICS,
    available_metrics,
    column_order_key,
    higher_is_better,
    is_percent,
    join_keys,
    row_order_key,
    trial_values,
)

STATS = ("mean", "lo", "hi", "std", "min", "max", "n", "interval", "test_examples", "status", "mark", "p_untrained",
         "p_majority", "final", "best")
_TEXT_STATS = ("interval", "status", "mark")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_EMPTY = {"latex": "--", "markdown": "–", "text": "-"}


# ------------------------------------------------------------------------------------------ the table
def comparison_table(data: Any, metric: str = "accuracy", rows: str | list[str] = "label",
                     columns: str | list[str] = "setting", stat: str = "final", include_running: bool = False,
                     examples: pd.DataFrame | None = None, baselines: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cells with intervals, baseline rows and significance marks of ``metric`` per (row, column).

    ``data``: the long results frame of a sweep (one row per trial x round) or a loaded sweep / run (whose
    per-example records and baselines are then used; ``examples`` / ``baselines`` give them for a frame).
    Trials whose status is a failure are left out (``include_running`` keeps pending/running ones at their
    latest evaluated round). ``rows`` may be a list starting with ``"label"``: the other keys join the
    method's name, e.g. ``["label", "train.lr"]`` gives rows "Fed-PLoRA (train.lr=0.001)"; ``columns`` may
    be a list of columns, combined into one label ("IID · 8"). See the module docstring for the stats.
    """
    return evidence_table(assess(data, metric=metric, stat=stat, rows=rows, columns=columns,
                                 include_running=include_running, examples=examples, baselines=baselines))


def evidence_table(ev: Evidence) -> pd.DataFrame:
    """The wide table (rows x (column, stat)) of an :class:`~analysis.evidence.Evidence`."""
    cells = ev.cells
    col_values = ev.column_values
    header = pd.MultiIndex.from_product([col_values, STATS], names=["column", "stat"])
    index = sorted(dict.fromkeys(cells["row"]), key=row_order_key) if len(cells) else []
    wide = {(c, s): cells[cells["column"] == c].set_index("row")[s].reindex(index) for c in col_values for s in STATS}
    table = pd.DataFrame(wide, index=pd.Index(index, name=ev.rows), columns=header)
    for col in col_values:
        for stat in STATS:
            if stat in _TEXT_STATS:
                table[(col, stat)] = table[(col, stat)].fillna("").astype(str)
            elif stat == "n":
                table[(col, stat)] = pd.to_numeric(table[(col, stat)]).fillna(0).astype(int)
            else:
                table[(col, stat)] = pd.to_numeric(table[(col, stat)]).astype(float)
    kinds = [k for k in ("seeds", "examples") if len(cells) and (cells["interval"] == k).any()]
    table.attrs.update(metric=ev.metric, stat=ev.stat, rows=ev.rows, columns=ev.columns, excluded=ev.excluded,
                       percent=is_percent(ev.metric), higher_is_better=higher_is_better(ev.metric),
                       n_trials=ev.n_trials, intervals=kinds, notes=list(ev.notes))
    return table


# ------------------------------------------------------------------------------------------ formatting
def format_table(table: pd.DataFrame, fmt: str = "markdown", best: str | None = "auto", hetero: bool = False,
                 dev: str = "ci", percent: bool | None = None, decimals: int = 2) -> str:
    r"""Render a :func:`comparison_table` as ``markdown``, ``latex`` or ``text``.

    Cells read "mean [lo, hi]" (the 95% interval, ``dev="ci"``), "mean ± std" over seeds (``dev="std"``)
    or the paper's "mean (+max-mean/-(mean-min))" (``dev="range"``; LaTeX ``mean^{+u}_{-l}``), in percent
    for fraction metrics (``percent=None``: from the metric). A cell that is not significantly above a
    baseline carries its status ("≈ majority", "≈ untrained", "untested") and no mark.
    ``best`` (``"auto"``, ``"max"`` or ``"min"``: the table's marks; None: no marks): the best ranked mean
    of a column is bold (markdown ``**``, LaTeX ``\textbf``, text ``*``); a ranked cell not significantly
    worse than it (paired test, Holm-corrected, 5%) gets a dagger ``†`` (LaTeX ``$^\dagger$``).
    ``hetero=True`` also underlines the best ranked mean among heterogeneous methods (rows not FedIT nor a
    baseline): markdown ``_``, LaTeX ``\underline``, text ``‡``. :func:`table_legend` explains the marks.
    """
    if fmt not in ("markdown", "latex", "text"):
        raise ValueError(f"fmt={fmt!r} must be 'markdown', 'latex' or 'text'")
    if dev not in ("ci", "std", "range"):
        raise ValueError(f"dev={dev!r} must be 'ci', 'std' or 'range'")
    if best not in ("auto", "max", "min", None):
        raise ValueError(f"best={best!r} must be 'max', 'min', 'auto' or None")
    percent = table.attrs.get("percent", False) if percent is None else percent
    scale = 100.0 if percent else 1.0
    columns = list(dict.fromkeys(table.columns.get_level_values(0)))
    labels = [str(r) for r in table.index]
    hets = _hetero_best(table, columns, labels) if hetero and best is not None else set()
    body = [[_cell(table.loc[row, col], scale, decimals, dev, fmt, best is not None, (i, col) in hets)
             for col in columns] for i, row in enumerate(table.index)]
    row_header = "Method" if table.attrs.get("rows", table.index.name) == "label" else str(table.index.name)
    header = [row_header, *map(str, columns)]
    if fmt == "latex":
        return _latex(header, labels, body)
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * len(columns)]
        lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in zip(labels, body)]
        return "\n".join(lines)
    return _text(header, labels, body, table_legend(table, fmt="text") if best is not None else "")


def table_legend(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """What the cells and marks of :func:`format_table` mean, for a caption (``markdown`` or ``text``)."""
    over = {"seeds": "t-interval over seeds", "examples": "bootstrap over test examples (one seed: test-set "
            "sampling only, not seed variance)"}
    kinds = " or ".join(over[k] for k in table.attrs.get("intervals", [])) or "none"
    parts = [f"mean over seeds [95% interval: {kinds}]"]
    marks = set(table.xs("mark", axis=1, level="stat").to_numpy().ravel()) if len(table) else set()
    if "best" in marks:
        parts.append(f"{'**bold**' if fmt == 'markdown' else '*'}: best mean among the cells significantly above "
                     "the baselines")
    if "tie" in marks:
        parts.append("†: not significantly worse than the best (paired test, Holm-corrected over the table's "
                     "tests, 5%)")
    statuses = " ".join(table.xs("status", axis=1, level="stat").to_numpy().ravel()) if len(table) else ""
    names = [f"≈ {b}" for b in ("majority", "untrained", "baseline") if f"≈ {b}" in statuses]
    if names:
        parts.append(f"{' / '.join(names)}: not significantly above that baseline (never ranked)")
    if "untested" in statuses:
        parts.append("untested: no test against the baselines was possible (not ranked)")
    return "; ".join(parts) + "."


def _hetero_best(table: pd.DataFrame, columns: list, labels: list[str]) -> set[tuple[int, Any]]:
    out = set()
    higher = table.attrs.get("higher_is_better", True)
    het = np.array([not lab.startswith(HOMOGENEOUS_PREFIXES) for lab in labels])
    for col in columns:
        ranked = (table[(col, "status")] == "").to_numpy() & het
        means = np.where(ranked, table[(col, "mean")].to_numpy(dtype=float), np.nan)
        if (~np.isnan(means)).sum() >= 2:
            target = np.nanmax(means) if higher else np.nanmin(means)
            out |= {(int(i), col) for i in np.flatnonzero(means == target)}
    return out


def _cell(values: pd.Series, scale: float, decimals: int, dev: str, fmt: str, marks: bool, hetero: bool) -> str:
    mean, lo, hi, std, low, high = (float(values[s]) for s in ("mean", "lo", "hi", "std", "min", "max"))
    if math.isnan(mean):
        return _EMPTY[fmt]
    mark = values["mark"] if marks else ""
    note = values["status"] if values["status"] != "baseline" else ""
    number = f"{mean * scale:.{decimals}f}"
    if dev == "std" and not math.isnan(std):
        number += (r" $\pm$ " if fmt == "latex" else " ± ") + f"{std * scale:.{decimals}f}"
    elif dev == "range" and int(values["n"]) > 1:
        up, down = (high - mean) * scale, (mean - low) * scale
        number = (f"${number}^{{+{up:.{decimals}f}}}_{{-{down:.{decimals}f}}}$" if fmt == "latex"
                  else f"{number} (+{up:.{decimals}f}/−{down:.{decimals}f})")
    interval = (f"[{lo * scale:.{decimals}f}, {hi * scale:.{decimals}f}]"
                if dev == "ci" and not (math.isnan(lo) or math.isnan(hi)) else "")
    if fmt == "latex":
        number = rf"\underline{{{number}}}" if hetero else number
        number = (rf"\textbf{{{number}}}" if mark == "best" else number) + (r"$^\dagger$" if mark == "tie" else "")
        small = " ".join(x for x in (interval, latex_escape(note).replace("≈", r"$\approx$")) if x)
        return number + (rf" {{\scriptsize {small}}}" if small else "")
    if fmt == "markdown":
        text = " ".join(x for x in (f"_{number}_" if hetero else number, interval) if x)
        text = f"**{text}**" if mark == "best" else text
    else:
        text = " ".join(x for x in (number, interval) if x) + ("*" if mark == "best" else "") + ("‡" if hetero else "")
    return text + ("†" if mark == "tie" else "") + (f" {note}" if note else "")


def latex_escape(text: str) -> str:
    r"""Escape LaTeX's special characters (``& % $ # _ { } ~ ^ \``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(header: list[str], labels: list[str], body: list[list[str]]) -> str:
    """A booktabs tabular, with a rule between the baseline rows and the methods."""
    lines = [r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for i, (label, cells) in enumerate(zip(labels, body)):
        if i and labels[i - 1] in BASELINE_ROWS and label not in BASELINE_ROWS:
            lines.append(r"\midrule")
        lines.append(" & ".join([latex_escape(label), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _text(header: list[str], labels: list[str], body: list[list[str]], legend: str) -> str:
    rows = [header, *[[label, *cells] for label, cells in zip(labels, body)]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def fmt_row(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    lines = [fmt_row(header), "  ".join("-" * w for w in widths), *(fmt_row(r) for r in rows[1:])]
    return "\n".join(lines + ([legend] if legend else []))


# ------------------------------------------------------------------------------------------ export, facts
def tidy_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per non-empty cell: row and column keys, ``<metric>``, ``<metric>_lo``, ``<metric>_hi``, ``n_seeds``.

    Then the other :data:`STATS` (``interval``, ``status``, ``mark``, ...); raw values, not percent-scaled.
    """
    metric = table.attrs.get("metric", "value")
    rows, columns = table.attrs.get("rows", table.index.name or "row"), table.attrs.get("columns", "column")
    records = []
    for row in table.index:
        for col in dict.fromkeys(table.columns.get_level_values(0)):
            cell = table.loc[row, col]
            if math.isnan(float(cell["mean"])):
                continue
            records.append({rows: row, columns: col, metric: cell["mean"], f"{metric}_lo": cell["lo"],
                            f"{metric}_hi": cell["hi"], "n_seeds": int(cell["n"]),
                            **{s: cell[s] for s in STATS if s not in ("mean", "lo", "hi", "n")}})
    return pd.DataFrame(records)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the table as CSV, one row per cell (see :func:`tidy_table`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy_table(table).to_csv(path, index=False)
    return path


def column_leaders(table: pd.DataFrame) -> pd.DataFrame:
    """Per column: the best ranked row and the ranked rows that are not significantly worse than it.

    Columns: ``column``, ``leader`` (marked best), ``mean``, ``std``, ``runner_up`` (the next ranked mean),
    ``runner_up_mean``, ``margin`` and ``ties`` (the rows marked "not significantly worse").
    """
    higher = table.attrs.get("higher_is_better", True)
    out = []
    for col in dict.fromkeys(table.columns.get_level_values(0)):
        marks = table[(col, "mark")]
        means = table.loc[marks.isin(["best", "tie"]), (col, "mean")].dropna().astype(float)
        if not len(means):
            continue
        order = means.sort_values(ascending=not higher, kind="stable")
        leader = next(r for r in order.index if marks[r] == "best")
        rest = order.drop(leader)
        runner = rest.index[0] if len(rest) else None
        out.append({"column": col, "leader": leader, "mean": order[leader],
                    "std": float(table.at[leader, (col, "std")]),
                    "runner_up": runner, "runner_up_mean": rest.iloc[0] if runner is not None else np.nan,
                    "margin": abs(order[leader] - rest.iloc[0]) if runner is not None else np.nan,
                    "ties": [r for r in order.index if marks[r] == "tie"]})
    return pd.DataFrame(out)
