"""Sweep throughput: trials per hour of a preset at 1 vs 2 concurrent trials, and Tune's own overhead.

For each concurrency ``c`` the preset runs end to end as ``python -m sweeps.run --preset P --out DIR
--max-concurrent c`` in a fresh process (Ray start and model loads included). From the sweep folder:

- ``process wall``: the whole command (Python start, Ray start, the sweep, the result tables);
- ``sweep wall``: ``Tuner.fit`` to the tables written (``DIR/runs.json``);
- ``trial walls``: each trial's own wall time (its trainable: actor start-up, rounds, adapter export);
- ``ideal = sum(trial walls) / c`` and ``Tune overhead = sweep wall / ideal - 1`` (scheduling, placement
  groups, trainable start-up, result bookkeeping, and any time a slot sits idle at the end of the sweep);
- ``trials per hour = trials / process wall * 3600``.

Run: ``python benchmarks/bench_sweep.py --preset quick --concurrency 1 2`` (about 25 minutes on 2 cores);
``--config SWEEP.yaml`` runs a sweep file instead of a preset; ``--existing 2=/tmp/quick`` analyses a finished
sweep folder instead of running that concurrency again. Prints a Markdown table (paste into
benchmarks/results/sweep.md) and writes ``--json`` if given. ``--quick``: the seconds-long
``configs/sweeps/tiny_smoke.yaml`` (4 tiny-Llama trials) at 2 concurrent trials, everything in a temp folder
(the rows in ``sweep.json`` there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


QUICK_CONFIG = "configs/sweeps/tiny_smoke.yaml"


def run_one(source: list[str], concurrency: int, out: Path, overrides: list[str]) -> float:
    """Run the sweep (``source``: ``--preset P`` or ``--config FILE``) as its own command; its wall time."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "sweeps.run", *source, "--out", str(out), "--max-concurrent",
           str(concurrency), "--summary-every", "600"]
    for o in overrides:
        cmd += ["--set", o]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=False)
    return time.perf_counter() - t0


def analyse(out: Path, concurrency: int, process_wall: float | None) -> dict:
    trials = pd.read_parquet(out / "trials.parquet")
    runs = json.loads((out / "runs.json").read_text())
    sweep_wall = sum(r["sweep_seconds"] for r in runs)
    trial_sum = float(trials["wall_seconds"].sum())
    ideal = trial_sum / concurrency
    wall = process_wall if process_wall is not None else sweep_wall
    completed = int((trials["status"] == "completed").sum())
    return {"concurrency": concurrency, "trials": len(trials), "completed": completed,
            "process_wall_s": process_wall, "sweep_wall_s": sweep_wall, "trial_wall_sum_s": trial_sum,
            "trial_wall_mean_s": float(trials["wall_seconds"].mean()), "ideal_s": ideal,
            "tune_overhead": sweep_wall / ideal - 1.0, "trials_per_hour": len(trials) / wall * 3600.0}


def markdown(rows: list[dict]) -> str:
    head = ("| concurrent trials | trials | process wall (s) | sweep wall (s) | sum of trial walls (s) | "
            "mean trial wall (s) | ideal = sum / c (s) | Tune overhead | trials / hour |\n" + "|---" * 9 + "|")
    lines = [head]
    for r in rows:
        pw = f"{r['process_wall_s']:.0f}" if r["process_wall_s"] is not None else "n/a"
        lines.append(f"| {r['concurrency']} | {r['completed']}/{r['trials']} | {pw} | {r['sweep_wall_s']:.0f} | "
                     f"{r['trial_wall_sum_s']:.0f} | {r['trial_wall_mean_s']:.1f} | {r['ideal_s']:.0f} | "
                     f"{100 * r['tune_overhead']:+.1f}% | {r['trials_per_hour']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--preset", default="quick")
    which.add_argument("--config", help="a sweep YAML file instead of a preset")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--existing", action="append", default=[], metavar="C=DIR",
                        help="use the finished sweep in DIR for concurrency C (its process wall is unknown)")
    parser.add_argument("--work", default=None, help="folder for the sweep outputs (default: a temp folder)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_CONFIG} at 2 concurrent trials, in a temp folder")
    args = parser.parse_args()
    if args.quick:
        args.config, args.concurrency = args.config or QUICK_CONFIG, [2]
    existing = {int(k): Path(v) for k, v in (e.split("=", 1) for e in args.existing)}
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_sweep_quick_" if args.quick else "bench_sweep_"))
    source = ["--config", args.config] if args.config else ["--preset", args.preset]
    name = Path(args.config).stem if args.config else args.preset
    rows = []
    for c in args.concurrency:
        if c in existing:
            rows.append(analyse(existing[c], c, None))
            continue
        out = work / f"{name}_c{c}"
        wall = run_one(source, c, out, args.overrides)
        rows.append(analyse(out, c, wall))
    uptime = os.getloadavg()
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, load average now {uptime[0]:.1f}")
    print(markdown(rows))
    path = args.json or (work / "sweep.json" if args.quick else None)
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))
        print(f"wrote {path}")
    if args.quick and any(r["completed"] != r["trials"] for r in rows):
        raise SystemExit("bench_sweep --quick: not every trial completed")


if __name__ == "__main__":
    main()
