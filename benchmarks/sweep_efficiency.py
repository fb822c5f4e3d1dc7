"""Where a finished sweep's time went: per-trial set-up, rounds, the rest, and the sweep's efficiency.

    python benchmarks/sweep_efficiency.py results/quick [--concurrency 2]

Reads ``DIR/runs.json`` (the sweep's wall time) and every ``DIR/trials/<id>/{trial.json, rounds.csv}``.
Efficiency = sum of the trials' round time (``t_round`` of rounds 1..N) / (concurrent trials x sweep wall);
``busy`` = sum of the trials' own wall time / (concurrent trials x sweep wall), the share of the slots that
ran a trial at all. A trial's ``setup`` is its Experiment's creation: actor start-up and model load when cold
(nothing when it runs on kept actors, ``warm``) plus the round-0 evaluation of the untrained model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def breakdown(out: Path) -> pd.DataFrame:
    """One row per trial: warm, setup, rounds and wall seconds (from its trial.json and rounds.csv)."""
    rows = []
    for folder in sorted((out / "trials").iterdir()):
        state = json.loads((folder / "trial.json").read_text())
        rounds = pd.read_csv(folder / "rounds.csv")
        rows.append({"trial": folder.name, "warm": bool(state.get("warm_start")), "setup_s": state["setup_seconds"],
                     "rounds_s": float(rounds["t_round"].fillna(0).sum()), "wall_s": state["wall_seconds"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--concurrency", type=int, default=2, help="trials that ran at once (default 2)")
    args = parser.parse_args()
    frame = breakdown(args.sweep)
    wall = json.loads((args.sweep / "runs.json").read_text())[-1]["sweep_seconds"]
    capacity = args.concurrency * wall
    print(frame.round(1).to_string(index=False))
    for warm, group in frame.groupby("warm"):
        print(f"{'warm' if warm else 'cold'}: {len(group)} trials, setup {group['setup_s'].mean():.1f} s, rounds "
              f"{group['rounds_s'].mean():.1f} s, wall {group['wall_s'].mean():.1f} s (means)")
    print(f"sweep wall {wall:.1f} s x {args.concurrency}: efficiency {frame['rounds_s'].sum() / capacity:.3f}, "
          f"busy {frame['wall_s'].sum() / capacity:.3f}")


if __name__ == "__main__":
    main()
