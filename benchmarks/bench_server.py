"""Server-side cost per federated round of every registered method, on synthetic tensors.

What one "round" costs the driver: ``client_start`` for every participating client, ``aggregate`` of their
(synthetic, precomputed) trained updates, and ``global_delta`` of the new state. The optional per-round noise
metrics (function- and parameter-space initialization noise of every client, aggregation noise) are timed
separately. Also checks FlexLoRA's factored SVD against a dense ``torch.linalg.svd`` of the ``d x k`` aggregate
(the official code's route) and Fed-PLoRA's aggregation cost against FedIT's.

Setup (Fed-PLoRA paper, App. C.2): 10 participating clients with ranks from the (1, r_m, R) groups, r_m = 4,
R = 16 -> ranks [1, 1, 1, 4, 4, 4, 16, 16, 16, 16]; FedIT runs homogeneous rank R = 16 (it requires it). Each
method's server state is first advanced by one untimed warm round (so FlexLoRA holds its rank-sum(r_i) SVD
factors, FLoRA a non-zero dense dW, pFedLoRA the clients' private adapters); the timed round is round 1
from that fixed state, repeated (state is never mutated by a method, so every repeat does identical work).
Synthetic "trained" updates (start factors + 0.01 * N(0, 1), seeded per client) are precomputed outside the
timers. Times: ``time.perf_counter``, 1 warmup, median of ``--repeats`` (default per scale: minilm 7, llama1b 5,
llama8b 3); methods interleaved round-robin; garbage collection off while timing; 1 torch thread by default.

Module shapes (``W0: d_out x k_in``, PEFT's default targets, real layer counts):

- ``minilm``: all-MiniLM-L6-v2 (6 layers, hidden 384), query + value: 12 modules of 384 x 384;
- ``llama1b``: Llama-3.2-1B (16 layers, hidden 2048, 32 heads, 8 KV heads, head dim 64), q_proj 2048 x 2048,
  v_proj 512 x 2048: 32 modules;
- ``llama8b``: Llama-3.1-8B (32 layers, hidden 4096, 32 heads, 8 KV heads, head dim 128), q_proj 4096 x 4096,
  v_proj 1024 x 4096: 64 modules.

At the Llama scales the noise metrics are timed on the first ``--metrics-layers`` layers (q and v) and scaled
by ``layers / metrics_layers`` (every layer has the same shapes, so the per-layer cost is the same);
``bench_scale.py`` compares them with the previous implementation.

Run: ``python benchmarks/bench_server.py`` (all scales, writes benchmarks/results/server.{json,md});
``python benchmarks/bench_server.py --quick`` (seconds; writes to a temp folder); ``--render
benchmarks/results/server.json`` rewrites the Markdown only (``render_server.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from machine import load_average  # noqa: E402
from machine import machine_info as _machine_info  # noqa: E402
from render_server import markdown, render, render_profiles  # noqa: E402
from result_files import rerender, result_path, write_result  # noqa: E402

from core.synthetic import synthetic_update  # noqa: E402
from core.wire import ClientStart, ClientUpdate, ModuleSpec  # noqa: E402
from orchestrator.linalg import factored_svd  # noqa: E402
from orchestrator.method_config import MethodConfig  # noqa: E402
from orchestrator.methods import available_methods, build_method, method_class  # noqa: E402
from orchestrator.metrics import aggregation_noise, init_noise_functions, init_noise_params  # noqa: E402
from orchestrator.ranks import RankConfig, assign_ranks  # noqa: E402

R = 16  # global rank
R_MID = 4
N_CLIENTS = 10
SEED = 0
STEP = 0.01  # size of the synthetic "training" perturbation
# methods that need every client at the same rank (run at rank R)
HOMOGENEOUS = tuple(n for n in available_methods() if method_class(n).requires_homogeneous)

SCALES = {
    "minilm": dict(label="MiniLM-L6 (all-MiniLM-L6-v2) query+value", layers=6,
                   shapes=(("query", 384, 384), ("value", 384, 384)), metrics_layers=6, metrics_repeats=None,
                   repeats=7),
    "llama1b": dict(label="Llama-3.2-1B q_proj+v_proj", layers=16,
                    shapes=(("q_proj", 2048, 2048), ("v_proj", 512, 2048)), metrics_layers=1, metrics_repeats=1,
                    repeats=5),
    "llama8b": dict(label="Llama-3.1-8B q_proj+v_proj", layers=32,
                    shapes=(("q_proj", 4096, 4096), ("v_proj", 1024, 4096)), metrics_layers=1, metrics_repeats=1,
                    repeats=3),
}
QUICK_SCALES = {
    "tiny": dict(label="tiny smoke shapes", layers=2, shapes=(("q", 64, 48), ("v", 32, 48)), metrics_layers=2,
                 metrics_repeats=None, repeats=2),
}


# ---- setup -------------------------------------------------------------------------------------------------
def scale_modules(scale: dict, layers: int | None = None) -> list[ModuleSpec]:
    n = scale["layers"] if layers is None else layers
    return [ModuleSpec(f"layers.{i}.{name}", d, k) for i in range(n) for name, d, k in scale["shapes"]]


def client_ranks(method: str) -> list[int]:
    if method in HOMOGENEOUS:
        return assign_ranks(RankConfig(distribution="homogeneous", max_rank=R), N_CLIENTS, SEED)
    return assign_ranks(RankConfig(distribution="groups", max_rank=R, mid_rank=R_MID), N_CLIENTS, SEED)


def trained(start: ClientStart) -> ClientUpdate:
    """Synthetic local training (``core.synthetic``): steps of ``STEP``, ``100 + 10 * client_id`` examples."""
    return synthetic_update(start, STEP, 100 + 10 * start.client_id)


def prepared_round(name: str, modules: list[ModuleSpec]):
    """(method, state at the start of round 1, round-1 updates) after one untimed warm round."""
    method = build_method(MethodConfig(name=name), modules, client_ranks(name), R, SEED)
    clients = list(range(N_CLIENTS))
    state0 = method.init_global()
    starts0 = [method.client_start(state0, c, 0) for c in clients]
    updates0 = [trained(s) for s in starts0]
    state1 = method.aggregate(state0, starts0, updates0).state
    del state0, starts0, updates0
    starts1 = [method.client_start(state1, c, 1) for c in clients]
    updates1 = [trained(s) for s in starts1]
    del starts1
    return method, state1, updates1


# ---- timing ------------------------------------------------------------------------------------------------
def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


METRIC_KEYS = ("init_noise_function", "init_noise_param", "aggregation_noise")
SERVER_KEYS = ("client_start", "aggregate", "global_delta", "total")


def time_scale(scale_name: str, scale: dict, methods: list[str], repeats: int, warmup: int, metrics_layers: int,
               metrics_repeats: int, metrics_warmup: int, profile: bool) -> tuple[list[dict], dict]:
    """Time one server round of every method at one scale, round-robin (the order rotates every iteration).

    Round-robin keeps a load change on the shared machine from landing on one method only. Iteration ``it``
    times ``client_start`` x 10 + ``aggregate`` + ``global_delta`` of every method; the first ``warmup``
    iterations are discarded (the first one is profiled when ``profile``). The noise metrics are timed right
    after a method's round in iterations ``[0, metrics_warmup + metrics_repeats)``, on the first
    ``metrics_layers`` layers, and scaled to all layers. Returns the runs and the prepared states.
    """
    modules = scale_modules(scale)
    prepared, setup_s = {}, {}
    for name in methods:
        t0 = time.perf_counter()
        prepared[name] = prepared_round(name, modules)
        setup_s[name] = time.perf_counter() - t0
    clients = list(range(N_CLIENTS))
    metric_modules = [m.name for m in scale_modules(scale, metrics_layers)] if metrics_layers else []
    metric_factor = scale["layers"] / metrics_layers if metrics_layers else 0.0
    n_metric_its = min(metrics_warmup + metrics_repeats, warmup + repeats) if metric_modules else 0

    samples = {n: {k: [] for k in SERVER_KEYS + METRIC_KEYS} for n in methods}
    values: dict[str, dict] = {}
    profiles: dict[str, list[dict]] = {}
    for it in range(warmup + repeats):
        order = methods[it % len(methods):] + methods[:it % len(methods)]
        for name in order:
            method, state, updates = prepared[name]
            prof = cProfile.Profile() if profile and warmup > 0 and it == 0 else None
            gc.collect()
            gc.disable()
            try:
                if prof:
                    prof.enable()
                t0 = time.perf_counter()
                starts = [method.client_start(state, c, 1) for c in clients]
                t1 = time.perf_counter()
                agg = method.aggregate(state, starts, updates)
                t2 = time.perf_counter()
                new_delta = method.global_delta(agg.state)
                t3 = time.perf_counter()
                if prof:
                    prof.disable()
            finally:
                gc.enable()
            if prof:
                profiles[name] = profile_rows(prof)
            if it >= warmup:
                for key, dt in zip(SERVER_KEYS, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    samples[name][key].append(dt)
            if it < n_metric_its:
                dts, values[name] = time_metrics(method, state, starts, updates, agg, new_delta, metric_modules)
                if it >= metrics_warmup:
                    for key in METRIC_KEYS:
                        samples[name][key].append(dts[key] * metric_factor)
            del agg, new_delta, starts
        print(f"  [{scale_name}] iteration {it + 1}/{warmup + repeats} done", flush=True)

    runs = []
    for name in methods:
        ms = {k: median_ms(v) for k, v in samples[name].items() if v}
        if all(k in ms for k in METRIC_KEYS):
            ms["metrics"] = sum(ms[k] for k in METRIC_KEYS)
        runs.append({
            "method": name, "scale": scale_name, "ranks": client_ranks(name), "setup_s": setup_s[name],
            "ms": ms, "samples_ms": {k: [1e3 * x for x in v] for k, v in samples[name].items() if v},
            "metrics_layers": metrics_layers, "metrics_scale_factor": metric_factor,
            "metric_values_on_timed_modules": values.get(name, {}),
            "profile_top": profiles.get(name),
        })
    return runs, prepared


def time_metrics(method, state, starts, updates, agg, new_delta, metric_modules) -> tuple[dict, dict]:
    """Per-round noise metrics on ``metric_modules``: init noise of every client, then aggregation noise."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        prev_delta = method.global_delta(state)
        prev_delta = {m: prev_delta[m] for m in metric_modules}
        fn = sum(init_noise_functions(prev_delta, starts))
        t1 = time.perf_counter()
        factors = method.global_factors(state)
        factors = None if factors is None else {m: factors[m] for m in metric_modules}
        pn = init_noise_params(factors, starts) or [None]
        t2 = time.perf_counter()
        an = aggregation_noise({m: new_delta[m] for m in metric_modules}, starts, updates, agg.weights)
        t3 = time.perf_counter()
    finally:
        gc.enable()
    dts = dict(zip(METRIC_KEYS, (t1 - t0, t2 - t1, t3 - t2)))
    vals = {"init_noise_function": fn, "init_noise_param": None if pn[0] is None else sum(pn),
            "aggregation_noise": an}
    return dts, vals


def profile_rows(prof: cProfile.Profile, top: int = 8) -> list[dict]:
    """Where one server round's time goes, by own time (profiler overhead inflates many small Python calls)."""
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if file == "~":
            where = func
        else:
            path = os.path.relpath(file, ROOT) if file.startswith(str(ROOT) + "/orchestrator") else Path(file).name
            where = f"{path}:{line}({func})"
        rows.append({"function": where, "ncalls": ncalls, "tottime_ms": 1e3 * tottime, "cumtime_ms": 1e3 * cumtime})
    rows.sort(key=lambda r: -r["tottime_ms"])
    total = sum(r["tottime_ms"] for r in rows)
    for r in rows:
        r["share"] = r["tottime_ms"] / total if total else 0.0
    return rows[:top]


# ---- target 1: FlexLoRA factored SVD vs dense SVD -----------------------------------------------------------
def flexlora_svd_check(scale_name: str, scale: dict, n_modules: int, repeats: int, dense_dtype: torch.dtype,
                       warmup: int, prepared=None) -> dict:
    """Per module: stacked factors + factored_svd (what FlexLoRA.aggregate does) vs dense aggregate + SVD.

    Both sides start from the same round-1 client updates of the benchmark's FlexLoRA run; the dense side forms
    ``sum_i p_i s B_i A_i`` as a ``d x k`` matrix in ``dense_dtype`` and runs ``torch.linalg.svd`` (one run per
    module: seconds to tens of seconds at 8B shapes), the factored side is timed as warmup + median of repeats.
    """
    modules = scale_modules(scale)
    method, state, updates = prepared or prepared_round("flexlora", modules)
    starts = [method.client_start(state, u.client_id, 1) for u in updates]
    pairs = sorted(zip(starts, updates), key=lambda p: p[0].client_id)
    weights = method.client_weights(pairs)
    s = method.scale
    torch.linalg.svd(torch.randn(64, 48, dtype=dense_dtype), full_matrices=False)  # load LAPACK paths once

    def stacked(m):  # exactly FlexLoRA.aggregate_adapters' stacking
        Bs = torch.cat([u.adapters["main"][m][0].double() * weights[st.client_id] for st, u in pairs], 1)
        As = torch.cat([u.adapters["main"][m][1].double() for _, u in pairs], 0)
        return Bs, As

    def dense_aggregate(m):  # sum_i p_i s B_i A_i as a d x k matrix in the model dtype (the official route)
        W = None
        for st, u in pairs:
            B, A = u.adapters["main"][m]
            term = (B.to(dense_dtype) @ A.to(dense_dtype)) * (s * weights[st.client_id])
            W = term if W is None else W.add_(term)
        return W

    rows = []
    for spec in modules[:n_modules]:
        m = spec.name
        fac_total, fac_svd = [], []
        for it in range(warmup + repeats):
            gc.collect()
            t0 = time.perf_counter()
            Bs, As = stacked(m)
            t1 = time.perf_counter()
            U, S, Vh = factored_svd(Bs, As)
            t2 = time.perf_counter()
            if it >= warmup:
                fac_total.append(t2 - t0)
                fac_svd.append(t2 - t1)
        gc.collect()
        t0 = time.perf_counter()
        W = dense_aggregate(m)
        t1 = time.perf_counter()
        Ud, Sd, Vhd = torch.linalg.svd(W, full_matrices=False)
        t2 = time.perf_counter()
        dense_form, dense_svd = t1 - t0, t2 - t1

        # accuracy (untimed, float64): exact aggregate, full reconstructions, top singular values, rank-R part
        exact = (Bs @ As) * s
        nexact = exact.norm()
        U64, S64, Vh64 = U, S * s, Vh  # s * Bs As = U (s S) Vh
        rec_f = (U64 * S64) @ Vh64
        q = S64.shape[0]
        Ud64, Sd64, Vhd64 = Ud.double(), Sd.double(), Vhd.double()
        rec_d = (Ud64[:, :q] * Sd64[:q]) @ Vhd64[:q]
        top = min(R, q)
        trunc_f = (U64[:, :top] * S64[:top]) @ Vh64[:top]
        trunc_d = (Ud64[:, :top] * Sd64[:top]) @ Vhd64[:top]
        row = {
            "module": m, "shape": [spec.d_out, spec.k_in], "stacked_rank": int(As.shape[0]), "svd_rank": q,
            "factored_ms": median_ms(fac_total), "factored_svd_only_ms": median_ms(fac_svd),
            "dense_aggregate_ms": 1e3 * dense_form, "dense_svd_ms": 1e3 * dense_svd,
            "dense_total_ms": 1e3 * (dense_form + dense_svd),
            "speedup_total": (dense_form + dense_svd) / statistics.median(fac_total),
            "speedup_svd_only": dense_svd / statistics.median(fac_svd),
            "rel_err_factored_vs_exact_aggregate": float((rec_f - exact).norm() / nexact),
            "rel_err_dense_svd_vs_exact_aggregate": float(((Ud64 * Sd64) @ Vhd64 - exact).norm() / nexact),
            "rel_err_factored_vs_dense_reconstruction": float((rec_f - rec_d).norm() / rec_d.norm()),
            "rel_err_top_singular_values": float(((S64[:top] - Sd64[:top]).abs() / Sd64[:top]).max()),
            "dense_tail_singular_value_rel": float(Sd64[q:].max() / Sd64[0]) if Sd64.shape[0] > q else 0.0,
            "rel_err_rank_R_truncation": float((trunc_f - trunc_d).norm() / trunc_d.norm()),
            "gap_sigma_R_over_sigma_R+1": float(S64[top - 1] / S64[top]) if q > top else None,
        }
        rows.append(row)
        print(f"  [svd] {m} {spec.d_out}x{spec.k_in}: factored {row['factored_ms']:.1f} ms, dense "
              f"{row['dense_total_ms']:.0f} ms ({row['speedup_total']:.0f}x), rec err "
              f"{row['rel_err_factored_vs_dense_reconstruction']:.1e}, sv err {row['rel_err_top_singular_values']:.1e}",
              flush=True)
        del W, Ud, Sd, Vhd, exact, rec_f, rec_d, trunc_f, trunc_d, Ud64, Vhd64
        gc.collect()
    err_keys = ("rel_err_factored_vs_exact_aggregate", "rel_err_factored_vs_dense_reconstruction",
                "rel_err_top_singular_values")
    min_speedup = min(min(r["speedup_total"], r["speedup_svd_only"]) for r in rows)
    max_err = max(r[k] for r in rows for k in err_keys)
    return {
        "scale": scale_name, "modules": rows, "dense_dtype": str(dense_dtype).replace("torch.", ""),
        "min_speedup": min_speedup, "max_rel_err": max_err, "error_criteria": list(err_keys),
        "pass": bool(min_speedup >= 20 and max_err < 1e-4),
        "full_model_estimate_s": {  # per round, all modules of the scale, from the per-shape medians
            "dense": _extrapolate(rows, scale, "dense_total_ms"),
            "factored": _extrapolate(rows, scale, "factored_ms"),
        },
    }


def _extrapolate(rows: list[dict], scale: dict, key: str) -> float | None:
    """Sum over every module of the scale using the mean time of the measured modules of each shape."""
    total = 0.0
    for name, d, k in scale["shapes"]:
        got = [r[key] for r in rows if r["shape"] == [d, k] and r["module"].endswith("." + name)]
        if not got:
            return None
        total += scale["layers"] * statistics.mean(got) / 1e3
    return total


# ---- reporting ---------------------------------------------------------------------------------------------
def machine_info() -> dict:
    return _machine_info(python=platform.python_version(), torch=torch.__version__,
                         torch_threads=torch.get_num_threads(), torch_interop_threads=torch.get_num_interop_threads())


def fedplora_vs_fedit(runs: list[dict], scale_names: list[str]) -> dict | None:
    """Fed-PLoRA / FedIT aggregate time per scale: ratio of medians and median of same-iteration ratios."""
    per_scale = {}
    for scale in scale_names:
        by = {r["method"]: r for r in runs if r["scale"] == scale}
        if "fedit" not in by or "fedplora" not in by:
            continue
        f, pl = by["fedit"], by["fedplora"]
        pairs = [b / a for a, b in zip(f["samples_ms"]["aggregate"], pl["samples_ms"]["aggregate"])]
        per_scale[scale] = {"fedit_ms": f["ms"]["aggregate"], "fedplora_ms": pl["ms"]["aggregate"],
                            "ratio": pl["ms"]["aggregate"] / f["ms"]["aggregate"],
                            "ratio_median_same_iteration": statistics.median(pairs),
                            "fedit_total_ms": f["ms"]["total"], "fedplora_total_ms": pl["ms"]["total"]}
    if not per_scale:
        return None
    worst = max(max(r["ratio"], r["ratio_median_same_iteration"]) for r in per_scale.values())
    return {"per_scale": per_scale, "max_ratio": worst, "pass": worst <= 2.0}


# ---- main --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="minilm,llama1b,llama8b", help=f"comma-separated, from {list(SCALES)}")
    p.add_argument("--methods", default=None, help="comma-separated subset (default: every registered method)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per method and scale, median reported (default per scale: minilm 7, llama1b 5, "
                        "llama8b 3, where one FLoRA round takes tens of seconds)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: stable timings on a shared machine; 0 = torch default)")
    p.add_argument("--metrics-layers", type=int, default=None,
                   help="layers on which the noise metrics are timed, then scaled to all layers (default: minilm all, "
                        "llama1b 1, llama8b 1); 0 disables the metrics")
    p.add_argument("--metrics-repeats", type=int, default=None,
                   help="repeats of the metrics (default: --repeats after a warmup at minilm; 1 without warmup at the "
                        "llama scales, where one call takes seconds)")
    p.add_argument("--dense-svd-modules", type=int, default=4,
                   help="modules (q, v, q, v, ...) of the SVD-check scale on which the slow dense SVD baseline runs")
    p.add_argument("--svd-scale", default=None,
                   help="scale of the FlexLoRA SVD check (default llama8b if run, else the last scale)")
    p.add_argument("--dense-dtype", default="float32", choices=("float32", "float64"),
                   help="dtype of the dense aggregate and its SVD (the official code works on model-dtype weights)")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown of the warmup round")
    p.add_argument("--out", default=None,
                   help="JSON output, the .md next to it (default benchmarks/results/server.json; --quick: a temp folder)")
    p.add_argument("--md", default=None, help="markdown output (default: --out with .md)")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny shapes, 2 repeats)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the markdown next to an existing result JSON")
    args = p.parse_args(argv)
    if args.render:
        return rerender(args.render, markdown)

    t_wall = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    scales_avail = {**SCALES, **QUICK_SCALES}
    if args.quick:
        scale_names = ["tiny"] if args.scales == p.get_default("scales") else args.scales.split(",")
        dense_k = min(args.dense_svd_modules, 2)
    else:
        scale_names, dense_k = args.scales.split(","), args.dense_svd_modules
    for name in scale_names:
        if name not in scales_avail:
            p.error(f"unknown scale {name!r}; choose from {list(scales_avail)}")
    methods = available_methods() if args.methods is None else args.methods.split(",")
    out = result_path(args.out, "server", args.quick)
    svd_scale = args.svd_scale or ("llama8b" if "llama8b" in scale_names else scale_names[-1])
    if svd_scale not in scale_names:
        p.error(f"--svd-scale {svd_scale!r} must be one of --scales")
    dense_dtype = torch.float32 if args.dense_dtype == "float32" else torch.float64

    argv_used = argv if argv is not None else sys.argv[1:]
    result: dict = {
        "command": " ".join(["python", os.path.relpath(os.path.abspath(__file__), ROOT)] + argv_used),
        "machine": machine_info(), "repeats": args.repeats, "warmup": args.warmup, "methods": methods,
        "setup": {"n_clients": N_CLIENTS, "global_rank": R, "mid_rank": R_MID, "seed": SEED, "update_step": STEP,
                  "ranks_heterogeneous": client_ranks("fedplora"), "ranks_fedit": client_ranks("fedit"),
                  "homogeneous_methods": list(HOMOGENEOUS), "timed_round": 1},
        "scales": {}, "runs": [],
    }
    print(f"machine: {result['machine']}", flush=True)
    for scale_name in scale_names:
        scale = scales_avail[scale_name]
        repeats = args.repeats or scale["repeats"]
        repeats = min(repeats, 2) if args.quick else repeats
        ml = scale["metrics_layers"] if args.metrics_layers is None else min(args.metrics_layers, scale["layers"])
        full_metrics = ml == scale["layers"]
        mr = args.metrics_repeats or scale["metrics_repeats"] or repeats
        mw = args.warmup if (args.metrics_repeats or full_metrics) else 0
        result["scales"][scale_name] = {**scale, "n_modules": len(scale_modules(scale)), "repeats": repeats,
                                        "metrics_layers": ml, "metrics_repeats": mr, "metrics_warmup": mw}
        t0 = time.perf_counter()
        runs, prepared = time_scale(scale_name, scale, methods, repeats, args.warmup, ml, mr, mw,
                                    not args.no_profile)
        result["runs"] += runs
        for run in runs:
            ms = run["ms"]
            print(f"[{scale_name}] {run['method']:9s} start {ms['client_start']:9.2f} ms  aggregate "
                  f"{ms['aggregate'] + ms['global_delta']:9.2f} ms  total {ms['total']:9.2f} ms  metrics "
                  f"{ms.get('metrics', float('nan')):10.1f} ms  (setup {run['setup_s']:.1f} s)", flush=True)
        result["scales"][scale_name]["wall_s"] = time.perf_counter() - t0
        if scale_name == svd_scale and dense_k > 0:
            t0 = time.perf_counter()
            result["target_flexlora_svd"] = flexlora_svd_check(
                svd_scale, scale, dense_k, repeats, dense_dtype, args.warmup, prepared.get("flexlora"))
            result["target_flexlora_svd"]["wall_s"] = time.perf_counter() - t0
        del prepared
        gc.collect()

    t2 = fedplora_vs_fedit(result["runs"], scale_names)
    if t2:
        result["target_fedplora_vs_fedit"] = t2
    result["machine"]["loadavg_end"] = load_average()
    result["wall_s"] = time.perf_counter() - t_wall
    print()
    print(render(result))
    if result["runs"] and not args.no_profile:
        print(render_profiles(result, scale_names[-1]))
    md_path = None if args.md is None else Path(args.md) if os.path.isabs(args.md) else ROOT / args.md
    write_result(out, result, markdown(result), md_path)
    print(f"wall time {result['wall_s']:.1f} s")
    return result


if __name__ == "__main__":
    main()
