"""Costs that grow with the model's width, before and after, at Llama widths (random weights, no download).

Three measurements, each comparing the previous path with the current one in the same run:

1. **Fold per job** (``workers.local_training``): a Fed-PLoRA client job's ``prepare`` (restore ``W0``, fold the
   unselected slots, load the head, set the adapters) with ``train.fold = dense`` (the previous path: ``W0``
   copied in float32 and the dense ``s B_rest A_rest`` added on every target module) and ``branch`` (``W0`` left
   in place, the fold as a frozen LoRA branch), and a whole one-step job (prepare + one forward/backward/AdamW
   step on ``--batch`` x ``--tokens`` tokens + factor extraction), which also shows the branch's per-token cost.
   Clients of rank 1 (fold rank 15) and 4 (fold rank 12), R = 16, state after one synthetic round (non-zero B).
   Models: ``LlamaForCausalLM`` with the real attention widths (hidden, heads, KV heads) of each scale, ``--layers``
   layers (q_proj + v_proj targets), a byte-level vocabulary and ``--intermediate`` MLP width (the fold touches
   q/v only; the MLP width changes the train step, not the fold). Per-job fold times scale with the layer count:
   the tables also give them for the real depth.
2. **Export** (``workers.export``): the previous path (load a base model, wrap it with PEFT, copy the factors,
   ``save_pretrained``; here "load" is building the random few-layer model, far cheaper than reading 16 GB of
   Llama-3.1-8B weights) against writing the files from the global factors alone; time, the growth of the
   process's resident memory, and the base-model bytes the previous path holds at the real depth.
3. **Driver metrics per round** (``orchestrator.metrics``, on by default): init noise (function and parameter
   space), aggregation noise, the method's extra (Fed-PLoRA's rank-wise noise) and the similarity of one module,
   for every method (``--methods`` for some), 10 participants (ranks 1/4/16; 16 for the methods that need equal
   ranks), at 1 torch thread and at all cores (``--threads``); previous implementation:
   ``benchmarks/reference_metrics.py``. The noise metrics are timed on ``--metrics-layers`` layers and scaled to
   the real depth (every layer has the same shapes), also one by one; the similarity (one module per round) is
   added unscaled. Every method's ``aggregate`` (server math, not a metric; FLoRA's and FedEx-LoRA's dense
   ``dW`` updates) is timed and scaled the same way.

Times: ``time.perf_counter``, median of ``--repeats`` after one warmup. Run ``python benchmarks/bench_scale.py``
(writes benchmarks/results/scale.{json,md}); ``--sections metrics`` measures only that section and keeps the
others from the recorded result (the Markdown says from which run); ``--quick`` (tiny widths, seconds, a temp
folder; CI); ``--render benchmarks/results/scale.json`` rewrites the Markdown only.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)

import reference_metrics as before  # noqa: E402
from bench_server import prepared_round, scale_modules  # noqa: E402
from machine import load_average  # noqa: E402
from machine import machine_info as _machine_info  # noqa: E402
from result_files import read_result, rerender, result_path, write_result  # noqa: E402

from core.synthetic import synthetic_update  # noqa: E402
from core.wire import ModuleSpec  # noqa: E402
from orchestrator.method_config import MethodConfig  # noqa: E402
from orchestrator.methods import available_methods, build_method  # noqa: E402
from orchestrator.metrics import (  # noqa: E402
    init_noise_functions,
    init_noise_params,
    module_cosine_similarity,
    noise_metrics,
    round_aggregation_noise,
)
from workers.data import Example  # noqa: E402
from workers.export import export_adapter, export_adapter_peft  # noqa: E402
from workers.local_training import LocalTrainer  # noqa: E402
from workers.models import LoadedModel, tiny_tokenizer  # noqa: E402
from workers.train_config import TrainConfig  # noqa: E402

R = 16
RANKS = [1, 1, 1, 4, 4, 4, 16, 16, 16, 16]
SCALES = {
    "llama1b": dict(label="Llama-3.2-1B widths", hidden=2048, heads=32, kv_heads=8, depth=16),
    "llama8b": dict(label="Llama-3.1-8B widths", hidden=4096, heads=32, kv_heads=8, depth=32),
}
QUICK_SCALES = {"tiny": dict(label="tiny smoke widths", hidden=64, heads=4, kv_heads=2, depth=2)}
BF16_PARAMS = {"llama1b": 1.24e9, "llama8b": 8.03e9}  # real parameter counts (bf16 = 2 bytes each)


def median_ms(xs: list[float]) -> float:
    return 1e3 * statistics.median(xs)


def timed(fn, repeats: int, warmup: int = 1) -> list[float]:
    out = []
    for i in range(warmup + repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


# ---- the model -----------------------------------------------------------------------------------------------
def build_model(scale: dict, layers: int, intermediate: int, seed: int = 0) -> LoadedModel:
    """A random ``LlamaForCausalLM`` with the scale's attention widths (q_proj d x d, v_proj kv*hd x d)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=scale["hidden"], intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=scale["heads"],
                      num_key_value_heads=scale["kv_heads"], max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.requires_grad_(False)
    model.eval()
    targets = tuple(n for n, _ in model.named_modules() if n.endswith(("q_proj", "v_proj")))
    return LoadedModel(model, tok, "causal_lm", "llama", targets, (), None)


def fedplora_round(specs: list[ModuleSpec]):
    """Fed-PLoRA after one synthetic round (non-zero B in every slot): the method and its state."""
    method = build_method(MethodConfig(name="fedplora"), specs, RANKS, R, 0)
    state = method.init_global()
    starts = [method.client_start(state, c, 0) for c in range(len(RANKS))]
    return method, method.aggregate(state, starts, [synthetic_update(s, 0.01, 100) for s in starts]).state


# ---- 1. fold per job -----------------------------------------------------------------------------------------
def bench_fold(name: str, scale: dict, args) -> dict:
    loaded = build_model(scale, args.layers, args.intermediate)
    cfg = TrainConfig(optimizer="adamw", lr=1e-4, local_steps=1, batch_size=args.batch)
    trainer = LocalTrainer(loaded, cfg, max_length=args.tokens)
    specs = [ModuleSpec(m, d, k) for m, (d, k) in trainer.shapes().items()]
    method, state = fedplora_round(specs)
    text = "the quick brown fox jumps over the lazy dog " * (args.tokens // 8)
    examples = [Example(text=text[: 2 * args.tokens], label=0, target=" ok") for _ in range(args.batch)]
    rows = []
    for client in (0, 3):  # rank 1 (fold rank 15) and rank 4 (fold rank 12)
        start = method.client_start(state, client, 1)
        samples: dict[str, dict[str, list[float]]] = {m: {"prepare": [], "job": []} for m in ("dense", "branch")}
        for mode in ("dense", "branch", "dense", "branch"):  # blocks: each mode in its steady state
            trainer.cfg = dataclasses.replace(cfg, fold=mode)
            samples[mode]["prepare"] += timed(lambda s=start: trainer.prepare(s), args.repeats)
            samples[mode]["job"] += timed(lambda s=start: trainer.train(s, examples), max(1, args.repeats // 2))
        modes = dict(trainer.fold_modes)
        row = {"client": client, "rank": RANKS[client], "fold_rank": R - RANKS[client],
               "fold_modes": sorted(set(modes.values()))}
        for mode, by in samples.items():
            for key, xs in by.items():
                row[f"{mode}_{key}_ms"] = median_ms(xs)
        row["prepare_speedup"] = row["dense_prepare_ms"] / row["branch_prepare_ms"]
        row["depth_factor"] = scale["depth"] / args.layers
        rows.append(row)
        print(f"  [{name}] fold client rank {row['rank']}: prepare dense {row['dense_prepare_ms']:.1f} ms, branch "
              f"{row['branch_prepare_ms']:.1f} ms; job dense {row['dense_job_ms']:.0f} ms, branch "
              f"{row['branch_job_ms']:.0f} ms", flush=True)
    shapes = sorted({(d, k) for d, k in trainer.shapes().values()})
    gc.collect()
    return {"scale": name, "layers": args.layers, "depth": scale["depth"], "shapes": shapes, "rows": rows,
            "batch": args.batch, "tokens": args.tokens, "intermediate": args.intermediate}


# ---- 2. export -----------------------------------------------------------------------------------------------
def bench_export(name: str, scale: dict, args) -> dict:
    proc = psutil.Process()
    probe = build_model(scale, args.layers, args.intermediate)
    specs = [ModuleSpec(m, *probe.model.get_submodule(m).weight.shape) for m in probe.targets]
    model_bytes = sum(p.numel() * p.element_size() for p in probe.model.parameters())
    del probe
    gc.collect()
    method, state = fedplora_round(specs)
    deltas = method.global_delta(state)

    def old():
        return export_adapter_peft(build_model(scale, args.layers, args.intermediate), deltas, None)

    def new():
        return export_adapter(deltas, None, "causal_lm")

    out = {"scale": name, "layers": args.layers, "depth": scale["depth"], "few_layer_model_bytes": model_bytes,
           "real_model_bf16_bytes": BF16_PARAMS.get(name)}
    for label, fn in (("factors", new), ("peft_on_loaded_base", old), ("factors", new), ("peft_on_loaded_base", old)):
        gc.collect()
        rss0 = proc.memory_info().rss
        t0 = time.perf_counter()
        files = fn()
        dt = time.perf_counter() - t0
        grew = proc.memory_info().rss - rss0
        entry = out.setdefault(label, {"s": [], "rss_growth_bytes": [], "bytes": 0})
        entry["s"].append(dt)
        entry["rss_growth_bytes"].append(grew)
        entry["bytes"] = sum(len(v) for k, v in files.items() if k != "README.md")
        del files
    new_files, old_files = new(), old()
    from safetensors.torch import load

    a, b = load(new_files["adapter_model.safetensors"]), load(old_files["adapter_model.safetensors"])
    out["same_tensors"] = set(a) == set(b) and all(torch.equal(a[k], b[k].float()) for k in a)
    for label in ("factors", "peft_on_loaded_base"):
        out[label]["median_s"] = statistics.median(out[label]["s"])
    print(f"  [{name}] export: factors {out['factors']['median_s'] * 1e3:.0f} ms, PEFT on a loaded base "
          f"{out['peft_on_loaded_base']['median_s'] * 1e3:.0f} ms, same tensors {out['same_tensors']}", flush=True)
    return out


# ---- 3. driver metrics per round ---------------------------------------------------------------------------
def old_metrics(method, state, starts, agg) -> dict:
    glob, factors = method.global_delta(state), method.global_factors(state)
    out = {"init_noise_fn": sum(before.init_noise_function(glob, s) for s in starts)}
    params = [before.init_noise_param(factors, s) for s in starts]
    out["init_noise_param"] = float("nan") if None in params else sum(params)
    out["agg_noise"] = before.aggregation_noise(method.global_delta(agg.state), starts, agg.used, agg.weights)
    if method.name == "fedplora":
        out["agg_noise_rankwise"] = before.fedplora_rankwise_noise(starts, agg.used)
    return out


def similarity(starts, updates, module):
    """The driver's per-round similarity of one module (``Driver._similarity``)."""
    if not all("main" in s.adapters and module in s.adapters["main"] for s in starts):
        return None
    if any(None in s.adapters["main"][module].slots or not s.adapters["main"][module].slots for s in starts):
        return None
    rank = max(R, max(max(s.adapters["main"][module].slots) for s in starts) + 1)
    return module_cosine_similarity(starts, updates, module, rank)


def metric_parts(method, state, starts, agg) -> dict:
    """The current path's metrics one by one (what ``noise_metrics`` computes), for the per-metric times."""
    glob = method.global_terms(state)
    return {"init_noise_fn": lambda: init_noise_functions(glob, starts),
            "init_noise_param": lambda: init_noise_params(method.global_factors(state), starts),
            "agg_noise": lambda: round_aggregation_noise(method, starts, agg),
            "extra": lambda: method.extra_noise(starts, agg.used)}


def bench_metrics(name: str, scale: dict, args, threads: list[int]) -> list[dict]:
    shapes = (("q_proj", scale["hidden"], scale["hidden"]),
              ("v_proj", scale["kv_heads"] * scale["hidden"] // scale["heads"], scale["hidden"]))
    sub = {"layers": args.metrics_layers, "shapes": shapes}
    modules = scale_modules(sub)
    factor = scale["depth"] / args.metrics_layers
    rows = []
    methods = args.methods.split(",") if args.methods else available_methods()
    for method_name in methods:
        method, state, updates = prepared_round(method_name, modules)
        starts = [method.client_start(state, c, 1) for c in range(len(RANKS))]
        agg = method.aggregate(state, starts, updates)
        first = modules[0].name
        for n in threads:
            torch.set_num_threads(n)
            t_old = timed(lambda: old_metrics(method, state, starts, agg), args.repeats)
            t_new = timed(lambda: noise_metrics(method, state, starts, agg), args.repeats)
            t_sim = timed(lambda: similarity(starts, agg.used, first), args.repeats)
            parts = {k: factor * statistics.median(timed(f, args.repeats))
                     for k, f in metric_parts(method, state, starts, agg).items()}
            t_agg = timed(lambda: method.aggregate(state, starts, updates), args.repeats)
            v_old, v_new = old_metrics(method, state, starts, agg), noise_metrics(method, state, starts, agg)
            diffs = {k: abs(v_new[k] - v_old[k]) / max(abs(v_old[k]), 1e-300) for k in v_old
                     if k in v_new and v_old[k] == v_old[k] and abs(v_old[k]) > 1e-6}
            absdiff = {k: abs(v_new[k] - v_old[k]) for k in v_old if k in v_new and v_old[k] == v_old[k]}
            sim_s = statistics.median(t_sim)  # one module per round, whatever the depth
            row = {"method": method_name, "scale": name, "threads": n, "layers_timed": args.metrics_layers,
                   "depth": scale["depth"], "before_s": factor * statistics.median(t_old) + sim_s,
                   "after_s": factor * statistics.median(t_new) + sim_s, "similarity_s": sim_s,
                   "after_parts_s": parts, "aggregate_s": factor * statistics.median(t_agg),
                   "values_before": v_old, "values_after": v_new,
                   "max_rel_diff": max(diffs.values(), default=0.0), "abs_diff": absdiff}
            rows.append(row)
            print(f"  [{name}] metrics {method_name:10s} {n:2d} thread(s): before {row['before_s']:.3f} s, after "
                  f"{row['after_s']:.3f} s per round (" + ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
                  + f"; max rel diff {row['max_rel_diff']:.1e}); aggregate {row['aggregate_s']:.2f} s", flush=True)
        gc.collect()
    return rows


# ---- report --------------------------------------------------------------------------------------------------
def fmt(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


SECTIONS = ("fold", "export", "metrics")


def kept_note(result: dict, section: str) -> list[str]:
    """A line saying which earlier run a section's numbers come from, when this run did not measure it."""
    kept = result.get("kept", {}).get(section)
    if not kept:
        return []
    return [f"(Kept from the run of {kept['date_utc']}, load average {kept['loadavg_start']} at start, "
            f"{kept.get('loadavg_end')} at end: `{kept['command']}`.)", ""]


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Width-dependent costs: fold per job, export, driver metrics per round",
        "",
        "Generated by `benchmarks/bench_scale.py` (its docstring has the full setup): the previous path and the "
        "current one, measured in the same run on random-weight models and tensors with real Llama widths. "
        "On a shared machine absolute times drift with the load (below): compare ratios within the run.",
        "",
        "Command:", "", f"    {result['command']}", "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, {m['mem_total_gib']} GiB; torch {m['torch']}; "
        f"{m['platform']}; Python {m['python']}; {m['date_utc']}; load average (1/5/15 min) {m['loadavg_start']} at "
        f"start, {m.get('loadavg_end')} at end. Wall time {result.get('wall_s', 0):.0f} s.",
        "",
        "## 1. Fold per job (Fed-PLoRA client, R = 16)",
        "",
        *kept_note(result, "fold"),
        "| scale | layers (real) | client rank | fold rank | fold modes | prepare dense ms | prepare branch ms "
        "| speedup | prepare dense, real depth ms | prepare branch, real depth ms | 1-step job dense ms | 1-step job "
        "branch ms |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in result["fold"]:
        for r in f["rows"]:
            k = r["depth_factor"]
            lines.append(
                f"| {f['scale']} | {f['layers']} ({f['depth']}) | {r['rank']} | {r['fold_rank']} | "
                f"{'/'.join(r['fold_modes'])} | {fmt(r['dense_prepare_ms'])} | {fmt(r['branch_prepare_ms'])} | "
                f"{r['prepare_speedup']:.1f}x | {fmt(k * r['dense_prepare_ms'])} | {fmt(k * r['branch_prepare_ms'])} | "
                f"{fmt(r['dense_job_ms'])} | {fmt(r['branch_job_ms'])} |")
    lines += ["", "prepare = restore `W0` + fold + head + set adapters (the branch mode leaves `W0` in place, "
              "so a job does no `d x k` work); real depth = the few-layer time x (real layers / layers). The 1-step "
              f"job adds one AdamW step on {result['fold'][0]['batch']} x {result['fold'][0]['tokens']} tokens "
              "and the factor extraction (the MLP is narrower than the real one, so the step is cheaper than the "
              "real model's).", "",
              "## 2. Export", "", *kept_note(result, "export"),
              "| scale | layers | factors only ms | PEFT on a loaded base ms | RSS growth factors MiB | RSS growth "
              "PEFT MiB | adapter bytes | same tensors | base model the old path loads (real depth, bf16) |",
              "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for e in result["export"]:
        real = e.get("real_model_bf16_bytes")
        lines.append(
            f"| {e['scale']} | {e['layers']} | {fmt(1e3 * e['factors']['median_s'])} | "
            f"{fmt(1e3 * e['peft_on_loaded_base']['median_s'])} | "
            f"{max(e['factors']['rss_growth_bytes']) / 2**20:.0f} | "
            f"{max(e['peft_on_loaded_base']['rss_growth_bytes']) / 2**20:.0f} | {e['factors']['bytes']:,} | "
            f"{e['same_tensors']} | {'%.1f GB' % (2 * real / 1e9) if real else '-'} |")
    lines += ["", "The previous path's time includes building the few-layer random model (its stand-in for loading "
              "the checkpoint; reading the real weights takes far longer); RSS growth is the process's resident "
              "memory after minus before (memory freed in between is not seen).", "",
              "## 3. Driver metrics per round (10 participants)", ""]
    lines += kept_note(result, "metrics")
    lines += ["| method | scale | threads | before s | after s | speedup | after: init fn / init param / agg / extra s "
              "| similarity s | max rel. diff of values | aggregate s |",
              "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in result["metrics"]:
        parts = r.get("after_parts_s")
        agg_s = r.get("aggregate_s", r.get("flora_aggregate_s"))
        lines.append(
            f"| {r['method']} | {r['scale']} | {r['threads']} | {fmt(r['before_s'])} | {fmt(r['after_s'])} | "
            f"{r['before_s'] / r['after_s']:.1f}x | {' / '.join(fmt(v) for v in parts.values()) if parts else ''} | "
            f"{fmt(r['similarity_s']) if 'similarity_s' in r else ''} | {r['max_rel_diff']:.1e} | "
            f"{fmt(agg_s) if agg_s is not None else ''} |")
    lines += ["", f"Per round at the real depth: the metrics on by default (init noise function and parameter "
              f"space, aggregation noise, the method's extra: Fed-PLoRA's rank-wise noise), timed on "
              f"{result['metrics'][0]['layers_timed'] if result['metrics'] else '-'} layer(s) and scaled, plus the "
              "similarity of one module (once per round, not scaled). Before: `benchmarks/reference_metrics.py`; "
              "after: `orchestrator.metrics.noise_metrics`, also split by metric (FLoRA's, FedEx-LoRA's and "
              "FlexLoRA's aggregation noise is measured by their aggregation as it rounds its float64 result, so "
              "it costs nothing here and its small cost is in the aggregate). Aggregate: the method's `aggregate` "
              "(server math, not a metric; FLoRA's and FedEx-LoRA's form dense `d x k` updates), scaled the same "
              "way; 2 threads = all cores of this machine. Max rel. diff: between the previous and the current values, over the metrics whose "
              "value exceeds 1e-6 (values at rounding level, e.g. FlexLoRA's aggregation noise, differ in their "
              "rounding only; FedEx-LoRA's global is now its exact terms `dW + s B A` rather than their float32 "
              "sum, so its init noise is exactly 0 where the previous path measured that rounding)."]
    return "\n".join(lines) + "\n"


# ---- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="llama1b,llama8b", help=f"comma-separated, from {list(SCALES)}")
    p.add_argument("--layers", type=int, default=2, help="decoder layers of the fold/export models")
    p.add_argument("--metrics-layers", type=int, default=1, help="layers the metrics are timed on (scaled to depth)")
    p.add_argument("--intermediate", type=int, default=1024, help="MLP width of the fold/export models")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="1,0", help="torch threads for the metrics (0 = all cores)")
    p.add_argument("--fold-threads", type=int, default=0, help="torch threads for fold and export (0 = all cores)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated, from {list(SECTIONS)}; the others are kept from the existing result file")
    p.add_argument("--methods", default="", help="comma-separated methods for the metrics (default: all)")
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="tiny widths, 1 repeat, 1 thread, a temp folder (CI smoke run)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the markdown next to an existing result JSON")
    args = p.parse_args(argv)
    if args.render:
        return rerender(args.render, markdown)
    t_wall = time.perf_counter()
    scales = dict(SCALES, **QUICK_SCALES)
    names = ["tiny"] if args.quick and args.scales == p.get_default("scales") else args.scales.split(",")
    for n in names:
        if n not in scales:
            p.error(f"unknown scale {n!r}; choose from {list(scales)}")
    if args.quick:
        args.repeats, args.metrics_layers = 1, min(args.metrics_layers, 2)
        args.threads = "1" if args.threads == p.get_default("threads") else args.threads
    threads = [int(t) or os.cpu_count() or 1 for t in args.threads.split(",")]
    torch.set_num_threads(args.fold_threads or os.cpu_count() or 1)
    argv_used = argv if argv is not None else sys.argv[1:]
    result: dict = {
        "command": " ".join(["python", os.path.relpath(os.path.abspath(__file__), ROOT)] + argv_used),
        "machine": _machine_info(python=platform.python_version(), torch=torch.__version__),
        "args": vars(args), "fold": [], "export": [], "metrics": []}
    sections = args.sections.split(",")
    for sec in sections:
        if sec not in SECTIONS:
            p.error(f"unknown section {sec!r}; choose from {list(SECTIONS)}")
    path = result_path(args.out, "scale", args.quick)
    if set(sections) != set(SECTIONS):  # the sections not measured now come from the recorded run
        if not path.exists():
            p.error(f"--sections {args.sections} keeps the other sections from {path}, which does not exist")
        previous = read_result(path)
        for sec in SECTIONS:
            if sec not in sections:
                result[sec] = previous[sec]
                result.setdefault("kept", {})[sec] = previous.get("kept", {}).get(sec) or {
                    "command": previous["command"], **{k: previous["machine"].get(k) for k in
                                                       ("date_utc", "loadavg_start", "loadavg_end")}}
    print(f"machine: {result['machine']}", flush=True)
    for n in names:
        torch.set_num_threads(args.fold_threads or os.cpu_count() or 1)
        if "fold" in sections:
            result["fold"].append(bench_fold(n, scales[n], args))
        if "export" in sections:
            result["export"].append(bench_export(n, scales[n], args))
        if "metrics" in sections:
            result["metrics"] += bench_metrics(n, scales[n], args, threads)
    result["machine"]["loadavg_end"] = load_average()
    result["wall_s"] = time.perf_counter() - t_wall
    text = markdown(result)
    print(text)
    write_result(path, result, text)
    return result


if __name__ == "__main__":
    main()
