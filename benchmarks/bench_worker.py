"""Client-worker benchmarks: local training throughput against a plain PEFT loop, and memory over 50 clients.

Part (a), throughput. One client job of the default MiniLM config (``configs/minilm_fedplora.yaml``: MiniLM-L6,
Rotten Tomatoes, batch 16, max length 64, 10 local steps, AdamW lr 2e-3, head trained) run several ways on the
same client, the same ClientStart and the same batches, with the same number of torch threads (the worker's:
``resources.cpus_per_worker`` = 1 -> 1 intra-op thread):

- ``worker``: ``ClientWorker.train(start)`` in this process (``LocalTrainer.train`` on the Fed-PLoRA start of a
  rank-8 client: restore + fold, head, adapters, 10 steps, factors shipped back);
- ``actor``: the same call through the Ray actor as the tool makes it (``make_worker`` on a Ray started by
  ``orchestrator.run.init_ray``, so the worker runs at nice 0, and ``ClientWorker.train`` hands freed memory
  back with ``malloc_trim(0)`` after each job), timed from the caller (serialization, scheduling, transfers
  included);
- ``actor, nice 15``: the same actor reniced to 15 after start (Ray's own default ``RAY_worker_niceness``,
  which ``init_ray`` overrides): what the override buys when other processes compete for the cores;
- ``actor, no malloc_trim``: a ``ClientWorker`` subclass whose ``train`` skips ``malloc_trim``: what the
  trim costs per job;
- ``plain``: a plain PEFT loop in this process: ``get_peft_model`` on MiniLM (``LoraConfig(task_type=SEQ_CLS,
  r=8, lora_alpha=8, target_modules=[query, value])``, the classifier in ``modules_to_save``), one job = copy
  the same initial A/B/head in, new AdamW, the same 10 batches (same indices, tokenized per batch with the
  same tokenizer call), ``model(**batch, labels=...).loss``, collect the trained tensors.

The variants run round-robin (the order rotates every iteration) so a load change on the shared machine
hits all of them; the first ``--warmup`` iterations are dropped; medians and the median of same-iteration
ratios are reported. Examples/s = steps x batch size / job wall time. The worker and plain losses are
compared (they train the same numbers, so they must agree to float rounding). A cProfile of one worker job
and one plain job splits the time into forward, backward, optimizer, tokenization and per-job setup. The Ray
instance has 3 logical CPUs so the 3 single-CPU actors coexist (one job runs at a time; idle actors use no CPU).

Part (b), memory. Actors serve ``--memory-clients`` (50) distinct clients in sequence (the config with
``data.num_clients = 50``; 5 Fed-PLoRA rounds of 10 clients, aggregated between rounds, so the ranks 1/4/8 and
the folded deltas change from job to job); the RSS of each actor process (psutil; plus RssAnon/RssFile/RssShmem
and the peak ``VmHWM`` from ``/proc/<pid>/status``) is recorded after each client, and the peak of each job is
measured by resetting ``VmHWM`` before it (``/proc/<pid>/clear_refs`` = 5). Variants, interleaved client by
client: the actor as shipped (``malloc_trim(0)`` after each job) and the ``no malloc_trim`` subclass. The
1-client reference: a job's peak depends on its own batches (padded shapes, rank), so the jobs with the
highest peaks in the shipped sequence (``--reference-jobs``, default 3) and the job with the largest batch
rows x padded length are each run on a fresh actor of each variant that serves only that job; the 1-client
peak is the largest of them. Target: the peak of the 50-client worker within 10% of it, and RSS after the
last client within 10% of RSS after the first. The memory jobs run ``--memory-steps`` (default 3) local
steps: a step's activations are freed before the next, so more steps per job only take longer.

Run: ``python benchmarks/bench_worker.py`` (writes benchmarks/results/worker.{json,md});
``python benchmarks/bench_worker.py --quick`` (a smoke test: 2 steps, 2 iterations, 5 memory clients of 1 step, one
reference job; writes to a temp folder);
``--render benchmarks/results/worker.json`` rewrites the Markdown only. The plain loop is in ``plain_loop.py``,
the rendering in ``render_worker.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray worker processes import workers.* / orchestrator.*: they inherit PYTHONPATH from this process.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")) if p)

import psutil  # noqa: E402
import torch  # noqa: E402
from machine import load_average  # noqa: E402
from machine import machine_info as _machine_info  # noqa: E402
from plain_loop import PlainLoop  # noqa: E402
from render_worker import markdown, render  # noqa: E402
from result_files import rerender, result_path, write_result  # noqa: E402

from core.rng import generator  # noqa: E402
from core.wire import ClientStart  # noqa: E402
from orchestrator.config import RunConfig, load_config  # noqa: E402
from orchestrator.methods import build_method  # noqa: E402
from orchestrator.outputs import package_versions  # noqa: E402
from orchestrator.ranks import assign_ranks  # noqa: E402
from orchestrator.run import init_ray  # noqa: E402
from workers.actor import ClientWorker, make_worker  # noqa: E402
from workers.local_training import batch_indices  # noqa: E402
from workers.partition import load_federated  # noqa: E402
from workers.resources import WorkerResources  # noqa: E402

CONFIG = "configs/minilm_fedplora.yaml"
VARIANTS = ("worker", "actor", "plain")
MiB = 2**20


# ---- setup -------------------------------------------------------------------------------------------------
def method_for(cfg: RunConfig, worker: ClientWorker):
    """The run's Fed-PLoRA method and its round-0 state, built exactly as the Driver builds them."""
    specs = worker.module_specs()
    ranks = assign_ranks(cfg.ranks, cfg.data.num_clients, cfg.seed)
    method = build_method(cfg.method, specs, ranks, cfg.ranks.max_rank, cfg.seed)
    state = method.init_global(worker.initial_head())
    return method, state, ranks


# ---- part (a): throughput ----------------------------------------------------------------------------------
class UntrimmedClientWorker(ClientWorker):
    """The worker without ``malloc_trim`` after each job (how it was before; the comparison variant)."""

    def train(self, start: ClientStart):
        return self.trainer.train(start, self._client(start.client_id).train)


def _actor(cfg: RunConfig, kind: str = "default"):
    """A ClientWorker actor as ``make_worker`` builds it (1 CPU), or one of the comparison variants."""
    import ray

    res = WorkerResources(num_cpus=1.0, num_gpus=0.0, num_workers=1)
    if kind == "notrim":
        cls = ray.remote(max_restarts=0)(UntrimmedClientWorker)
        return cls.options(**res.actor_options()).remote(cfg.model, cfg.data, cfg.train, cfg.seed, res.torch_threads)
    return make_worker(res, cfg.model, cfg.data, cfg.train, cfg.seed)


def _renice(pid: int, value: int) -> int | None:
    """Set a process's niceness (lowering it needs root / CAP_SYS_NICE); returns the niceness after."""
    try:
        psutil.Process(pid).nice(value)
    except (psutil.AccessDenied, PermissionError):
        pass
    return psutil.Process(pid).nice()


def throughput(cfg: RunConfig, iterations: int, warmup: int, profile: bool) -> dict:
    import ray

    data = load_federated(cfg.data, cfg.seed)
    worker = ClientWorker(cfg.model, cfg.data, cfg.train, cfg.seed, num_threads=torch.get_num_threads(), data=data)
    method, state, ranks = method_for(cfg, worker)
    client = ranks.index(cfg.ranks.max_rank)  # a rank-R client: no fold, the plain loop's single adapter
    start = method.client_start(state, client, 0)
    examples = data.clients[client].train
    targets = [m.name for m in worker.module_specs()]
    plain = PlainLoop(cfg, targets, start.rank, data.num_labels)
    actors = {"actor": _actor(cfg), "actor, nice 15": _actor(cfg), "actor, no malloc_trim": _actor(cfg, "notrim")}
    infos = {}
    for label, a in actors.items():
        info = ray.get(a.ping.remote())
        info["nice_default"] = psutil.Process(info["pid"]).nice()
        info["nice"] = _renice(info["pid"], 15) if "nice 15" in label else info["nice_default"]
        infos[label] = info
    variants = ["worker", *actors, "plain"]
    steps = cfg.train.total_steps(len(examples))
    print(f"  client {client} (rank {start.rank}, {len(examples)} train examples), {steps} steps x batch "
          f"{cfg.train.batch_size}; actors {infos}", flush=True)

    def run(variant: str) -> dict:
        gc.collect()
        if variant == "plain":
            return plain.job(start, examples)
        t0 = time.perf_counter()
        u = worker.train(start) if variant == "worker" else ray.get(actors[variant].train.remote(start))
        wall = time.perf_counter() - t0
        return {"seconds": wall, "compute_seconds": u.compute_seconds, "loss": u.train_loss, "steps": u.steps}

    samples: dict[str, list[dict]] = {v: [] for v in variants}
    loads = []
    for it in range(warmup + iterations):
        k = it % len(variants)
        line = []
        for v in variants[k:] + variants[:k]:
            r = run(v)
            if it >= warmup:
                samples[v].append(r)
            line.append(f"{v} {r['seconds']:.2f}s")
        loads.append(os.getloadavg()[0])
        print(f"  [throughput] iteration {it + 1}/{warmup + iterations} ({'warmup' if it < warmup else 'timed'}, "
              f"load {loads[-1]:.2f}): " + ", ".join(line), flush=True)

    n_ex = steps * cfg.train.batch_size
    out: dict = {"client": client, "rank": start.rank, "n_train": len(examples), "steps": steps,
                 "examples_per_job": n_ex, "actors": infos, "variants": {}, "load_after_each_iteration": loads}
    for v in variants:
        secs = [r["seconds"] for r in samples[v]]
        row = {"median_s": statistics.median(secs), "min_s": min(secs), "samples_s": secs,
               "examples_per_s": n_ex / statistics.median(secs), "loss": samples[v][0]["loss"]}
        if "compute_seconds" in samples[v][0]:
            row["median_compute_s"] = statistics.median(r["compute_seconds"] for r in samples[v])
            row["median_outside_compute_s"] = statistics.median(r["seconds"] - r["compute_seconds"]
                                                                for r in samples[v])
        if v in infos:
            row["nice"] = infos[v]["nice"]
        out["variants"][v] = row
    out["ratios"] = {}
    for v in variants[:-1]:
        pairs = [a["seconds"] / b["seconds"] for a, b in zip(samples[v], samples["plain"])]
        out["ratios"][v] = {"ratio_of_medians": out["variants"][v]["median_s"] / out["variants"]["plain"]["median_s"],
                            "median_same_iteration": statistics.median(pairs),
                            "ratio_of_mins": out["variants"][v]["min_s"] / out["variants"]["plain"]["min_s"],
                            "same_iteration": pairs}
    out["loss_abs_diff_worker_vs_plain"] = abs(out["variants"]["worker"]["loss"] - out["variants"]["plain"]["loss"])
    judged = ("worker", "actor")  # the tool as shipped; the other actors show what its two settings change
    out["max_ratio"] = max(max(out["ratios"][v]["ratio_of_medians"], out["ratios"][v]["median_same_iteration"])
                           for v in judged)
    out["pass"] = out["max_ratio"] <= 1.05
    if profile:
        out["profile"] = {"worker": profile_job(lambda: worker.train(start), WORKER_BUCKETS),
                          "plain": profile_job(lambda: plain.job(start, examples), PLAIN_BUCKETS)}
    for a in actors.values():
        ray.kill(a)
    return out


# (label, function-name matcher) buckets of one job's cumulative time in cProfile
WORKER_BUCKETS = {
    "prepare (restore+fold, head, set_adapters)": ("local_training.py", "prepare"),
    "tokenize + collate": ("local_training.py", "collate"),
    "forward + loss": ("local_training.py", "loss"),
    "backward": ("_tensor.py", "backward"),
    "optimizer step": ("adam.py", "step"),
    "optimizer zero_grad": ("optimizer.py", "zero_grad"),
    "set_trainable": ("local_training.py", "set_trainable"),
    "adapter_factors + head_state": (("local_training.py", "adapter_factors"), ("models.py", "head_state")),
}
PLAIN_BUCKETS = {
    "reset": ("plain_loop.py", "reset"),
    "tokenize": ("tokenization_utils_base.py", "__call__"),
    "forward + loss": ("peft_model.py", "forward"),
    "backward": ("_tensor.py", "backward"),
    "optimizer step": ("adam.py", "step"),
    "optimizer zero_grad": ("optimizer.py", "zero_grad"),
}


def profile_job(fn, buckets: dict) -> dict:
    """Cumulative seconds of one job's phases (cProfile; it adds overhead to Python-heavy calls)."""
    prof = cProfile.Profile()
    gc.collect()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = {"total_s": total, "phases_s": {}}
    for label, spec in buckets.items():
        specs = spec if isinstance(spec[0], tuple) else (spec,)
        secs = 0.0
        for file_end, func in specs:
            # the outermost matching entry (largest cumulative time) of each (file, function)
            hits = [v[3] for (f, _line, name), v in stats.items() if name == func and f.endswith(file_end)]
            secs += max(hits) if hits else 0.0
        out["phases_s"][label] = secs
    out["phases_s"]["other"] = total - sum(out["phases_s"].values())
    top = sorted(((v[2], f"{Path(f).name}:{line}({name})", v[1]) for (f, line, name), v in stats.items()),
                 reverse=True)[:8]
    out["top_own_time"] = [{"function": name, "tottime_s": t, "ncalls": n} for t, name, n in top]
    return out


# ---- part (b): memory --------------------------------------------------------------------------------------
def reset_peak(pid: int) -> bool:
    """Reset a process's peak RSS (VmHWM) to its current RSS (``/proc/<pid>/clear_refs`` = 5, Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def job_footprint(tokenizer, start: ClientStart, examples: list, cfg: RunConfig) -> int:
    """Largest ``batch rows x padded length`` over a job's batches (what its activations scale with)."""
    order = torch.Generator(device="cpu").manual_seed(int(start.seed))
    batches = batch_indices(len(examples), cfg.train.batch_size, order)
    worst = 0
    for _ in range(cfg.train.total_steps(len(examples))):
        rows = [examples[i] for i in next(batches)]
        ids = tokenizer([ex.text for ex in rows], padding=True, truncation=True,
                        max_length=cfg.data.max_length)["input_ids"]
        worst = max(worst, len(ids) * len(ids[0]))
    return worst


def proc_memory(pid: int) -> dict:
    """RSS (psutil) and peak RSS (VmHWM) of a process, in MiB."""
    rss = psutil.Process(pid).memory_info().rss / MiB
    fields = {"VmHWM:": "hwm_mib", "RssAnon:": "anon_mib", "RssFile:": "file_mib", "RssShmem:": "shmem_mib"}
    out = {"rss_mib": rss}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(" ", 1)[0].split("\t", 1)[0]
        if key in fields:
            out[fields[key]] = int(line.split()[1]) / 1024
    return out


MEMORY_VARIANTS = ("default", "notrim")
MEMORY_LABELS = {"default": "as shipped (make_worker; malloc_trim(0) after each job)",
                 "notrim": "no malloc_trim (the worker before)"}


def memory(cfg: RunConfig, n_clients: int, per_round: int, reference_jobs: int = 3) -> dict:
    """Every variant's actor serves the same client sequence, interleaved client by client."""
    import ray

    data_local = load_federated(cfg.data, cfg.seed)
    probe = ClientWorker(cfg.model, cfg.data, cfg.train, cfg.seed, num_threads=1, data=data_local)
    method, state, ranks = method_for(cfg, probe)
    tokenizer = probe.trainer.tokenizer
    del probe
    gc.collect()

    actors = {v: _actor(cfg, v) for v in MEMORY_VARIANTS}
    pids = {v: ray.get(a.ping.remote())["pid"] for v, a in actors.items()}
    curves = {v: [{"clients": 0, **proc_memory(pids[v])}] for v in MEMORY_VARIANTS}
    job_s: dict[str, list[float]] = {v: [] for v in MEMORY_VARIANTS}
    order = torch.randperm(cfg.data.num_clients, generator=generator(cfg.seed, "bench-memory")).tolist()[:n_clients]
    heaviest, served, peaks_reset, all_starts = None, [], True, []
    t0 = time.perf_counter()
    for r0 in range(0, len(order), per_round):
        round_idx = r0 // per_round
        clients = sorted(order[r0:r0 + per_round])
        starts = [method.client_start(state, c, round_idx) for c in clients]
        all_starts.extend(starts)
        updates = []
        for i, s in enumerate(starts):
            size = job_footprint(tokenizer, s, data_local.clients[s.client_id].train, cfg)
            if heaviest is None or size > heaviest[0]:
                heaviest = (size, s)
            k = (r0 + i) % len(MEMORY_VARIANTS)
            for v in MEMORY_VARIANTS[k:] + MEMORY_VARIANTS[:k]:
                overall = proc_memory(pids[v])["hwm_mib"]  # the process's peak so far, before the reset
                peaks_reset &= reset_peak(pids[v])
                t1 = time.perf_counter()
                u = ray.get(actors[v].train.remote(s))
                job_s[v].append(time.perf_counter() - t1)
                mem = proc_memory(pids[v])
                mem["job_peak_mib"] = mem.pop("hwm_mib")
                mem["peak_so_far_mib"] = max(overall, mem["job_peak_mib"], curves[v][-1].get("peak_so_far_mib", 0))
                curves[v].append({"clients": len(curves[v]), "client": s.client_id, "rank": s.rank,
                                  "footprint": size, **mem})
                if v == "default":
                    updates.append(u)
            served.append((s.client_id, s.rank, size))
        state = method.aggregate(state, starts, updates).state
        print(f"  [memory] {len(served)}/{n_clients} clients ({time.perf_counter() - t0:.0f} s): " +
              ", ".join(f"{v} RSS {curves[v][-1]['rss_mib']:.0f} peak {curves[v][-1]['peak_so_far_mib']:.0f} MiB"
                        for v in MEMORY_VARIANTS), flush=True)
    for a in actors.values():
        ray.kill(a)

    del data_local
    # the 1-client reference: the shipped sequence's highest-peak jobs and the largest-footprint job, each on a
    # fresh actor of each variant that serves only that job
    by_client = {s.client_id: s for s in all_starts}
    ranked = sorted(curves["default"][1:], key=lambda p: -p["job_peak_mib"])
    picks = [heaviest[1].client_id] + [p["client"] for p in ranked if p["client"] != heaviest[1].client_id][
        :reference_jobs]
    out = {"clients": n_clients, "per_round": per_round, "local_steps": cfg.train.local_steps, "served": served,
           "peaks_reset_per_job": peaks_reset, "reference_jobs": [], "variants": {}}
    singles: dict[str, list[dict]] = {v: [] for v in MEMORY_VARIANTS}
    for c in picks:
        s = by_client[c]
        ref = {"client": c, "rank": s.rank, "round": s.round, "footprint": dict((x[0], x[2]) for x in served)[c],
               "largest_footprint": c == heaviest[1].client_id}
        for v in MEMORY_VARIANTS:
            one = _actor(cfg, v)
            pid1 = ray.get(one.ping.remote())["pid"]
            before = proc_memory(pid1)
            ray.get(one.train.remote(s))
            after = proc_memory(pid1)
            ray.kill(one)
            singles[v].append({"client": c, "before": before, "after": after})
            ref[f"{v}_peak_mib"] = after["hwm_mib"]
        out["reference_jobs"].append(ref)
        print(f"  [memory] 1-client worker, client {c}: " +
              ", ".join(f"{v} peak {ref[f'{v}_peak_mib']:.0f} MiB" for v in MEMORY_VARIANTS), flush=True)
    for v in MEMORY_VARIANTS:
        curve = curves[v]
        rss = [p["rss_mib"] for p in curve[1:]]
        job_peaks = [p["job_peak_mib"] for p in curve[1:]]
        xs = list(range(1, len(rss) + 1))
        tail = max(1, len(rss) // 5)  # slope over the clients after the first fifth
        worst_single = max(singles[v], key=lambda x: x["after"]["hwm_mib"])
        row = {"label": MEMORY_LABELS[v], "curve": curve, "job_s": job_s[v],
               "median_job_s": statistics.median(job_s[v]),
               "one_client": worst_single,
               "job_peak_first_mib": job_peaks[0], "job_peak_last_mib": job_peaks[-1],
               "job_peak_min_mib": min(job_peaks), "job_peak_max_mib": max(job_peaks),
               "peak_many_mib": curve[-1]["peak_so_far_mib"], "peak_one_mib": worst_single["after"]["hwm_mib"],
               "rss_after_1_mib": rss[0], "rss_after_last_mib": rss[-1], "rss_max_mib": max(rss),
               "anon_after_1_mib": curve[1]["anon_mib"], "anon_after_last_mib": curve[-1]["anon_mib"],
               "slope_mib_per_client": _slope(xs[tail:], rss[tail:]) if len(rss) - tail >= 2 else float("nan"),
               "slope_from_client": xs[tail] if len(xs) > tail else None}
        row["peak_ratio"] = row["peak_many_mib"] / row["peak_one_mib"]
        row["rss_ratio_last_vs_first"] = rss[-1] / rss[0]
        row["pass"] = row["peak_ratio"] <= 1.10 and row["rss_ratio_last_vs_first"] <= 1.10
        out["variants"][v] = row
    base = statistics.median(job_s["default"])
    for v in MEMORY_VARIANTS:
        pairs = [a / b for a, b in zip(job_s[v], job_s["default"])]
        out["variants"][v]["job_time_vs_default_same_client"] = statistics.median(pairs)
        out["variants"][v]["job_time_vs_default_medians"] = statistics.median(job_s[v]) / base
    out["pass"] = out["variants"]["default"]["pass"]
    return out


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


# ---- reporting ---------------------------------------------------------------------------------------------
def machine_info() -> dict:
    return _machine_info(torch_threads=torch.get_num_threads(), versions=package_versions())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--iterations", type=int, default=5, help="timed iterations of each variant (round-robin)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the worker's default: 1)")
    p.add_argument("--memory-clients", type=int, default=50)
    p.add_argument("--memory-per-round", type=int, default=10)
    p.add_argument("--memory-steps", type=int, default=3, help="local steps of each memory job")
    p.add_argument("--reference-jobs", type=int, default=3,
                   help="highest-peak jobs of the sequence re-run on fresh 1-client workers (the reference)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 steps, 2 iterations, 5 memory clients of 1 step, only the largest job as reference")
    p.add_argument("--out", default=None,
                   help="JSON output, the .md next to it (default benchmarks/results/worker.json; --quick: a temp folder)")
    p.add_argument("--render", metavar="JSON", help="only rewrite the markdown next to an existing result JSON")
    args = p.parse_args(argv)
    if args.render:
        return rerender(args.render, markdown)

    import ray

    t_wall = time.perf_counter()
    torch.set_num_threads(args.threads)
    # the plain loop is PEFT's own SEQ_CLS model (CLS pooler): the worker trains the same architecture
    overrides = ["model.pooling=cls"] + (["train.local_steps=2"] if args.quick else [])
    cfg = load_config(ROOT / args.config, overrides)
    iterations, mem_clients = (2, 5) if args.quick else (args.iterations, args.memory_clients)
    memory_steps, reference_jobs = (1, 0) if args.quick else (args.memory_steps, args.reference_jobs)
    argv_used = argv if argv is not None else sys.argv[1:]
    result: dict = {"command": " ".join(["python", "benchmarks/bench_worker.py"] + argv_used),
                    "machine": machine_info(), "threads": args.threads,
                    "config": {"path": args.config, "overrides": overrides, "batch_size": cfg.train.batch_size,
                               "local_steps": cfg.train.local_steps, "max_length": cfg.data.max_length,
                               "lr": cfg.train.lr, "model": cfg.model.name, "dataset": cfg.data.dataset}}
    print(f"machine: {result['machine']}", flush=True)
    # 3 logical CPUs: part (a) keeps 3 single-CPU actors alive (one job runs at a time; an idle actor uses no CPU)
    init_ray(num_cpus=3, num_gpus=0)  # as the tool starts Ray: worker processes at nice 0
    try:
        if not args.skip_throughput:
            result["throughput"] = throughput(cfg, iterations, args.warmup, not args.no_profile)
        if not args.skip_memory:
            mcfg = load_config(ROOT / args.config, ["model.pooling=cls",
                                                    f"data.num_clients={max(mem_clients, cfg.data.num_clients)}",
                                                    f"train.local_steps={memory_steps}"])
            result["memory"] = memory(mcfg, mem_clients, min(args.memory_per_round, mem_clients), reference_jobs)
    finally:
        ray.shutdown()
    result["machine"]["loadavg_end"] = load_average()
    result["wall_s"] = time.perf_counter() - t_wall
    print()
    print(render(result))
    write_result(result_path(args.out, "worker", args.quick), result, markdown(result))
    print(f"wall time {result['wall_s']:.1f} s")
    return result


if __name__ == "__main__":
    main()
