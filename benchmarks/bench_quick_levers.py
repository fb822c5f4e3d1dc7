"""Cheap in-process runs of the ``quick`` preset's trials, for sizing the main job (no Ray).

    RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 python benchmarks/bench_quick_levers.py \
        --methods Fed-PLoRA FLoRA --settings IID --set model.pooling=mean --set train.lr=0.002 [--round0]

Each selected trial of ``sweeps/presets/quick.yaml`` (with the ``--set`` overrides applied to every trial,
as ``sweeps.run --set`` does) runs in this process on one :class:`workers.actor.ClientWorker` (one torch
thread, like a trial's worker) with exactly the driver's round logic: the same client sampling stream,
``method.client_start`` / ``aggregate`` / ``global_delta``, evaluation every ``eval_every`` rounds and at the
last one, pFedLoRA's personalized evaluation when ``eval_personal``. It skips the noise and similarity
metrics, checkpoints and the adapter export, and Ray start-up (the sweep's fixed cost per trial is measured
by the sweep itself). A worker is built once per distinct (model, data, train, seed) and reused by every
method, since a job restores the pristine weights.

Per trial it prints and appends to ``--json`` (JSON lines): final accuracy, its 95% bootstrap interval over
the test examples (``scipy.stats.bootstrap``, percentile, 2,000 resamples), the one-sided exact binomial
p-value against the test set's majority-class rate, the minority rate, the training and evaluation seconds
(the per-round ``t_train``/``t_eval`` a trial would spend on one core) and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import load_average  # noqa: E402
from core.rng import generator  # noqa: E402
from orchestrator.methods import build_method  # noqa: E402
from orchestrator.ranks import assign_ranks  # noqa: E402
from sweeps.spec import load_preset, parse_overrides  # noqa: E402
from workers.actor import ClientWorker  # noqa: E402
from workers.eval_results import combine  # noqa: E402

try:
    from sweeps.trials import expand
except ImportError:  # before sweeps/trials.py existed
    from sweeps.spec import expand  # type: ignore[attr-defined,no-redef]


def interval(correct: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of 0/1 ``correct`` over test examples."""
    from scipy.stats import bootstrap

    res = bootstrap((correct.astype(float),), np.mean, confidence_level=0.95, n_resamples=2000,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def evaluate_global(worker: ClientWorker, method, state, personal: bool) -> tuple[dict, np.ndarray, float]:
    """Driver.evaluate in one shard: global metrics, per-example correctness, seconds."""
    t0 = time.perf_counter()
    part = worker.evaluate_shard(method.global_delta(state), state.head())
    out = combine([part])
    if personal:
        values = []
        for c in range(worker.data.num_clients):
            delta = method.personal_delta(state, c)
            if delta is not None:
                values.append(worker.evaluate(delta, state.head(), c)["accuracy"])
        if values:
            out["personal_accuracy"] = sum(values) / len(values)
    correct = np.asarray(part.preds) == np.asarray(part.labels)
    return out, correct, time.perf_counter() - t0


def run_trial(trial, worker: ClientWorker, round0: bool) -> dict:
    """The driver's round loop on an in-process worker (see the module docstring)."""
    cfg = trial.config
    specs = worker.module_specs()
    ranks = assign_ranks(cfg.ranks, cfg.data.num_clients, cfg.seed)
    method = build_method(cfg.method, specs, ranks, cfg.ranks.max_rank, cfg.seed)
    # the worker's seeded initial head (worker.initial_head() reads the model's current head, which the
    # previous trial's last job left trained when a worker is reused)
    head = {k: v.clone() for k, v in worker.trainer.head0.items()} or None
    state = method.init_global(head if cfg.method.train_head or head else None)
    t_train = t_eval = 0.0
    curve = []
    if round0:
        ev, _, dt = evaluate_global(worker, method, state, False)
        t_eval += dt
        curve.append((0, round(ev["accuracy"], 4)))
    last = correct = None
    for t in range(cfg.rounds):
        perm = torch.randperm(cfg.data.num_clients, generator=generator(cfg.seed, "sample", t))
        clients = sorted(perm[: cfg.clients_per_round].tolist())
        starts = [method.client_start(state, c, t) for c in clients]
        t0 = time.perf_counter()
        updates = [worker.train(s) for s in starts]
        t_train += time.perf_counter() - t0
        state = method.aggregate(state, starts, updates).state
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.rounds:
            last, correct, dt = evaluate_global(worker, method, state, cfg.eval_personal)
            t_eval += dt
            curve.append((t + 1, round(last["accuracy"], 4)))
    labels = np.asarray([ex.label for ex in worker.data.global_test])
    majority = float(np.bincount(labels).max() / len(labels))
    from scipy.stats import binomtest

    n, k = len(correct), int(correct.sum())
    lo, hi = interval(correct)
    return {"label": trial.label, "setting": trial.setting, "seed": cfg.seed, "accuracy": k / n, "ci_low": lo,
            "ci_high": hi, "half_width": (hi - lo) / 2, "n_test": n, "majority": majority,
            "minority": float(np.bincount(labels).min() / len(labels)),
            "p_above_majority": float(binomtest(k, n, majority, alternative="greater").pvalue),
            "personal_accuracy": last.get("personal_accuracy"), "curve": curve,
            "t_train": t_train, "t_eval": t_eval, "loadavg": load_average()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--methods", nargs="*", help="variant labels (default: all)")
    parser.add_argument("--settings", nargs="*", help="setting labels, e.g. IID (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, help="run these seeds instead of the preset's")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--round0", action="store_true", help="also evaluate the untrained model (round 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="a name for this configuration in the JSON lines")
    parser.add_argument("--json", help="append one JSON line per trial to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.overrides)
    spec = load_preset(args.preset)
    if args.seeds:
        spec = dataclasses.replace(spec, seeds=tuple(args.seeds))
    trials = [t for t in expand(spec, overrides)
              if (not args.methods or t.label in args.methods) and (not args.settings or t.setting in args.settings)]
    workers: dict[tuple, ClientWorker] = {}
    for trial in trials:
        cfg = trial.config
        key = (cfg.model, cfg.data, cfg.train, cfg.seed)
        t0 = time.perf_counter()
        if key not in workers:
            workers.clear()
            workers[key] = ClientWorker(cfg.model, cfg.data, cfg.train, cfg.seed, num_threads=args.threads)
        t_load = time.perf_counter() - t0
        row = run_trial(trial, workers[key], args.round0)
        row.update(tag=args.tag, overrides=args.overrides, t_load=t_load)
        print(f"{args.tag or '-'} | {row['label']:<12} {row['setting']:<18} s{row['seed']} acc {row['accuracy']:.3f} "
              f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] maj {row['majority']:.3f} p {row['p_above_majority']:.2g} "
              f"pers {row['personal_accuracy'] if row['personal_accuracy'] is None else round(row['personal_accuracy'], 3)} "
              f"| train {row['t_train']:.1f}s eval {row['t_eval']:.1f}s | load {row['loadavg']} | {row['curve']}",
              flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
