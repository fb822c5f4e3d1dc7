"""Analysis of run and sweep folders: typed frames, paper-style comparison tables, figures, a report.

Notebook use::

    from analysis import load_sweep, comparison_table, format_table, plots

    sweep = load_sweep("results/quick")                 # or load_run("runs/fedplora")
    table = comparison_table(sweep.results, metric="accuracy", stat="final")
    print(format_table(table, fmt="markdown"))          # mean ± std over seeds, best per column bold
    plots.plot_curves(sweep.results, "curves.png", metric="accuracy")

Command line: ``python -m analysis.report DIR [--metric accuracy] [--stat final]`` writes DIR/report.md.
"""

from analysis import plots
from analysis.load import (
    RunResult,
    SweepResult,
    add_labels,
    add_setting,
    load_run,
    load_sweep,
    method_label,
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
from analysis.tables import (
    column_leaders,
    comparison_table,
    format_table,
    trial_values,
    write_table,
)


def __getattr__(name: str):
    """``write_report`` on first use (importing analysis.report here would upset ``python -m analysis.report``)."""
    if name == "write_report":
        from analysis.report import write_report

        return write_report
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "RunResult",
    "SweepResult",
    "add_labels",
    "add_setting",
    "column_leaders",
    "comparison_table",
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
    "setting_label",
    "trial_state",
    "trial_values",
    "write_report",
    "write_table",
]
