"""``benchmarks/results/server.md`` from a ``bench_server.py`` result: the tables, targets and profiles.

Rewrite the Markdown from a recorded result with ``python benchmarks/bench_server.py --render
benchmarks/results/server.json``.
"""

from __future__ import annotations


def fmt(x: float | None) -> str:
    """Milliseconds with three significant digits (thousands separated above 1,000; ``-`` for none)."""
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.3g}"


def render(result: dict) -> str:
    """The tables and targets in ``result`` (printed after a run and the body of ``server.md``)."""
    lines = []
    scales = result["scales"]
    lines.append("| method | scale | client ranks | client_start ms | aggregate ms | total ms | metrics ms |")
    lines.append("|---|---|---|---:|---:|---:|---:|")
    for run in result["runs"]:
        ms = run["ms"]
        ranks = "16 x 10" if run["method"] in result["setup"]["homogeneous_methods"] else "1,4,16 (3/3/4)"
        metrics = fmt(ms.get("metrics"))
        if ms.get("metrics") is not None and run["metrics_scale_factor"] != 1.0:
            metrics += "*"
        lines.append(f"| {run['method']} | {run['scale']} | {ranks} | {fmt(ms['client_start'])} | "
                     f"{fmt(ms['aggregate'] + ms['global_delta'])} | {fmt(ms['total'])} | {metrics} |")
    lines.append("")
    lines.append("Medians. aggregate = `aggregate` (validation + adapters + head) + `global_delta`; total = all 10 "
                 "`client_start` + aggregate (metrics not included); metrics = init noise (function-space and "
                 "parameter-space, all 10 clients) + aggregation noise, optional per-round work.")
    scaled = [f"{n}: first {s['metrics_layers']} of {s['layers']} layers, x{s['layers'] / s['metrics_layers']:g}, "
              f"{s['metrics_repeats']} repeat(s)" for n, s in scales.items()
              if s["metrics_layers"] and s["metrics_layers"] != s["layers"]]
    if scaled:
        lines.append("`*`: metrics timed on a subset of layers and scaled to all layers (" + "; ".join(scaled) + ").")
    lines.append("")
    with_metrics = [r for r in result["runs"] if r["ms"].get("metrics") is not None]
    if with_metrics:
        lines.append("Noise metrics per round, ms (init noises summed over the 10 clients), and their cost relative "
                     "to the server round:")
        lines.append("")
        lines.append("| method | scale | init noise (function) | init noise (param) | aggregation noise | metrics / "
                     "server round |")
        lines.append("|---|---|---:|---:|---:|---:|")
        for r in with_metrics:
            ms = r["ms"]
            lines.append(f"| {r['method']} | {r['scale']} | {fmt(ms['init_noise_function'])} | "
                         f"{fmt(ms['init_noise_param'])} | {fmt(ms['aggregation_noise'])} | "
                         f"{ms['metrics'] / ms['total']:,.0f}x |")
        lines.append("")
    t1 = result.get("target_flexlora_svd")
    if t1:
        note = "" if t1["scale"] == "llama8b" else f" (target defined at llama8b shapes; this run: {t1['scale']})"
        lines.append(f"**Target 1: FlexLoRA factored SVD vs dense `torch.linalg.svd` ({t1['scale']}, "
                     f"{len(t1['modules'])} modules, dense aggregate and SVD in {t1['dense_dtype']}): min speedup "
                     f"{t1['min_speedup']:,.0f}x (need >= 20x), max rel. error {t1['max_rel_err']:.1e} "
                     f"(need < 1e-4): {'PASS' if t1['pass'] else 'FAIL'}{note}**")
        lines.append("")
        lines.append("| module | d x k | stacked rank | factored ms (stack + SVD) | dense aggregate ms | dense SVD ms "
                     "| speedup total / SVD-only | rel err recon vs dense SVD | rel err top-16 sigma | rel err "
                     "recon vs exact aggregate | rank-16 truncation diff |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in t1["modules"]:
            lines.append(f"| {r['module']} | {r['shape'][0]}x{r['shape'][1]} | {r['stacked_rank']} | "
                         f"{fmt(r['factored_ms'])} | {fmt(r['dense_aggregate_ms'])} | {fmt(r['dense_svd_ms'])} | "
                         f"{r['speedup_total']:,.0f}x / {r['speedup_svd_only']:,.0f}x | "
                         f"{r['rel_err_factored_vs_dense_reconstruction']:.1e} | "
                         f"{r['rel_err_top_singular_values']:.1e} | {r['rel_err_factored_vs_exact_aggregate']:.1e} | "
                         f"{r['rel_err_rank_R_truncation']:.1e} |")
        est = t1["full_model_estimate_s"]
        lines.append("")
        lines.append("Speedup = dense time / factored time per module (PASS uses the smaller of total and SVD-only, "
                     "minimum over modules). Errors in float64 against the dense result; \"exact aggregate\" is "
                     "`s * B_stack @ A_stack` in float64. The rank-16 truncation diff (what a rank-16 client "
                     "receives) is informational: it also depends on the gap sigma_16 / sigma_17.")
        if est["dense"] is not None:
            lines.append(f"Whole {t1['scale']} model, all modules (from the per-shape times): dense "
                         f"{est['dense']:,.0f} s vs factored {est['factored']:.2f} s per round.")
        lines.append("")
    t2 = result.get("target_fedplora_vs_fedit")
    if t2:
        lines.append(f"**Target 2: Fed-PLoRA aggregate / FedIT (homogeneous R = 16) aggregate, need <= 2x: max "
                     f"{t2['max_ratio']:.2f}: {'PASS' if t2['pass'] else 'FAIL'}**")
        lines.append("")
        lines.append("| scale | FedIT aggregate ms | Fed-PLoRA aggregate ms | ratio of medians | median of "
                     "same-iteration ratios |")
        lines.append("|---|---:|---:|---:|---:|")
        for scale, r in t2["per_scale"].items():
            lines.append(f"| {scale} | {fmt(r['fedit_ms'])} | {fmt(r['fedplora_ms'])} | {r['ratio']:.2f} | "
                         f"{r['ratio_median_same_iteration']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def render_profiles(result: dict, scale: str, top: int = 4) -> str:
    """Where one round's time goes at ``scale``: the top own-time functions of each method's profile."""
    lines = [f"Where one round's time goes at {scale} (cProfile of the warmup round, own time, top {top}; the "
             "profiler inflates Python-heavy calls):", ""]
    for run in result["runs"]:
        if run["scale"] != scale or not run.get("profile_top"):
            continue
        parts = [f"`{r['function']}` {r['share']:.0%} ({r['ncalls']} calls)" for r in run["profile_top"][:top]]
        lines.append(f"- {run['method']}: " + "; ".join(parts))
    lines.append("")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The whole ``server.md``: command, machine, setup, the tables, the profiles and the threads note."""
    m = result["machine"]
    text = [
        "# Server-side cost per federated round",
        "",
        "Generated by `benchmarks/bench_server.py` (its docstring has the full setup). The machine is shared with "
        "other jobs: absolute times drift with their load; compare ratios within this run.",
        "",
        "Command:",
        "",
        f"    {result['command']}",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, {m.get('mem_total_gib', '?')} GiB; torch "
        f"{m['torch']}, {m['torch_threads']} intra-op thread(s); {m['platform']}; Python {m['python']}; "
        f"{m['date_utc']}; load average (1/5/15 min) {m.get('loadavg_start')} at start, {m.get('loadavg_end')} at "
        f"end. Wall time {result['wall_s']:.0f} s.",
        "",
        "Setup: 10 participating clients with ranks [1, 1, 1, 4, 4, 4, 16, 16, 16, 16] (groups (1, r_m = 4, R = 16)); "
        "FedIT homogeneous rank 16 x 10. One untimed warm round, then round 1 timed from that fixed state; "
        f"methods round-robin, warmup {result['warmup']}, median of repeats (" + ", ".join(
            f"{n} {s['repeats']}" for n, s in result["scales"].items()) + "); synthetic "
        "updates precomputed. Scales (real layer counts):",
        "",
    ]
    for name, s in result["scales"].items():
        shapes = ", ".join(f"{n} {d}x{k}" for n, d, k in s["shapes"])
        text.append(f"- `{name}`: {s['label']}, {s['layers']} layers x ({shapes}) = {s['n_modules']} modules")
    text += ["", render(result), ""]
    if result["runs"]:
        text.append(render_profiles(result, result["runs"][-1]["scale"]))
    if m["torch_threads"] == 1:
        text.append("Threads: 1 intra-op thread (`--threads 1`, the default). On this shared 2-core machine, with "
                    "another job keeping both cores busy, torch's 2 default threads made the many small ops of a "
                    "round 10-30x slower and erratic (e.g. FedIT's 8B aggregate 13-31 s with 2 threads vs "
                    "0.9-1.9 s with 1 thread, measured back to back); the dense-SVD baseline gets the same single "
                    "thread as the factored path.")
        text.append("")
    return "\n".join(text)
