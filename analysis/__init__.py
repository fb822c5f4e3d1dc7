"""Analysis of run and sweep folders: typed frames, comparison tables with evidence, figures, a report.

Notebook use::

    from analysis import load_sweep, assess, comparison_table, format_table, plots

    sweep = load_sweep("results/quick")                 # or load_run("runs/fedplora")
    table = comparison_table(sweep, metric="accuracy", stat="final")
    print(format_table(table, fmt="markdown"))          # mean [95% interval]; bold best, † not significantly worse
    ev = assess(sweep, metric="accuracy")               # the same numbers, tidy: ev.cells, ev.tests (Holm-adjusted)
    plots.plot_curves(sweep.results, "curves.png", metric="accuracy", baselines=sweep.baselines)

Modules: :mod:`analysis.load` (folders -> frames, per-example records, baselines), :mod:`analysis.values`
(one value per trial; round 0 is the untrained model), :mod:`analysis.stats` (intervals, paired tests,
Holm, sample sizes), :mod:`analysis.evidence` (what a table may claim), :mod:`analysis.tables`
(rendering), :mod:`analysis.reading` and :mod:`analysis.describe` (the report's narrative and setup),
:mod:`analysis.plots`, :mod:`analysis.report`.

Command line: ``python -m analysis.report DIR [--metric accuracy] [--stat final] [--focus METHOD]`` writes
DIR/report.md.
"""

from analysis import plots, stats
from analysis.evidence import Evidence, assess
from analysis.load import (
    RunResult,
    SweepResult,
    add_labels,
    add_setting,
    baselines_frame,
    load_run,
    load_sweep,
    method_label,
    read_examples,
    setting_label,
    trial_state,
)
from analysis.plots import (
    plot_by_axis,
    plot_communication,
    plot_curves,
    plot_noise,
    plot_partition,
    plot_similarity,
)
from analysis.reading import focus_method
from analysis.tables import (
    column_leaders,
    comparison_table,
    evidence_table,
    format_table,
    table_legend,
    tidy_table,
    write_table,
)
from analysis.values import trial_values, untrained_values


def __getattr__(name: str):
    """``write_report`` on first use (importing analysis.report here would upset ``python -m analysis.report``)."""
    if name == "write_report":
        from analysis.report import write_report

        return write_report
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "Evidence",
    "RunResult",
    "SweepResult",
    "add_labels",
    "add_setting",
    "assess",
    "baselines_frame",
    "column_leaders",
    "comparison_table",
    "evidence_table",
    "focus_method",
    "format_table",
    "load_run",
    "load_sweep",
    "method_label",
    "plot_by_axis",
    "plot_communication",
    "plot_curves",
    "plot_noise",
    "plot_partition",
    "plot_similarity",
    "plots",
    "read_examples",
    "setting_label",
    "stats",
    "table_legend",
    "tidy_table",
    "trial_state",
    "trial_values",
    "untrained_values",
    "write_report",
    "write_table",
]
