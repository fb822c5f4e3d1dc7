"""Packed client jobs against the same jobs one by one: throughput and memory per worker, for k = 1, 2, 4, 8.

One worker (this process, ``--threads`` torch threads: the worker's default ``resources.cpus_per_worker = 1``
gives 1) trains the same ``--clients`` (8) client jobs of one Fed-PLoRA round in two ways, in the same run:

- ``one by one``: ``LocalTrainer.train`` on each client in turn (today's worker);
- ``packed k``: ``workers.packed_training.train_pack`` on the sorted clients in chunks of ``k`` (what a worker
  with ``resources.clients_per_worker = k`` runs): one forward and backward per step over the k clients' batches.

The clients: Fed-PLoRA after one synthetic round (``R = 8``, ranks 1, 2, 4, 8 in turn, so every client of rank
< 8 carries its own low-rank fold as a per-segment branch), each with ``steps x batch`` distinct examples, AdamW,
``--steps`` local steps of ``--batch`` examples, ``--tokens`` max length. Models:

- ``minilm``: pretrained all-MiniLM-L6-v2 (offline asset, 22.7 M parameters, 6 layers, width 384), classification
  on Rotten Tomatoes (mean pooling, head trained; the backbone's dropout 0.1 is on, as in a run);
- ``llama1b``: a random-weight ``LlamaForCausalLM`` with Llama-3.2-1B attention widths (hidden 2048, 32 heads, 8 KV
  heads; ``benchmarks/bench_scale.py``'s model), ``--llama-layers`` layers, MLP width ``--intermediate``, a byte
  vocabulary, causal LM on the Rotten Tomatoes instruction prompts (q_proj and v_proj targets).

After a warm-up (two clients each way), each repeat runs every variant once, in an order rotated per repeat (a
load change on the shared machine hits all of them). Throughput = client jobs per second of wall time (median over
repeats); ``speedup`` = one-by-one time / packed time, the median of same-repeat ratios, in wall time and in the
process's CPU time (with one torch thread, the worker's own work: far less disturbed by other processes on a
shared machine than the wall time). Computed tokens: rows x padded length summed over a variant's steps (a pack
pads every batch of a step to the longest example of the pack, so it computes more positions). Memory: the
process's peak RSS during a variant (``VmHWM`` reset before it by ``/proc/self/clear_refs`` = 5, after
``malloc_trim``), and on CUDA the peak allocated GPU memory (``peak_memory_bytes``). Frozen-weight memory per
client: the model's parameter bytes shared by the k clients of a worker (bytes / k) against k workers that each
hold the model (bytes per client), and measured: the resident memory the model adds to a process (RSS after
loading minus before) and the peak RSS of the worker during a pack, per client. For the dropout-free Llama the
packed factors are compared with the one-by-one factors (max abs difference; float32 rounding only).

Run ``python benchmarks/bench_packing.py`` (writes benchmarks/results/packing.{json,md}); ``--quick`` (tiny-llama,
k = 1, 2, two clients of one step, one repeat; seconds; a temp folder; CI); ``--render benchmarks/results/packing.json``
rewrites the Markdown only; ``--device cuda`` runs the same jobs on a GPU.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil  # noqa: E402
import torch  # noqa: E402
from machine import load_average  # noqa: E402
from machine import machine_info as _machine_info  # noqa: E402
from page import page  # noqa: E402
from result_files import rerender, result_path, write_result  # noqa: E402

from core.synthetic import synthetic_update  # noqa: E402
from core.wire import ModuleSpec  # noqa: E402
from orchestrator.method_config import MethodConfig  # noqa: E402
from orchestrator.methods import build_method  # noqa: E402
from orchestrator.outputs import package_versions  # noqa: E402
from workers.data import load_examples  # noqa: E402
from workers.data_config import DataConfig  # noqa: E402
from workers.local_training import LocalTrainer, batch_indices, token_lengths  # noqa: E402
from workers.memory import release_freed_memory  # noqa: E402
from workers.models import ModelConfig, load_model  # noqa: E402
from workers.packed_training import train_pack  # noqa: E402
from workers.train_config import TrainConfig  # noqa: E402

R = 8
RANKS = (1, 2, 4, 8)
MiB = 2**20
SOLO = "one by one"


# ---- setup ---------------------------------------------------------------------------------------------------
def load(name: str, args) -> tuple[LocalTrainer, list, int]:
    """The trainer, every client's examples, and the resident bytes that loading the model added."""
    gc.collect()
    release_freed_memory()
    rss0 = psutil.Process().memory_info().rss
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, local_steps=args.steps, batch_size=args.batch)
    if name == "llama1b":
        from bench_scale import SCALES, build_model

        loaded = build_model(SCALES["llama1b"], args.llama_layers, args.intermediate)
        dataset = "rotten_tomatoes_instruct"
    else:
        loaded = load_model(ModelConfig(name), "classification", 2, seed=0)
        dataset = "rotten_tomatoes"
    trainer = LocalTrainer(loaded, cfg, max_length=args.tokens, device=args.device)
    gc.collect()
    model_rss = psutil.Process().memory_info().rss - rss0
    pool = load_examples(DataConfig(dataset=dataset)).examples
    per = args.steps * args.batch
    examples = [pool[c * per:(c + 1) * per] for c in range(args.clients)]
    return trainer, examples, model_rss


def fedplora_starts(trainer: LocalTrainer, clients: int) -> list:
    """Round-1 Fed-PLoRA starts of ``clients`` clients after one synthetic round (non-zero B, low-rank folds)."""
    specs = [ModuleSpec(m, d, k) for m, (d, k) in trainer.shapes().items()]
    ranks = [RANKS[c % len(RANKS)] for c in range(clients)]
    method = build_method(MethodConfig(name="fedplora"), specs, ranks, R, 0)
    state = method.init_global(trainer.head0 or None)
    starts = [method.client_start(state, c, 0) for c in range(clients)]
    state = method.aggregate(state, starts, [synthetic_update(s, 0.01, 100) for s in starts]).state
    return [method.client_start(state, c, 1) for c in range(clients)]


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_variant(trainer: LocalTrainer, starts: list, examples: list, k: int | None) -> dict:
    """One variant over every client: wall time, peak RSS, peak GPU bytes, the updates."""
    gc.collect()
    release_freed_memory()
    rss0 = psutil.Process().memory_info().rss
    reset_peak_rss()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    if k is None:
        updates = [trainer.train(s, ex) for s, ex in zip(starts, examples)]
    else:
        updates = []
        for i in range(0, len(starts), k):
            updates += train_pack(trainer, starts[i:i + k], examples[i:i + k], [None] * len(starts[i:i + k]))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gpu = [u.peak_memory_bytes for u in updates if u.peak_memory_bytes is not None]
    return {"wall_s": wall, "cpu_s": cpu, "rss_before": rss0, "peak_rss": peak_rss(), "peak_gpu_bytes": max(gpu) if gpu else None,
            "updates": updates}


def computed_tokens(trainer: LocalTrainer, starts: list, examples: list, k: int | None) -> int:
    """Token positions the forward passes compute (rows x padded length, summed over steps) for a variant.

    One by one, a batch pads to its own longest example; a pack pads every batch of the step to the longest
    example of the whole pack (``max_length`` truncation applied).
    """
    cfg, cap = trainer.cfg, trainer.max_length
    steps = []
    for s, ex in zip(starts, examples):
        lengths = [min(n, cap) for n in token_lengths(trainer.tokenizer, ex, trainer.task)]
        batches = batch_indices(len(ex), cfg.batch_size, torch.Generator(device="cpu").manual_seed(int(s.seed)))
        steps.append([[lengths[i] for i in next(batches)] for _ in range(cfg.total_steps(len(ex)))])
    size = 1 if k is None else k
    total = 0
    for i in range(0, len(steps), size):
        pack = steps[i:i + size]
        for t in range(max(len(c) for c in pack)):
            rows = [r for c in pack if t < len(c) for r in c[t]]
            total += len(rows) * max(rows)
    return total


def max_diff(a: list, b: list) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        for name, per in x.adapters.items():
            for m, (B, A) in per.items():
                worst = max(worst, float((y.adapters[name][m][0] - B).abs().max()),
                            float((y.adapters[name][m][1] - A).abs().max()))
    return worst


def bench_model(name: str, args, ks: list[int]) -> dict:
    trainer, examples, model_rss = load(name, args)
    starts = fedplora_starts(trainer, args.clients)
    frozen = sum(p.numel() * p.element_size() for p in trainer.model.parameters() if not p.requires_grad)
    variants: list[int | None] = [None, *ks]
    samples: dict[str, list[dict]] = {label(k): [] for k in variants}
    run_variant(trainer, starts[:2], examples[:2], None)  # warm-up: allocator, kernels, both code paths
    run_variant(trainer, starts[:2], examples[:2], 2)
    reference = None
    for rep in range(args.repeats):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for k in order:
            out = run_variant(trainer, starts, examples, k)
            updates = out.pop("updates")
            if k is None:
                reference = updates
            else:
                out["max_abs_diff"] = max_diff(updates, reference) if reference is not None else None
            out["train_loss"] = statistics.mean(u.train_loss for u in updates)
            samples[label(k)].append(out)
            print(f"  [{name}] repeat {rep} {label(k):10s}: {out['wall_s']:.2f} s wall, {out['cpu_s']:.2f} s CPU, "
                  f"peak RSS {out['peak_rss'] / MiB:.0f} MiB", flush=True)
    rows = []
    solo = samples[SOLO]
    for k in variants:
        xs = samples[label(k)]
        wall = statistics.median(x["wall_s"] for x in xs)
        row = {"variant": label(k), "k": k or 1, "wall_s": wall, "jobs_per_s": args.clients / wall,
               "speedup": statistics.median(s["wall_s"] / x["wall_s"] for s, x in zip(solo, xs)),
               "speedup_of_mins": min(s["wall_s"] for s in solo) / min(x["wall_s"] for x in xs),
               "cpu_s": statistics.median(x["cpu_s"] for x in xs),
               "cpu_speedup": statistics.median(s["cpu_s"] / x["cpu_s"] for s, x in zip(solo, xs)),
               "computed_tokens": computed_tokens(trainer, starts, examples, k),
               "peak_rss_mib": max(x["peak_rss"] for x in xs) / MiB,
               "peak_gpu_mib": (max(x["peak_gpu_bytes"] for x in xs) / MiB if xs[0]["peak_gpu_bytes"] is not None
                                else None),
               "train_loss": xs[-1]["train_loss"], "max_abs_diff": xs[-1].get("max_abs_diff")}
        rows.append(row)
    del trainer
    gc.collect()
    return {"model": name, "frozen_bytes": frozen, "model_rss_bytes": model_rss, "rows": rows,
            "targets": len(starts[0].adapters["main"]), "tokens": args.tokens, "batch": args.batch,
            "steps": args.steps, "clients": args.clients,
            "layers": args.llama_layers if name == "llama1b" else None}


def label(k: int | None) -> str:
    return SOLO if k is None else f"packed k={k}"


# ---- report --------------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    a = result["args"]
    body = [f"{a['clients']} Fed-PLoRA client jobs (R = {R}, ranks {', '.join(map(str, RANKS))} in turn; every client "
            f"of rank < {R} carries its own low-rank fold), {a['steps']} AdamW steps of {a['batch']} examples each, "
            f"max length {a['tokens']}, {a['threads']} torch thread(s), device {a['device']}; "
            f"{a['repeats']} timed repeats after a warm-up, variants rotated.", ""]
    for mdl in result["models"]:
        layers = f", {mdl['layers']} layer(s)" if mdl.get("layers") else ""
        body += [f"## {mdl['model']}{layers}: {mdl['frozen_bytes'] / MiB:.1f} MiB of frozen weights, "
                 f"{mdl['targets']} target modules", "",
                 "| variant | jobs/s (wall) | speedup (wall) | ratio of min wall times | CPU s | speedup (CPU time) | "
                 "computed tokens vs one by one | peak RSS MiB | peak RSS / client MiB | frozen weights / client MiB | "
                 "peak GPU MiB | mean train loss | max abs diff vs one by one |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in mdl["rows"]:
            gpu = f"{r['peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] is not None else "-"
            diff = f"{r['max_abs_diff']:.1e}" if r.get("max_abs_diff") is not None else "-"
            tokens = r["computed_tokens"] / mdl["rows"][0]["computed_tokens"]
            body.append(f"| {r['variant']} | {r['jobs_per_s']:.2f} | {r['speedup']:.2f}x | {r['speedup_of_mins']:.2f}x | "
                        f"{r['cpu_s']:.2f} | {r['cpu_speedup']:.2f}x | {tokens:.2f} | "
                        f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / r['k']:.0f} | "
                        f"{mdl['frozen_bytes'] / MiB / r['k']:.1f} | {gpu} | {r['train_loss']:.4f} | {diff} |")
        solo = mdl["rows"][0]
        body += ["", "jobs/s: client jobs per second of wall time (median over repeats); speedup: the median of "
                 "same-repeat ratios (one-by-one time / packed time); ratio of min wall times: the fastest one-by-one "
                 "run over the fastest packed run; CPU s: the process's CPU time (the worker's own work, little "
                 "disturbed by other processes on a shared machine); computed tokens: rows x padded length summed "
                 "over the steps (a pack pads every batch of a step to the pack's longest example); max abs diff: "
                 "the largest difference of a trained factor from the one-by-one run: float32 rounding for a model "
                 "without dropout (the Llama), another dropout sample for one with dropout (MiniLM's backbone "
                 "dropout 0.1 draws other masks in a pack: `workers/packed_training.py`).",
                 "", f"k separate workers (one model each, one job at a time) hold {mdl['frozen_bytes'] / MiB:.1f} MiB "
                 f"of frozen weights per client; loading the model added {mdl['model_rss_bytes'] / MiB:.0f} MiB of "
                 f"resident memory to the process, and a one-client worker peaks at {solo['peak_rss_mib']:.0f} MiB, "
                 "so k such workers need k times that.", ""]
    return page("Packed client jobs: throughput and memory per worker", "bench_packing.py",
                "the variants run in the same process, rotated per repeat, and are compared as same-repeat ratios",
                result, ("python", "torch", "transformers", "peft"), body, findings(result))


def findings(result: dict) -> list[str]:
    """Where packing pays and where it does not, from the numbers of this run."""
    out = []
    for mdl in result["models"]:
        solo, packed = mdl["rows"][0], mdl["rows"][1:]
        best = max(packed, key=lambda r: r["cpu_speedup"])
        tokens = {r["k"]: r["computed_tokens"] / solo["computed_tokens"] for r in packed}
        out.append(f"{mdl['model']}, throughput: packed / one by one, wall (CPU time): "
                   + ", ".join(f"k={r['k']} {r['speedup']:.2f}x ({r['cpu_speedup']:.2f}x)" for r in packed)
                   + f"; best CPU-time ratio {best['cpu_speedup']:.2f}x at k={best['k']}. The pack computes "
                   + ", ".join(f"{tokens[k]:.2f}x" for k in tokens)
                   + " the token positions of one by one (padding to the pack's longest example).")
        out.append(f"{mdl['model']}, memory: peak RSS per client {solo['peak_rss_mib']:.0f} MiB for a one-client "
                   "worker, " + ", ".join(f"{r['peak_rss_mib'] / r['k']:.0f} MiB at k={r['k']}" for r in packed)
                   + f"; frozen weights per client {mdl['frozen_bytes'] / MiB:.1f} MiB / k. The worker's peak grows "
                   f"with k by the activations ({packed[-1]['peak_rss_mib'] - solo['peak_rss_mib']:.0f} MiB more at "
                   f"k={packed[-1]['k']}), far less than the {packed[-1]['k'] - 1} more workers one by one would need.")
    if result["args"]["device"] == "cpu":
        out.append("On a CPU worker (one torch thread) packing does not raise throughput: the frozen matmuls keep the "
                   "core busy already, so one pass over k batches costs about what k passes cost, plus the pack's "
                   "padding. The default `clients_per_worker: 1` stays for CPU runs; packing pays where memory "
                   "bounds the number of workers (each extra worker holds the model and a Python/torch runtime), "
                   "and its GPU gains (a device busier per kernel launch) are not measured here.")
    return out


# ---- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,llama1b", help="comma-separated, from minilm, llama1b, tiny-llama")
    p.add_argument("--ks", default="1,2,4,8", help="pack sizes")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--llama-layers", type=int, default=1)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of every variant (after a short warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the worker's default: 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny-llama, k = 1, 2, two 1-step clients (CI smoke run)")
    p.add_argument("--out", default=None)
    p.add_argument("--render", metavar="JSON", help="only rewrite the markdown next to an existing result JSON")
    args = p.parse_args(argv)
    if args.render:
        return rerender(args.render, markdown)
    if args.quick:
        args.models, args.ks, args.clients, args.steps, args.batch, args.repeats = "tiny-llama", "1,2", 2, 1, 4, 1
    t_wall = time.perf_counter()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    argv_used = argv if argv is not None else sys.argv[1:]
    result: dict = {"command": " ".join(["python", "benchmarks/bench_packing.py"] + argv_used),
                    "machine": _machine_info(torch_threads=args.threads, versions=package_versions()),
                    "args": vars(args), "models": []}
    print(f"machine: {result['machine']}", flush=True)
    for name in args.models.split(","):
        result["models"].append(bench_model(name, args, ks))
    result["machine"]["loadavg_end"] = load_average()
    result["wall_s"] = time.perf_counter() - t_wall
    text = markdown(result)
    print(text)
    write_result(result_path(args.out, "packing", args.quick), result, text)
    return result


if __name__ == "__main__":
    main()
