"""Paper-style comparison tables: rows = methods, columns = settings, mean and std over seeds.

Notebook use::

    from analysis import load_sweep, comparison_table, format_table, write_table

    sweep = load_sweep("results/quick")
    table = comparison_table(sweep.results, metric="accuracy", stat="final")   # or stat="best"
    table.xs("mean", axis=1, level="stat")        # means only: rows = methods, columns = settings (+ "Avg")
    print(format_table(table, fmt="markdown"))    # "85.20 ± 0.40", the best mean per column in **bold**
    print(format_table(table, fmt="latex", hetero=True, dev="range"))   # paper style: 85.20^{+0.31}_{-0.15}
    write_table(table, "comparison.csv")

``comparison_table`` returns a frame indexed by the row key (``label`` by default, in the paper's order:
Untuned, FedIT (R), FedIT (R/2), FLoRA, FlexLoRA, HETLoRA, the others, Fed-PLoRA last) with two column
levels ``(column, stat)``, ``stat`` in ``mean, std, min, max, n``. ``final`` is a trial's value at its
last evaluated round, ``best`` its best evaluated value; each trial gives one value and a cell
aggregates the trials of its (row, column), normally the seeds (``std`` is the sample std, ddof = 1; NaN
for one trial). "Avg" (when there are several columns): mean of the row's column means; its std, min and
max are over the seeds complete in every column of the per-seed average across columns. Failed trials
never enter a cell; ``table.attrs["excluded"]`` lists the trials left out with their status.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import GLUE_NAMES, METHOD_NAMES, add_labels, add_setting, usable

STATS = ("mean", "std", "min", "max", "n")
AVG = "Avg"
METRICS = ("accuracy", "mcc", "rouge_l", "f1", "eval_loss", "personal_accuracy", "personal_mcc",
           "personal_rouge_l", "personal_loss")
PERCENT_METRICS = ("accuracy", "mcc", "rouge_l", "f1")
HOMOGENEOUS_PREFIXES = ("FedIT", "Untuned")
_ROW_RANKS = {"Untuned": 0, "Untuned Model": 0, "FedIT (R)": 1, "FedIT (R/2)": 2, "FLoRA": 4, "FlexLoRA": 5,
              "HETLoRA": 6, "Fed-PLoRA": 9}
_GLUE_ORDER = list(GLUE_NAMES.values())
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


# ------------------------------------------------------------------------------------------ metrics
def is_percent(metric: str) -> bool:
    """Whether a metric is a fraction shown in percent (accuracy, MCC, Rouge-L, F1 and personal_*)."""
    return metric.removeprefix("personal_") in PERCENT_METRICS


def higher_is_better(metric: str) -> bool:
    """False for losses and noise measurements."""
    return "loss" not in metric and "noise" not in metric


def available_metrics(frame: pd.DataFrame) -> list[str]:
    """The evaluation metrics with at least one value in ``frame`` (``train_loss`` is not one)."""
    return [m for m in METRICS if m in frame.columns and frame[m].notna().any()]


# ------------------------------------------------------------------------------------------ ordering
def row_order_key(label: Any) -> tuple:
    """Sort key of a row: the paper's order, other methods alphabetically, Fed-PLoRA variants, Fed-PLoRA."""
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
    evaluated value (max, or min for losses), with the round it was reached.
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
    if not len(frame):
        return pd.DataFrame(columns=[*keep, "round", "value"])
    if "round" not in frame.columns:
        frame = frame.assign(round=frame.groupby("trial_id").cumcount() + 1)
    groups = frame.groupby("trial_id", sort=False)
    if stat == "final":
        idx = groups["round"].idxmax()
    else:
        idx = groups[metric].idxmax() if higher_is_better(metric) else groups[metric].idxmin()
    out = frame.loc[idx.to_numpy(), [*keep, "round", metric]].rename(columns={metric: "value"})
    return out.reset_index(drop=True)


def comparison_table(results: pd.DataFrame, metric: str = "accuracy", rows: str | list[str] = "label",
                     columns: str | list[str] = "setting", stat: str = "final",
                     include_running: bool = False) -> pd.DataFrame:
    """Mean, std, min, max and count over trials (seeds) of ``metric`` per (row, column); see the module doc.

    ``results``: the long frame of a sweep (one row per trial x round). Trials whose status is a failure
    are left out (``include_running`` keeps pending/running ones, at their latest evaluated round).
    ``rows`` may be a list starting with ``"label"``: the other keys join the method's name, e.g.
    ``["label", "train.lr"]`` gives rows "Fed-PLoRA (train.lr=0.001)" (grid axes that would otherwise be
    averaged inside a cell). ``columns`` may be a list of columns, combined into one label ("IID · 8").
    """
    frame = add_setting(add_labels(results)) if len(results) else results
    frame, excluded = usable(frame, include_running)
    if not isinstance(rows, str):
        first, *extra = rows
        frame = join_keys(frame, first, extra)
        rows = first
    if not isinstance(columns, str):
        name = " · ".join(columns)
        frame = frame.assign(**{name: frame[list(columns)].astype(str).agg(" · ".join, axis=1)})
        columns = name
    vals = trial_values(frame, metric, stat, by=(rows, columns))
    col_values = sorted(vals[columns].dropna().unique(), key=column_order_key)
    if len(col_values) > 1:
        col_values.append(AVG)
    header = pd.MultiIndex.from_product([col_values, STATS], names=["column", "stat"])
    cells = vals.groupby([rows, columns])["value"].agg(["mean", "std", "min", "max", "count"])
    table = cells.rename(columns={"count": "n"}).unstack(columns)
    table = table.swaplevel(axis=1).reindex(columns=header) if len(table) else pd.DataFrame(columns=header)
    if AVG in col_values:
        _add_average(table, vals, rows, columns, col_values[:-1])
    table = table.reindex(sorted(table.index, key=row_order_key))
    table.index.name = rows
    for col in col_values:
        table[(col, "n")] = table[(col, "n")].fillna(0).astype(int)
    table.attrs.update(metric=metric, stat=stat, rows=rows, columns=columns, excluded=excluded,
                       percent=is_percent(metric), higher_is_better=higher_is_better(metric),
                       n_trials=int(vals["trial_id"].nunique()))
    return table


def join_keys(frame: pd.DataFrame, column: str = "label", keys: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """``column`` with the values of ``keys`` appended: "Fed-PLoRA (train.lr=0.001)" (rows split by a grid axis)."""
    if not keys or not len(frame):
        return frame
    parts = frame[list(keys)].apply(lambda r: ", ".join(f"{k}={_short(v)}" for k, v in r.items()), axis=1)
    return frame.assign(**{column: frame[column].astype(str) + " (" + parts + ")"})


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_average(table: pd.DataFrame, vals: pd.DataFrame, rows: str, columns: str, col_values: list) -> None:
    means = table.xs("mean", axis=1, level="stat")[col_values]
    table[(AVG, "mean")] = means.mean(axis=1, skipna=False)
    if "seed" in vals.columns and len(vals):
        per_seed = vals.groupby([rows, "seed", columns])["value"].mean().unstack(columns)
        per_seed = per_seed.reindex(columns=col_values).dropna().mean(axis=1)
        grouped = per_seed.groupby(level=rows)
        complete = table[(AVG, "mean")].notna()
        for stat, values in (("std", grouped.std()), ("min", grouped.min()), ("max", grouped.max()),
                             ("n", grouped.count())):
            table[(AVG, stat)] = values.reindex(table.index).where(complete)


# ------------------------------------------------------------------------------------------ formatting
def format_table(table: pd.DataFrame, fmt: str = "markdown", best: str | None = "auto", hetero: bool = False,
                 dev: str = "std", percent: bool | None = None, decimals: int = 2) -> str:
    r"""Render a :func:`comparison_table` as ``markdown``, ``latex`` or ``text``.

    Cells read "mean ± std" (``dev="std"``) or the paper's "mean (+max-mean/-(mean-min))" (``dev="range"``;
    LaTeX ``mean^{+u}_{-l}``), in percent for fraction metrics (``percent=None``: from the metric).
    ``best``: ``"max"``, ``"min"``, ``"auto"`` (max, or min for losses) or None; the best mean per column
    (ties at the shown precision included; only where a column has two or more values) is bold (markdown
    ``**``, LaTeX ``\textbf``, text ``*``).
    ``hetero=True`` also marks the best heterogeneous method (rows not FedIT/Untuned): markdown ``_``,
    LaTeX ``\underline``, text ``†``.
    """
    if fmt not in ("markdown", "latex", "text"):
        raise ValueError(f"fmt={fmt!r} must be 'markdown', 'latex' or 'text'")
    if dev not in ("std", "range"):
        raise ValueError(f"dev={dev!r} must be 'std' or 'range'")
    percent = table.attrs.get("percent", False) if percent is None else percent
    if best == "auto":
        best = "max" if table.attrs.get("higher_is_better", True) else "min"
    scale = 100.0 if percent else 1.0
    columns = list(dict.fromkeys(table.columns.get_level_values(0)))
    labels = [str(r) for r in table.index]
    marks = _marks(table, columns, labels, best, hetero, scale, decimals)
    body = [[_cell(table.loc[row, col], scale, decimals, dev, fmt, marks.get((i, col), "")) for col in columns]
            for i, row in enumerate(table.index)]
    row_header = "Method" if table.attrs.get("rows", table.index.name) == "label" else str(table.index.name)
    if fmt == "latex":
        return _latex([row_header, *map(str, columns)], labels, body)
    if fmt == "markdown":
        lines = ["| " + " | ".join([row_header, *map(str, columns)]) + " |",
                 "|" + "---|" + "---:|" * len(columns)]
        lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in zip(labels, body)]
        return "\n".join(lines)
    kinds = "".join(marks.values())
    return _text([row_header, *map(str, columns)], labels, body, "b" in kinds, "h" in kinds)


def _marks(table: pd.DataFrame, columns: list, labels: list[str], best: str | None, hetero: bool, scale: float,
           decimals: int) -> dict[tuple[int, Any], str]:
    marks: dict[tuple[int, Any], str] = {}
    if best not in ("max", "min"):
        if best is not None:
            raise ValueError(f"best={best!r} must be 'max', 'min', 'auto' or None")
        return marks
    het = np.array([not lab.startswith(HOMOGENEOUS_PREFIXES) for lab in labels])
    for col in columns:
        shown = (table[(col, "mean")].to_numpy(dtype=float) * scale).round(decimals)
        for kind, mask in (("best", np.ones(len(labels), bool)), ("hetero", het)):
            if kind == "hetero" and not hetero:
                continue
            cand = np.where(mask & ~np.isnan(shown), shown, np.nan)
            if (~np.isnan(cand)).sum() < 2:  # nothing to compare with
                continue
            target = np.nanmax(cand) if best == "max" else np.nanmin(cand)
            for i in np.flatnonzero(cand == target):
                marks[(int(i), col)] = marks.get((int(i), col), "") + kind[0]
    return marks


def _cell(values: pd.Series, scale: float, decimals: int, dev: str, fmt: str, mark: str) -> str:
    mean, std, lo, hi, n = (float(values[s]) for s in STATS)
    if math.isnan(mean):
        return {"latex": "--", "markdown": "–", "text": "-"}[fmt]
    pm = r" $\pm$ " if fmt == "latex" else " ± "
    text = f"{mean * scale:.{decimals}f}"
    if dev == "std" and not math.isnan(std):
        text += f"{pm}{std * scale:.{decimals}f}"
    elif dev == "range" and n > 1 and not math.isnan(lo):
        up, down = (hi - mean) * scale, (mean - lo) * scale
        text = (f"${text}^{{+{up:.{decimals}f}}}_{{-{down:.{decimals}f}}}$" if fmt == "latex"
                else f"{text} (+{up:.{decimals}f}/−{down:.{decimals}f})")
    if fmt == "latex":
        text = rf"\underline{{{text}}}" if "h" in mark else text
        return rf"\textbf{{{text}}}" if "b" in mark else text
    if fmt == "markdown":
        text = f"_{text}_" if "h" in mark else text
        return f"**{text}**" if "b" in mark else text
    return text + ("*" if "b" in mark else "") + ("†" if "h" in mark else "")


def latex_escape(text: str) -> str:
    r"""Escape LaTeX's special characters (``& % $ # _ { } ~ ^ \``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(header: list[str], labels: list[str], body: list[list[str]]) -> str:
    lines = [r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join([latex_escape(label), *cells]) + r" \\" for label, cells in zip(labels, body)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _text(header: list[str], labels: list[str], body: list[list[str]], best: bool, hetero: bool) -> str:
    rows = [header, *[[label, *cells] for label, cells in zip(labels, body)]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def fmt_row(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    lines = [fmt_row(header), "  ".join("-" * w for w in widths), *(fmt_row(r) for r in rows[1:])]
    notes = (["* best per column"] if best else []) + (["† best heterogeneous method"] if hetero else [])
    return "\n".join(lines + ([", ".join(notes)] if notes else []))


# ------------------------------------------------------------------------------------------ export, facts
def flat_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table with one header level: ``"<column> <stat>"`` (raw values, not percent-scaled)."""
    flat = table.copy()
    flat.columns = [f"{col} {stat}" for col, stat in table.columns]
    return flat.reset_index()


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the table as CSV (see :func:`flat_table`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat_table(table).to_csv(path, index=False)
    return path


def column_leaders(table: pd.DataFrame, best: str = "auto") -> pd.DataFrame:
    """Per column: the leading row, its mean, the runner-up, its mean, the margin and the leader's std."""
    if best == "auto":
        best = "max" if table.attrs.get("higher_is_better", True) else "min"
    out = []
    for col in dict.fromkeys(table.columns.get_level_values(0)):
        means = table[(col, "mean")].dropna().astype(float)
        if not len(means):
            continue
        ranked = means.sort_values(ascending=best == "min", kind="stable")
        runner = ranked.index[1] if len(ranked) > 1 else None
        out.append({"column": col, "leader": ranked.index[0], "mean": ranked.iloc[0],
                    "std": float(table.loc[ranked.index[0], (col, "std")]),
                    "runner_up": runner, "runner_up_mean": ranked.iloc[1] if runner is not None else np.nan,
                    "margin": abs(ranked.iloc[0] - ranked.iloc[1]) if runner is not None else np.nan})
    return pd.DataFrame(out)
