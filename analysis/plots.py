"""Figures of a sweep or a run (matplotlib, Agg canvas, PNG). Each function returns the saved path.

Notebook use::

    from analysis import load_sweep, plots

    sweep = load_sweep("results/quick")
    plots.plot_curves(sweep.results, "figures/curves.png", metric="accuracy",   # per setting, from round 0
                      baselines=sweep.baselines)                                # + the majority-class rate
    plots.plot_noise(sweep.results, "figures/noise.png")                        # init / aggregation noise
    plots.plot_by_axis(sweep.results, "figures/by_dist.png", axis="ranks.distribution")
    plots.plot_similarity(sweep.similarity, "figures/sim.png", trial_id="3")    # last round by default
    plots.plot_communication(sweep.results, "figures/comm.png")
    plots.plot_partition(sweep.partition, "figures/partition.png", trial_id="3")

A function whose data is missing (no similarity.csv for FLoRA, no noise columns, a missing axis...)
draws nothing, logs why on the ``analysis.plots`` logger and returns None. Methods keep one colour in
every figure (the table's row order). Lines are means over the trials (seeds) of a (method, setting);
bands and error bars are the 95% t-interval over the seeds where there are 2 or more. Curves start at
round 0 (the untrained model, when the runs evaluated it) and show a marker per evaluated round when there
are few. Legends sit below the axes, never on the data; log axes are used only for data spanning more than
a decade and carry plain value labels. Only finished trials are drawn (see ``analysis.load.usable``).
The figures are built on ``matplotlib.figure.Figure`` without pyplot, so a notebook's backend is untouched.
"""

from __future__ import annotations

import functools
import logging
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from analysis import stats
from analysis.load import add_labels, add_setting, usable
from analysis.values import clip_to_range, column_order_key, is_percent, row_order_key, trial_values

log = logging.getLogger(__name__)
NOISE_COLUMNS = {"init_noise_param": "parameter space", "init_noise_fn": "function space",
                 "agg_noise": "Eq. 3", "agg_noise_rankwise": "rank-wise"}
_NOISE_ROWS = (("initialization noise\n(solid: param., dashed: function)", ("init_noise_param", "init_noise_fn")),
               ("aggregation noise\n(solid: Eq. 3, dotted: rank-wise)", ("agg_noise", "agg_noise_rankwise")))
_NOISE_STYLES = {"init_noise_param": "-", "init_noise_fn": "--", "agg_noise": "-", "agg_noise_rankwise": ":"}
MARKER_ROUNDS = 15  # curves with at most this many evaluated rounds get a marker per round
ZERO_NOISE = 1e-12  # a noise value at or below this is zero up to floating-point rounding
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a"]


class SkipPlot(Exception):
    """The data a figure needs is missing: the figure is skipped (logged, None returned)."""


def _skippable(fn: Callable[..., Path]) -> Callable[..., Path | None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Path | None:
        try:
            return fn(*args, **kwargs)
        except SkipPlot as why:
            log.warning("%s skipped: %s", fn.__name__, why)
            return None

    return wrapper


# ------------------------------------------------------------------------------------------ helpers
def method_colors(labels: Any) -> dict[str, str]:
    """One colour per method label, in the table's row order (Fed-PLoRA red)."""
    ordered = sorted({str(x) for x in labels}, key=row_order_key)
    colors = {}
    for i, label in enumerate(x for x in ordered if x != "Fed-PLoRA"):
        colors[label] = _COLORS[i % len(_COLORS)]
    colors["Fed-PLoRA"] = "#d62728"
    return colors


def _prepared(results: pd.DataFrame, need: list[str]) -> pd.DataFrame:
    if results is None or not len(results):
        raise SkipPlot("no results")
    missing = [c for c in need if c not in results.columns or not results[c].notna().any()]
    if missing:
        raise SkipPlot(f"no values for {missing}")
    frame, _ = usable(add_setting(add_labels(results)))
    if not len(frame):
        raise SkipPlot("no finished trials")
    if "trial_id" not in frame.columns:
        frame = frame.assign(trial_id="run")
    return frame


def _grid(n: int, width: float = 5.0, height: float = 3.6, max_cols: int = 3) -> tuple[Figure, list]:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _save(fig: Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _settings(frame: pd.DataFrame) -> list:
    return sorted(frame["setting"].dropna().unique(), key=column_order_key)


def _labels(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["label"].dropna().astype(str).unique(), key=row_order_key)


def _legend(fig: Figure, axes: list) -> None:
    handles, names = {}, []
    for ax in axes:
        for h, name in zip(*ax.get_legend_handles_labels()):
            if name not in handles:
                handles[name] = h
                names.append(name)
    if names:
        per_item = 6.0 * max(len(n) for n in names) + 40.0  # points: ~6 pt per character + the handle
        ncols = int(max(1, min(len(names), fig.get_figwidth() * 72 // per_item)))
        fig.legend([handles[n] for n in names], names, loc="outside lower center", ncols=ncols, frameon=False)


def seed_bands(values: pd.Series, by: pd.Series, metric: str = "") -> pd.DataFrame:
    """Per value of ``by``: ``mean``, ``lo``, ``hi`` and ``n`` of ``values``.

    ``lo, hi``: the 95% t-interval over the values (the seeds), cut to ``metric``'s range; NaN for one value.
    """
    rows = {}
    for key, group in values.groupby(by, sort=True):
        iv = stats.t_interval(group.to_numpy(dtype=float))
        rows[key] = {"mean": iv.value, "lo": clip_to_range(metric, iv.lo), "hi": clip_to_range(metric, iv.hi),
                     "n": iv.n}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "lo", "hi", "n"])


def _mean_band(ax: Any, x: np.ndarray, values: pd.DataFrame, label: str, color: str, scale: float = 1.0,
               marker: str | None = None) -> None:
    mean = values["mean"].to_numpy(dtype=float) * scale
    ax.plot(x, mean, label=label, color=color, lw=1.6, marker=marker, ms=4)
    lo, hi = values["lo"].to_numpy(dtype=float) * scale, values["hi"].to_numpy(dtype=float) * scale
    if (~np.isnan(lo)).any():
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def _log_axis(ax: Any, which: str = "y", min_ratio: float = 10.0) -> None:
    """Log scale on axis ``which`` when the data span more than ``min_ratio``, with plain value labels.

    Labels at 1, 2 and 5 times each power of ten over up to two decades, at the powers of ten beyond
    (mathtext labels are slow to lay out; ``1e-05``-style labels are not).
    """
    low, high = (ax.dataLim.y0, ax.dataLim.y1) if which == "y" else (ax.dataLim.x0, ax.dataLim.x1)
    if low <= 0 or high / low < min_ratio:
        return
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if high / low <= 100 else (1.0,), numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _metric_axis_label(metric: str) -> str:
    return f"{metric} (%)" if is_percent(metric) else metric


# ------------------------------------------------------------------------------------------ figures
@_skippable
def plot_curves(results: pd.DataFrame, out: str | Path, metric: str = "accuracy", by: str = "setting",
                baselines: pd.DataFrame | None = None) -> Path:
    """``metric`` vs round, one panel per ``by`` value, one line per method (mean over seeds, 95% band).

    Round 0, when recorded, is the untrained model. ``baselines`` (one row per trial with ``majority_rate``,
    as ``load_sweep(...).baselines``) adds the majority-class rate as a dashed grey line (accuracy only).
    """
    frame = _prepared(results, [metric, "round"])
    if by not in frame.columns:
        raise SkipPlot(f"no column {by!r}")
    frame = frame.dropna(subset=[metric])
    panels = _settings(frame) if by == "setting" else sorted(frame[by].dropna().unique(), key=column_order_key)
    colors = method_colors(frame["label"])
    scale = 100.0 if is_percent(metric) else 1.0
    rates = _majority_rates(frame, by, baselines) if metric == "accuracy" else {}
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels):
        sub = frame[frame[by] == panel]
        marker = "o" if sub["round"].nunique() <= MARKER_ROUNDS else None
        for label in _labels(sub):
            mine = sub[sub["label"] == label]
            bands = seed_bands(mine[metric], mine["round"], metric)
            _mean_band(ax, bands.index.to_numpy(dtype=float), bands, label, colors[label], scale, marker)
        if panel in rates:
            ax.axhline(rates[panel] * scale, color="0.45", ls="--", lw=1.0, label="majority class")
        ax.set(title=str(panel), xlabel="round (0: untrained)" if (sub["round"] == 0).any() else "round",
               ylabel=_metric_axis_label(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return _save(fig, out)


def _majority_rates(frame: pd.DataFrame, by: str, baselines: pd.DataFrame | None) -> dict[Any, float]:
    """Mean majority-class rate of each panel's trials (from a baselines frame), where recorded."""
    if baselines is None or not len(baselines) or "majority_rate" not in baselines.columns:
        return {}
    rate = frame["trial_id"].astype(str).map(dict(zip(baselines["trial_id"].astype(str), baselines["majority_rate"])))
    means = rate.groupby(frame[by]).mean().dropna()
    return {k: float(v) for k, v in means.items()}


@_skippable
def plot_noise(results: pd.DataFrame, out: str | Path, kinds: tuple[str, ...] | None = None) -> Path:
    """Initialization and aggregation noise per method over rounds (log y), one column per setting.

    Top row: initialization noise (solid: parameter space, the paper's Eq. 2; dashed: function space);
    bottom row: aggregation noise (solid: Eq. 3 on effective adapters; dotted: Fed-PLoRA's rank-wise form).
    Lines are means over seeds. The y axis is logarithmic (value labels) when a panel spans more than a
    decade. A method whose noise is zero (below ``ZERO_NOISE``: rounding) in every round is not drawn; the
    panel's x label names it as "= 0".
    ``kinds`` restricts the columns drawn.
    """
    kinds = tuple(k for k in (kinds or tuple(NOISE_COLUMNS)) if k in results.columns and results[k].notna().any())
    if not kinds:
        raise SkipPlot(f"no noise columns ({', '.join(NOISE_COLUMNS)})")
    frame = _prepared(results, ["round"])
    settings = _settings(frame)
    colors = method_colors(frame["label"])
    trained = frame.loc[frame[list(kinds)].notna().any(axis=1), "round"].astype(float)
    rounds = (trained.min() - 0.25, trained.max() + 0.25)  # every panel spans the same rounds
    rows = [(title, [k for k in group if k in kinds]) for title, group in _NOISE_ROWS]
    rows = [(title, group) for title, group in rows if group]
    fig = Figure(figsize=(5.0 * len(settings), 3.6 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(rows), len(settings), squeeze=False)
    for r, (title, group) in enumerate(rows):
        for c, setting in enumerate(settings):
            ax = grid[r][c]
            sub = frame[frame["setting"] == setting]
            zero: dict[str, list[str]] = {}
            for kind in group:
                for label in _labels(sub[sub[kind].notna()]):
                    means = sub[sub["label"] == label].groupby("round")[kind].mean().dropna().sort_index()
                    if (means <= ZERO_NOISE).all():
                        zero.setdefault(label, []).append(NOISE_COLUMNS[kind])
                        continue
                    means = means[means > ZERO_NOISE]
                    ax.plot(means.index.to_numpy(dtype=float), means.to_numpy(dtype=float), color=colors[label],
                            ls=_NOISE_STYLES[kind], lw=1.6, marker="." if len(means) <= MARKER_ROUNDS else None,
                            label=label if kind == group[0] else None)
            if len(ax.lines):
                _log_axis(ax, "y")
            else:  # nothing to draw: no value axis to read
                ax.text(0.5, 0.5, "zero in every round", ha="center", va="center", transform=ax.transAxes)
                ax.set_yticks([])
            ax.set_xlim(*rounds)
            note = ("\n" + textwrap.fill("= 0 every round (not drawn): " + "; ".join(
                f"{k} ({', '.join(v)})" for k, v in zero.items()), 60)) if zero else ""
            ax.set(title=str(setting), xlabel="round" + note, ylabel=title)
            ax.xaxis.label.set_size(8 if zero else 10)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="both")
    _legend(fig, list(grid.ravel()))
    return _save(fig, out)


@_skippable
def plot_by_axis(results: pd.DataFrame, out: str | Path, axis: str = "ranks.distribution",
                 metric: str = "accuracy", stat: str = "final") -> Path:
    """``metric`` (final or best per trial) against the values of ``axis`` (ablations: rank distribution...).

    One point series per method with 95% t-interval error bars over seeds (none for one seed), one panel
    per setting.
    """
    frame = _prepared(results, [metric, axis])
    vals = trial_values(frame, metric, stat, by=("label", "setting", axis))
    xs = sorted(vals[axis].dropna().unique(), key=column_order_key)
    settings = _settings(vals)
    labels = _labels(vals)
    colors = method_colors(labels)
    scale = 100.0 if is_percent(metric) else 1.0
    fig, axes = _grid(len(settings), width=max(5.0, 1.1 * len(xs) + 2.5))
    width = 0.8 / max(1, len(labels))
    for ax, setting in zip(axes, settings):
        sub = vals[vals["setting"] == setting]
        for i, label in enumerate(labels):
            mine = sub[sub["label"] == label]
            bands = seed_bands(mine["value"], mine[axis], metric)
            pos = [xs.index(x) + (i - (len(labels) - 1) / 2) * width for x in bands.index]
            if pos:
                mean = bands["mean"].to_numpy(dtype=float)
                err = np.vstack([mean - bands["lo"].to_numpy(dtype=float), bands["hi"].to_numpy(dtype=float) - mean])
                ax.errorbar(pos, mean * scale, yerr=np.nan_to_num(err) * scale, fmt="o", capsize=3,
                            color=colors[label], label=label)
        ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=20 if len(xs) > 3 else 0)
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set(title=str(setting), xlabel=axis, ylabel=f"{stat} {_metric_axis_label(metric)}")
        ax.grid(alpha=0.3, axis="y")
    _legend(fig, axes)
    return _save(fig, out)


def one_trial(frame: pd.DataFrame, trial_id: str | None) -> tuple[pd.DataFrame, str]:
    """The rows of ``trial_id`` (default: the first trial id in sorted order) and that id."""
    trial_id = str(trial_id) if trial_id is not None else str(sorted(frame["trial_id"].astype(str).unique())[0])
    return frame[frame["trial_id"].astype(str) == trial_id], trial_id


@_skippable
def plot_similarity(similarity: pd.DataFrame | None, out: str | Path, trial_id: str | None = None,
                    round: int | str | None = None, module: str | None = None) -> Path:  # noqa: A002
    """Heatmap of the R x R cosine similarity of the rank slots' A across clients (similarity.csv).

    Entry (i, j): mean cosine similarity between rank slot i's A_i of one client and slot j's A_j of another,
    over client pairs; the diagonal compares the same slot across clients (paper Fig. 2). Grey: not measured
    (no two clients trained the pair that round). Defaults: the first trial, the last round (``round="all"``:
    the mean over rounds), the first module.
    """
    if similarity is None or not len(similarity) or "cosine" not in similarity.columns:
        raise SkipPlot("no similarity.csv (the method has no rank slots, or metrics.similarity_module is off)")
    frame = similarity
    if "trial_id" in frame.columns:
        frame, trial_id = one_trial(frame, trial_id)
    if module is not None or ("module" in frame.columns and frame["module"].notna().any()):
        module = module if module is not None else frame["module"].dropna().iloc[0]
        frame = frame[frame["module"] == module]
    if not len(frame):
        raise SkipPlot(f"no similarity rows for trial {trial_id!r}, module {module!r}")
    if round != "all":
        round = int(frame["round"].max()) if round is None else int(round)  # noqa: A001
        frame = frame[frame["round"] == round]
    if not len(frame):
        raise SkipPlot(f"no similarity rows in round {round}")
    slots = range(int(max(frame["slot_i"].max(), frame["slot_j"].max())) + 1)
    grid = (frame.groupby(["slot_i", "slot_j"])["cosine"].mean().unstack("slot_j")
            .reindex(index=slots, columns=slots))  # a pair no two clients trained in this round stays NaN (grey)
    values = grid.to_numpy(dtype=float)
    size = max(3.5, min(10.0, 0.45 * values.shape[0] + 2.5))
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    cmap = colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    if values.shape[0] <= 16:
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 else "black")
    ax.set_xticks(range(values.shape[1]), [str(int(c) + 1) for c in grid.columns])
    ax.set_yticks(range(values.shape[0]), [str(int(c) + 1) for c in grid.index])
    where = (f"trial {trial_id}, " if trial_id is not None else "") + (
        "mean over rounds" if round == "all" else f"round {round}")
    ax.set(xlabel="rank slot j", ylabel="rank slot i",
           title=f"A_j of rank slot j across clients: {module or 'module'}\n{where}")
    ax.title.set_size(9)
    return _save(fig, out)


@_skippable
def plot_communication(results: pd.DataFrame, out: str | Path, metric: str = "accuracy") -> Path:
    """``metric`` against cumulative communication (bytes up + down; log x over wide ranges), per setting.

    One line per method: mean over seeds of both the bytes and the metric at each evaluated round after
    training (round 0 has sent nothing).
    """
    frame = _prepared(results, [metric, "round", "bytes_down", "bytes_up"])
    frame = frame[frame["round"] > 0].sort_values(["trial_id", "round"])
    traffic = frame["bytes_down"].astype(float).fillna(0) + frame["bytes_up"].astype(float).fillna(0)
    frame = frame.assign(cum_mb=traffic.groupby(frame["trial_id"]).cumsum() / 1e6).dropna(subset=[metric])
    settings = _settings(frame)
    colors = method_colors(frame["label"])
    scale = 100.0 if is_percent(metric) else 1.0
    fig, axes = _grid(len(settings))
    for ax, setting in zip(axes, settings):
        sub = frame[frame["setting"] == setting]
        for label in _labels(sub):
            stats = sub[sub["label"] == label].groupby("round")[["cum_mb", metric]].mean().sort_index()
            ax.plot(stats["cum_mb"].to_numpy(dtype=float), stats[metric].to_numpy(dtype=float) * scale,
                    marker=".", label=label, color=colors[label], lw=1.4)
        _log_axis(ax, "x", min_ratio=20.0)
        ax.set(title=str(setting), xlabel="cumulative communication, up + down (MB)",
               ylabel=_metric_axis_label(metric))
        ax.grid(alpha=0.3, which="both")
    _legend(fig, axes)
    return _save(fig, out)


@_skippable
def plot_partition(partition: pd.DataFrame | None, out: str | Path, trial_id: str | None = None) -> Path:
    """Stacked bars of each client's train examples per label (partition.csv).

    Without label columns (causal LM) the bars are each client's train and test counts.
    """
    if partition is None or not len(partition) or "client" not in partition.columns:
        raise SkipPlot("no partition.csv")
    frame = partition
    if "trial_id" in frame.columns:
        frame, trial_id = one_trial(frame, trial_id)
        if not len(frame):
            raise SkipPlot(f"no partition rows for trial {trial_id!r}")
    frame = frame.sort_values("client")
    parts = [c for c in frame.columns if c not in ("client", "n_train", "n_test", "trial_id")
             and pd.api.types.is_numeric_dtype(frame[c])]
    title = "train examples per label"
    if not parts:
        parts = [c for c in ("n_train", "n_test") if c in frame.columns]
        title = "train / test examples"
    if not parts:
        raise SkipPlot("partition.csv has no count columns")
    fig = Figure(figsize=(min(16.0, max(5.0, 0.18 * len(frame) + 2.5)), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(len(frame))
    bottom = np.zeros(len(frame))
    for i, col in enumerate(parts):
        counts = frame[col].fillna(0).to_numpy(dtype=float)
        ax.bar(x, counts, bottom=bottom, label=str(col), color=_COLORS[i % len(_COLORS)], width=0.85)
        bottom += counts
    step = max(1, len(frame) // 25)
    ax.set_xticks(x[::step], [str(c) for c in frame["client"].to_numpy()[::step]])
    where = f" (trial {trial_id})" if trial_id is not None else ""
    ax.set(xlabel="client", ylabel="examples", title=f"{title}{where}")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out)

