"""Read a sweep into pandas and draw a figure of your own: what training added to the untrained model.

    python -m examples.custom_figure.gain_figure results/quick --out gain.png [--metric accuracy]

``load_sweep`` gives ``sweep.results``, one row per trial and round (``rounds.csv`` of every trial plus the
trial's ``label``, ``setting``, ``seed`` and ``status``); round 0 is the untrained model's evaluation. The
gain of a trial is its metric at its last evaluated round minus its metric at round 0; the figure shows,
per data setting, one bar per method: the mean gain over seeds, with every seed's gain as a dot. Failed
and unfinished trials are left out (``analysis.load.usable``), as in every built-in table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import load_sweep  # noqa: E402
from analysis.load import usable  # noqa: E402


def gain_per_trial(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per finished trial: ``label``, ``setting``, ``seed``, ``untrained``, ``final``, ``gain``."""
    if metric not in results.columns:
        raise ValueError(f"--metric {metric!r} is not a column of the sweep's results; columns: "
                         f"{sorted(c for c in results.columns if results[c].dtype.kind == 'f')}")
    finished, _ = usable(results)
    evaluated = finished.dropna(subset=[metric]).sort_values(["trial_id", "round"])
    first = evaluated.groupby("trial_id").first()  # round 0: the untrained model
    last = evaluated.groupby("trial_id").last()    # the last evaluated round
    table = first[["label", "setting", "seed"]].assign(untrained=first[metric], final=last[metric],
                                                       first_round=first["round"], last_round=last["round"])
    table = table[(table["first_round"] == 0) & (table["last_round"] > 0)]  # needs both ends
    return table.assign(gain=table["final"] - table["untrained"]).drop(columns=["first_round", "last_round"])


def draw(gains: pd.DataFrame, out: Path, metric: str) -> Path:
    """Grouped bars (mean gain over seeds) per setting, one colour per method, seeds as dots."""
    means = gains.pivot_table(index="setting", columns="label", values="gain", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(means.index) * max(1, len(means.columns)) / 2, 3.6))
    width = 0.8 / max(1, len(means.columns))
    for j, label in enumerate(means.columns):
        xs = [i + (j - (len(means.columns) - 1) / 2) * width for i in range(len(means.index))]
        ax.bar(xs, means[label], width=width, label=label)
        for x, setting in zip(xs, means.index):
            seeds = gains[(gains["label"] == label) & (gains["setting"] == setting)]["gain"]
            ax.plot([x] * len(seeds), seeds, "k.", ms=4)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(means.index)), [str(s) for s in means.index])
    ax.set_ylabel(f"{metric}: last round - round 0")
    ax.set_title("What training added to the untrained model")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the per-trial gains, write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="a sweeps.run results folder")
    parser.add_argument("--out", default=None, help="figure file (default: SWEEP/figures/gain.png)")
    parser.add_argument("--metric", default=None, help="a metric column (default: accuracy, else rouge_l)")
    args = parser.parse_args(argv)
    sweep = load_sweep(args.sweep)
    metric = args.metric or ("accuracy" if "accuracy" in sweep.results.columns else "rouge_l")
    gains = gain_per_trial(sweep.results, metric)
    print(gains.to_string())
    out = draw(gains, Path(args.out) if args.out else Path(args.sweep) / "figures" / "gain.png", metric)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
