"""Bytes serialised per round, with and without broadcasting shared tensors, for every method at LLM shapes.

For each method and scale: the server state after one warm round (``bench_server.prepared_round``: 10
clients, ranks from the (1, 4, 16) groups, FedIT at 16), then one round's jobs as the driver submits them:
10 training jobs (one ClientStart each) and 4 evaluation shards (the global deltas and head, the same
objects in every shard). ``orchestrator.broadcast.share_tensors`` (the pool's own step, with its default
64 KiB threshold) counts the tensor bytes each batch of jobs would serialise job by job (``per_job``, the
behaviour before broadcasting) and with each shared tensor put once (``serialized``).

The byte counts are exact and linear in the number of layers (every layer has the same shapes), so they are
measured on ``--layers`` layers (default 1) and scaled to the model's real layer count. With ``--ray`` (the
default for a full run) the driver-side cost is also timed for the training jobs of FLoRA, whose shared fold
is the largest: ``ray.put`` of every job's arguments (before) against one ``ray.put`` of the shared tensors
plus the per-job puts of the rest (after), median of ``--repeats``, in one run.

Run: ``python benchmarks/bench_broadcast.py`` (writes benchmarks/results/broadcast.{json,md});
``python benchmarks/bench_broadcast.py --quick`` (tiny shapes, every shared tensor counted whatever its size, no
Ray, a temp folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_server import QUICK_SCALES, SCALES, prepared_round, scale_modules  # noqa: E402
from machine import load_average, machine_info  # noqa: E402
from page import page  # noqa: E402
from result_files import result_path, write_result  # noqa: E402

from orchestrator.broadcast import DEFAULT_MIN_BYTES, share_tensors  # noqa: E402
from orchestrator.methods import available_methods  # noqa: E402

EVAL_SHARDS = 4


def round_jobs(name: str, scale: dict, layers: int):
    """The training and evaluation jobs' arguments of round 1 of ``name`` on ``layers`` layers of ``scale``."""
    method, state, _ = prepared_round(name, scale_modules(scale, layers))
    clients = range(len(method.client_ranks))
    train = [(method.client_start(state, c, 1),) for c in clients]
    deltas, head = method.global_delta(state), state.head()
    shards = [(deltas, head, None, i, i + 1) for i in range(EVAL_SHARDS)]
    return train, shards


def byte_counts(jobs, min_bytes: int) -> dict:
    stats = share_tensors(jobs, put=lambda t: None, min_bytes=min_bytes)[1]
    return {"per_job": stats.per_job, "serialized": stats.serialized, "objects": stats.objects}


def timed_puts(jobs, repeats: int) -> dict:
    """Median seconds of ``ray.put`` of every job's arguments, job by job, against broadcasting shared ones."""
    import ray

    def before():
        refs = [ray.put(args) for args in jobs]
        del refs

    def after():
        shared, _ = share_tensors(jobs, ray.put, DEFAULT_MIN_BYTES)
        refs = [ray.put(args) for args in shared]
        del refs, shared

    out = {}
    for label, fn in (("before", before), ("after", after)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, no Ray, results to a temp folder")
    ap.add_argument("--layers", type=int, default=1, help="layers measured (bytes are scaled to the real count)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    scales = QUICK_SCALES if args.quick else {k: SCALES[k] for k in ("llama1b", "llama8b")}
    t_start = time.perf_counter()
    rows, timings = [], {}
    use_ray = not args.quick
    if use_ray:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    for scale_name, scale in scales.items():
        layers = min(args.layers, scale["layers"])
        factor = scale["layers"] / layers
        for name in available_methods():
            train, shards = round_jobs(name, scale, layers)
            for kind, jobs in (("train", train), ("eval", shards)):
                counts = byte_counts(jobs, 0 if args.quick else DEFAULT_MIN_BYTES)
                rows.append({"scale": scale_name, "method": name, "jobs": kind,
                             **{k: int(v * factor) if k != "objects" else v for k, v in counts.items()}})
            if use_ray and name == "flora":
                timings[scale_name] = {**timed_puts(train, args.repeats), "layers": layers}
            print(f"{scale_name} {name}: done", flush=True)
    if use_ray:
        ray.shutdown()
    result = {"command": "python benchmarks/bench_broadcast.py" + (" --quick" if args.quick else ""),
              "wall_s": time.perf_counter() - t_start, "rows": rows, "flora_put_seconds": timings,
              "machine": machine_info(loadavg_end=load_average(), versions={
                  "python": platform.python_version(), "torch": torch.__version__})}
    path = result_path(args.out, "broadcast", args.quick)
    write_result(path, result, render(result))


def _gb(n: int) -> str:
    return f"{n / 1e9:.3f} GB" if n >= 1e7 else f"{n / 1e6:.3f} MB"


def render(result: dict) -> str:
    body = ["## Tensor bytes serialised per round", "",
            "Per round: 10 training jobs and 4 evaluation shards, scaled to the model's real layer count. "
            "`before`: every job's arguments serialised on their own; `after`: tensors shared by several jobs "
            "put in the object store once.", "",
            "| scale | method | jobs | before | after | ratio | objects put once |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ratio = r["per_job"] / r["serialized"] if r["serialized"] else float("nan")
        body.append(f"| {r['scale']} | {r['method']} | {r['jobs']} | {_gb(r['per_job'])} | {_gb(r['serialized'])} "
                    f"| {ratio:.1f}x | {r['objects']} |")
    body.append("")
    if result["flora_put_seconds"]:
        body += ["## FLoRA: driver time to put one round's training jobs (`ray.put`, one layer)", "",
                 "| scale | before (s) | after (s) | ratio |", "|---|---|---|---|"]
        for scale, t in result["flora_put_seconds"].items():
            body.append(f"| {scale} | {t['before']:.3f} | {t['after']:.3f} | {t['before'] / t['after']:.1f}x |")
        body.append("")
    train = [r for r in result["rows"] if r["jobs"] == "train"]
    worst = max(train, key=lambda r: r["per_job"])
    gains = sorted({r["method"] for r in train if r["per_job"] >= 2 * r["serialized"]})
    same = sorted({r["method"] for r in train if r["per_job"] < 1.1 * r["serialized"]})
    evals = [r["per_job"] / r["serialized"] for r in result["rows"] if r["jobs"] == "eval" and r["serialized"]]
    findings = [f"Largest round before broadcasting: {worst['method']} at {worst['scale']}, "
                f"{_gb(worst['per_job'])} of training-job arguments; after: {_gb(worst['serialized'])}.",
                f"Training jobs serialise at least 2x less for: {', '.join(gains) or 'none'}; within 10% of before "
                f"(their starts are per client): {', '.join(same) or 'none'}.",
                f"Evaluation shards: {min(evals):.1f}x to {max(evals):.1f}x fewer bytes (the global deltas and head "
                f"cross once, not once per shard)."]
    return page("Broadcast once: bytes per round", "bench_broadcast.py", "byte counts are exact", result,
                ("python", "torch"), body, findings)


if __name__ == "__main__":
    main()
