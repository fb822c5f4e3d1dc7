"""Driver benchmarks: overhead of a run over its ideal time, Ray workers vs a plain loop, and driver scaling.

Part (a), overhead. The default MiniLM config (``configs/minilm_fedplora.yaml``: 20 clients, 30% participation
= 6 clients per round, ranks 1/4/8, 10 local steps of batch 16, evaluation every 2 rounds on 500 examples,
noise metrics on, a checkpoint every round), shortened with ``--rounds`` (default 3: evaluations after rounds
2 and 3), run through the same calls as ``orchestrator.run.run`` (``Experiment`` -> ``step`` per round ->
``finish`` -> ``close``) with 2 workers. Ideal time = sum of client compute /
number of workers + aggregation + evaluation. Reported:

- ``summary.json``'s ``overhead_ratio`` (``outputs.summarize``: the caller's wall time of the rounds over the
  ideal) and ``overhead_ratio_with_startup``;
- per round: the wall time of ``Experiment.step`` as the caller sees it (the driver's round plus the Ray call,
  the appended round files and the checkpoint) over the ideal; the driver's own ``t_round`` over the ideal;
- including startup: ``ray.init`` + ``Experiment(...)`` (driver actor, worker actors, model and data loading)
  + the rounds + ``finish`` (adapter export, summary) + ``close``, over the same ideal.

Part (b), against a plain loop. The same run with 1 worker, and a plain single-process loop written here
(OpenFedLLM style): one process, one PEFT model (``get_peft_model`` on the same seeded MiniLM, one LoRA adapter
per client rank 1/4/8, the classifier in ``modules_to_save``), for each round: the same sampled clients
(stream (seed, "sample", round)), for each client: the Fed-PLoRA ``client_start`` (orchestrator.methods),
fold the unselected slots into the base weights, set the adapter and head, train the same batches (same seeds),
collect the factors; then ``method.aggregate``; evaluation on the global test set at the same rounds. The
plain loop runs with 1 torch thread (a worker's thread count; ``--plain-threads 1,2`` adds a 2-thread loop).
Ray is started by ``orchestrator.run.init_ray`` as the tool starts it (worker processes at nice 0, like
the plain loop); a third Ray run, ``ray, 2 workers, nice 15``, has its driver and worker actors reniced to
Ray's own default 15 right after start, to show what that setting changes (``--no-renice`` skips it). All variants run round-robin: round ``t`` of every variant
before round ``t + 1`` of any, the order rotating, so a load change of the shared machine hits every variant;
the Ray instance has 5 logical CPUs so the Ray runs coexist (an idle actor uses no CPU; each run is told its
cluster has 2 CPUs). The runs train the same numbers: their final accuracies and losses must agree.

Part (c), scale. ``Driver`` (in a fresh process per size, workers on the parent's Ray instance) with the tiny
random Llama (``model.name = tiny-llama``, classification on Rotten Tomatoes, 1 local step of batch 4) and 10,
100 and 1,000 clients at 10% participation, plus 1,000 clients at 1% (the same 10 participants as 100 clients
at 10%: isolates the dependence on the total number of clients). Every client has rank 4 = R (``ranks.distribution
= homogeneous``): with the default rank groups (1/4/8) a round's cost depends on which ranks were sampled (the
similarity metric is quadratic in the participants' rank sum; 49-148 ms per round for 10 participants in a trial
run), which would blur the comparison. Driver time per round = ``t_client_starts +
t_aggregate + t_metrics`` (median over rounds after the first); driver RSS (psutil, the driver process) after
init and after the last round; ``Driver.__init__`` time.

Run: ``python benchmarks/bench_driver.py`` (writes benchmarks/results/driver.{json,md});
``python benchmarks/bench_driver.py --quick`` (a smoke test: 2 rounds of 1 step, no nice-15 variant, part (c) with
10 clients for 2 rounds; writes to a temp folder);
``--render benchmarks/results/driver.json`` rewrites the Markdown only. The plain loop is in ``plain_loop.py``,
the rendering in ``render_driver.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

import psutil  # noqa: E402
import torch  # noqa: E402
from machine import load_average  # noqa: E402
from machine import machine_info as _machine_info  # noqa: E402
from plain_loop import PlainFederatedLoop, TimedRounds  # noqa: E402
from render_driver import markdown, render  # noqa: E402
from result_files import read_result, rerender, result_path, write_result  # noqa: E402

from core.synthetic import synthetic_update  # noqa: E402
from core.wire import ClientStart, ClientUpdate, ModuleSpec  # noqa: E402
from orchestrator.config import RunConfig, load_config  # noqa: E402
from orchestrator.methods import build_method  # noqa: E402
from orchestrator.outputs import package_versions  # noqa: E402
from orchestrator.ranks import assign_ranks  # noqa: E402
from orchestrator.run import init_ray  # noqa: E402

CONFIG = "configs/minilm_fedplora.yaml"
MiB = 2**20


# ---- the orchestrator, driven exactly as orchestrator.run.run drives it -------------------------------------
class OrchestratorRun(TimedRounds):
    """``Experiment`` + ``step`` + ``finish`` + ``close`` with caller-side timers."""

    label: str

    def __init__(self, label: str, cfg: RunConfig, out: Path, nice: int | None = None):
        import ray

        from orchestrator.run import Experiment

        super().__init__()
        self.label, self.cfg = label, cfg
        t0 = time.perf_counter()
        self.exp = Experiment(cfg, out, cluster_resources={"CPU": 2.0}, prefetch=False)  # each step times its own round
        self.t_startup = time.perf_counter() - t0
        # pids of the driver actor and its worker actors (untimed), and their niceness (init_ray: 0)
        self.pids = ray.get(self.exp.driver.__ray_call__.remote(
            lambda drv: [os.getpid()] + [ray.get(w.ping.remote())["pid"] for w in drv.pool.workers]))
        if nice is not None:  # Ray's own default niceness, for comparison (raising needs no privilege)
            for pid in self.pids:
                try:
                    psutil.Process(pid).nice(nice)
                except (psutil.AccessDenied, PermissionError):
                    pass
        self.nice = [psutil.Process(pid).nice() for pid in self.pids]

    def run_round(self) -> dict:
        return self.exp.step()

    def finish(self) -> dict:
        t0 = time.perf_counter()
        self.summary = self.exp.finish()
        self.t_finish = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.exp.close()
        self.t_close = time.perf_counter() - t0
        return self.summary


# ---- parts (a) and (b) ---------------------------------------------------------------------------------------
def overhead_and_plain(cfg_path: str, rounds: int, overrides: list[str], plain_threads: list[int],
                       t_ray_init: float, workdir: Path, renice: bool) -> dict:
    base = [f"rounds={rounds}", *overrides]
    variants: dict[str, object] = {}
    startup_order = []
    for label, extra, kind in (("ray, 2 workers", ["resources.num_workers=2"], "orch"),
                               *((("ray, 2 workers, nice 15", ["resources.num_workers=2"], "orch15"),) if renice else ()),
                               ("ray, 1 worker", ["resources.num_workers=1"], "orch"),
                               *((f"plain loop, {n} thread{'s' if n > 1 else ''}", [], f"plain{n}")
                                 for n in plain_threads)):
        cfg = load_config(ROOT / cfg_path, base + extra)
        gc.collect()
        print(f"  starting {label} (load {os.getloadavg()[0]:.2f})", flush=True)
        if kind.startswith("orch"):
            variants[label] = OrchestratorRun(label, cfg, workdir / label.replace(" ", "_").replace(",", ""),
                                              nice=15 if kind == "orch15" else None)
        else:
            variants[label] = PlainFederatedLoop(label, cfg, int(kind[5:]))
        startup_order.append(label)
        print(f"    startup {variants[label].t_startup:.1f} s", flush=True)
    labels = list(variants)
    loads = []
    for t in range(rounds):
        order = labels[t % len(labels):] + labels[:t % len(labels)]
        line = []
        for label in order:
            gc.collect()
            dt = variants[label].step()
            line.append(f"{label} {dt:.1f}s")
        loads.append(os.getloadavg()[0])
        print(f"  [round {t + 1}/{rounds}, load {loads[-1]:.2f}] " + ", ".join(line), flush=True)
    for label in labels:
        variants[label].finish()

    out = {"rounds": rounds, "overrides": base, "startup_order": startup_order, "round_order_rotates": True,
           "load_after_each_round": loads, "t_ray_init": t_ray_init, "variants": {}}
    for label, v in variants.items():
        row = {"t_startup": v.t_startup, "step_s": v.step_s, "rounds_wall_s": sum(v.step_s),
               "t_finish": v.t_finish, "t_close": v.t_close,
               "final_accuracy": next((r.get("accuracy") for r in reversed(v.records) if "accuracy" in r), None),
               "train_loss": [r["train_loss"] for r in v.records],
               "client_compute_sum_s": sum(r["t_client_compute_sum"] for r in v.records)}
        row["total_wall_s"] = v.t_startup + row["rounds_wall_s"] + v.t_finish + v.t_close + (
            t_ray_init if isinstance(v, OrchestratorRun) else 0.0)
        if isinstance(v, OrchestratorRun):
            row.update(overhead_of(v))
            row["nice_driver_and_workers"] = v.nice
        out["variants"][label] = row
    return out


def overhead_of(v: OrchestratorRun) -> dict:
    """Ideal and overhead ratios of one orchestrator run, from its records and caller-side timers."""
    recs, workers = v.records, v.summary["num_workers"]
    per_round = []
    for r, wall in zip(recs, v.step_s):
        ideal = r["t_client_compute_sum"] / workers + r["t_aggregate"] + r["t_eval"]
        durations = [row["compute_seconds"] for row in r["client_rows"]]
        makespan = greedy_makespan(durations, workers)
        per_round.append({
            "greedy_makespan_s": makespan, "ideal_greedy_s": makespan + r["t_aggregate"] + r["t_eval"],
            "lpt_makespan_s": greedy_makespan(sorted(durations, reverse=True), workers),
            "round": r["round"], "ideal_s": ideal, "step_wall_s": wall, "t_round": r["t_round"],
            "t_train_wall": r["t_train_wall"], "compute_sum": r["t_client_compute_sum"],
            "compute_max": r["t_client_compute_max"], "t_client_starts": r["t_client_starts"],
            "t_aggregate": r["t_aggregate"], "t_metrics": r["t_metrics"], "t_eval": r["t_eval"],
            "ratio_step_wall": wall / ideal, "ratio_t_round": r["t_round"] / ideal,
            "outside_driver_round_s": wall - r["t_round"]})
    ideal = sum(p["ideal_s"] for p in per_round)
    ideal_greedy = sum(p["ideal_greedy_s"] for p in per_round)
    ideal_summary = v.summary["ideal_seconds"]
    total = v.t_startup + sum(v.step_s) + v.t_finish + v.t_close
    return {
        "num_workers": workers, "per_round": per_round, "ideal_s": ideal, "ideal_summary_s": ideal_summary,
        "summary_overhead_ratio": v.summary["overhead_ratio"],
        "summary_overhead_ratio_with_startup": v.summary["overhead_ratio_with_startup"],
        "summary_round_seconds_total": v.summary["round_seconds_total"],
        "summary_wall_seconds": v.summary["wall_seconds"],
        "ratio_t_round_over_ideal": sum(p["t_round"] for p in per_round) / ideal,
        "ratio_rounds_wall_over_ideal": sum(v.step_s) / ideal,
        "ratio_rounds_wall_over_ideal_summary": sum(v.step_s) / ideal_summary,
        "ideal_greedy_s": ideal_greedy, "ratio_rounds_wall_over_ideal_greedy": sum(v.step_s) / ideal_greedy,
        "greedy_makespan_total": sum(p["greedy_makespan_s"] for p in per_round),
        "lpt_makespan_total": sum(p["lpt_makespan_s"] for p in per_round),
        "t_eval_total": sum(p["t_eval"] for p in per_round),
        "ratio_with_startup": total / ideal,
        "t_metrics_total": sum(p["t_metrics"] for p in per_round),
        "t_client_starts_total": sum(p["t_client_starts"] for p in per_round),
        "train_wall_total": sum(p["t_train_wall"] for p in per_round),
        "train_ideal_total": sum(p["compute_sum"] for p in per_round) / workers,
        "outside_driver_round_total": sum(p["outside_driver_round_s"] for p in per_round),
    }


def greedy_makespan(durations: list[float], workers: int) -> float:
    """Finish time of the pool's dispatch (jobs in order, each to the first free worker) with zero overhead."""
    free = [0.0] * workers
    for d in durations:
        i = min(range(workers), key=lambda k: free[k])
        free[i] += d
    return max(free)


# ---- part (c): scale ------------------------------------------------------------------------------------------
SCALE_RANK = 4  # every client at rank R = 4: a round's cost depends on its participants only, not on their rank mix


def scale_child(n_clients: int, participation: float, rounds: int, address: str) -> dict:
    """One Driver in this process (workers on the parent's Ray): driver time per round and driver memory."""
    import ray

    from orchestrator.driver import Driver

    torch.set_num_threads(1)
    proc = psutil.Process()
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    cfg = load_config(None, {
        "seed": 0, "rounds": rounds, "participation": participation, "eval_every": 10**6,
        "model.name": "tiny-llama", "data.dataset": "rotten_tomatoes", "data.num_clients": n_clients,
        "data.global_test_size": 50, "data.max_length": 32, "train.local_steps": 1, "train.batch_size": 4,
        "ranks.distribution": "homogeneous", "ranks.max_rank": SCALE_RANK, "resources.num_workers": 2})
    gc.collect()
    rss0 = proc.memory_info().rss / MiB
    t0 = time.perf_counter()
    driver = Driver(cfg, cluster_resources={"CPU": 2.0})
    t_init = time.perf_counter() - t0
    gc.collect()
    rss_init = proc.memory_info().rss / MiB
    rows = []
    for _ in range(rounds):
        rec = driver.run_round()
        rows.append({k: rec[k] for k in ("round", "clients", "mean_rank", "t_client_starts", "t_aggregate", "t_metrics",
                                         "t_eval", "t_train_wall", "t_round", "t_client_compute_sum")}
                    | {"rss_mib": proc.memory_info().rss / MiB})
    hwm = None
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    bookkeeping = bookkeeping_cost(rec, driver, cfg)
    driver.shutdown()
    for r in rows:
        r["driver_s"] = r["t_client_starts"] + r["t_aggregate"] + r["t_metrics"]
        r["driver_rest_s"] = r["t_round"] - r["t_train_wall"] - r["t_eval"]  # everything but training and eval
    timed = rows[1:] if len(rows) > 1 else rows
    return {"clients": n_clients, "participation": participation, "participants": cfg.clients_per_round,
            "rounds": rows, "t_init_s": t_init, "rss_before_mib": rss0, "rss_after_init_mib": rss_init,
            "rss_after_last_mib": rows[-1]["rss_mib"], "rss_peak_mib": hwm,
            "driver_s_median": statistics.median(r["driver_s"] for r in timed),
            "rank_sum_median": statistics.median(r["mean_rank"] * r["clients"] for r in timed),
            "client_start_s_median": statistics.median(r["t_client_starts"] for r in timed),
            "aggregate_s_median": statistics.median(r["t_aggregate"] for r in timed),
            "metrics_s_median": statistics.median(r["t_metrics"] for r in timed),
            "driver_rest_s_median": statistics.median(r["driver_rest_s"] for r in timed),
            "train_wall_s_median": statistics.median(r["t_train_wall"] for r in timed),
            "bookkeeping": bookkeeping}


BOOKKEEPING_ROUNDS = (10, 100, 500)


def bookkeeping_cost(record: dict, driver, cfg: RunConfig) -> list[dict]:
    """What ``Experiment.step`` adds after the driver's round once ``k`` rounds are done: the round's record
    appended to ``records.jsonl``, its rows appended to rounds.csv / clients.csv / similarity.csv
    (``RoundFiles.append``) and the checkpoint (state file + ``state.json``), timed at round ``k`` of a run
    whose earlier ``k - 1`` rounds are copies of a real record of this run.
    """
    from orchestrator.checkpoint import append_record, save_checkpoint
    from orchestrator.outputs import RoundFiles

    state, _ = driver.get_state()
    module = driver.modules[0].name
    out = []
    for k in BOOKKEEPING_ROUNDS:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "checkpoint"
            records = [dict(record, round=i + 1, client_rows=[dict(row, round=i + 1) for row in record["client_rows"]])
                       for i in range(k)]
            files = RoundFiles(Path(tmp), module)
            files.rewrite(records[:-1])
            for r in records[:-1]:
                append_record(folder, r)
            t0 = time.perf_counter()
            append_record(folder, records[-1])
            files.append(records)
            t1 = time.perf_counter()
            save_checkpoint(folder, state, {"round": k, "fingerprint": "x"})
            t2 = time.perf_counter()
            out.append({"rounds_done": k, "write_round_files_s": t1 - t0, "checkpoint_s": t2 - t1,
                        "clients_csv_rows": k * len(record["client_rows"]),
                        "records_jsonl_bytes": (folder / "records.jsonl").stat().st_size})
    return out


def scale(sizes: list[tuple[int, float]], rounds: int) -> list[dict]:
    import ray

    address = ray.get_runtime_context().gcs_address
    results = []
    for n, p in sizes:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        cmd = [sys.executable, str(Path(__file__).resolve()), "--scale-child", str(n), str(p), str(rounds),
               address, path]
        print(f"  [scale] {n} clients at {p:g} (load {os.getloadavg()[0]:.2f})", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"scale child {n} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        r = json.loads(Path(path).read_text())
        os.unlink(path)
        results.append(r)
        print(f"    participants {r['participants']}: driver {1e3 * r['driver_s_median']:.1f} ms/round "
              f"(client_start {1e3 * r['client_start_s_median']:.1f}, aggregate {1e3 * r['aggregate_s_median']:.1f}, "
              f"metrics {1e3 * r['metrics_s_median']:.1f}); init {r['t_init_s']:.1f} s; RSS "
              f"{r['rss_after_init_mib']:.0f} -> {r['rss_after_last_mib']:.0f} MiB", flush=True)
    return results


# ---- part (c), where the driver's round goes: each per-round metric vs participants ---------------------------
METRIC_SHAPES = {"tiny-llama": (2, (("q_proj", 64, 64), ("v_proj", 32, 64))),
                 "minilm": (6, (("query", 384, 384), ("value", 384, 384)))}


def trained(start: ClientStart) -> ClientUpdate:
    """Synthetic local training (``core.synthetic``): steps of 0.01, ``100 + client_id`` examples."""
    return synthetic_update(start, 0.01, 100 + start.client_id)


def cosine_similarity_pairwise(starts: list[ClientStart], updates: list[ClientUpdate], module: str, rank: int,
                               adapter: str = "main") -> torch.Tensor:
    """The pair-by-pair loop ``module_cosine_similarity`` used before its Gram-matrix form (for comparison)."""
    rows: dict[int, list[tuple[int, torch.Tensor]]] = {}
    by_id = {s.client_id: s for s in starts}
    for u in updates:
        init = by_id[u.client_id].adapters[adapter][module]
        A = u.adapters[adapter][module][1].to(torch.float64)
        for i, slot in enumerate(init.slots):
            if slot is not None and slot < rank:
                rows.setdefault(slot, []).append((u.client_id, A[i] / A[i].norm().clamp_min(1e-300)))
    sums = torch.zeros(rank, rank, dtype=torch.float64)
    counts = torch.zeros(rank, rank, dtype=torch.float64)
    for j, left in rows.items():
        for jj, right in rows.items():
            for ci, a in left:
                for cj, b in right:
                    if ci != cj:
                        sums[j, jj] += a @ b
                        counts[j, jj] += 1
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


def metrics_breakdown(participants: list[int], repeats: int = 1) -> list[dict]:
    """Each per-round measurement of ``Driver.run_round`` (metrics.noise + similarity), timed separately on a
    Fed-PLoRA round-1 state with synthetic updates (ranks 1/4/8 groups, R = 8).
    """
    from orchestrator.method_config import MethodConfig
    from orchestrator.metrics import (
        aggregation_noise,
        fedplora_rankwise_noise,
        init_noise_function,
        init_noise_param,
        module_cosine_similarity,
    )
    from orchestrator.ranks import RankConfig

    out = []
    for shape, (layers, mods) in METRIC_SHAPES.items():
        specs = [ModuleSpec(f"layers.{i}.{n}", d, k) for i in range(layers) for n, d, k in mods]
        for P in participants:
            ranks = assign_ranks(RankConfig(distribution="groups", max_rank=8, mid_rank=4), P, 0)
            m = build_method(MethodConfig(name="fedplora"), specs, ranks, 8, 0)
            st0 = m.init_global()
            s0 = [m.client_start(st0, c, 0) for c in range(P)]
            state = m.aggregate(st0, s0, [trained(x) for x in s0]).state
            starts = [m.client_start(state, c, 1) for c in range(P)]
            updates = [trained(x) for x in starts]
            agg = m.aggregate(state, starts, updates)
            module = specs[0].name
            calls = {
                "init_noise_function": lambda: sum(init_noise_function(m.global_delta(state), x) for x in starts),
                "init_noise_param": lambda: [init_noise_param(m.global_factors(state), x) for x in starts],
                "aggregation_noise": lambda: aggregation_noise(m.global_delta(agg.state), starts, updates,
                                                               agg.weights),
                "fedplora_rankwise_noise": lambda: fedplora_rankwise_noise(starts, updates),
                "module_cosine_similarity": lambda: module_cosine_similarity(starts, updates, module, 8),
                "similarity, pairwise loop (before)": lambda: cosine_similarity_pairwise(starts, updates, module, 8),
            }
            row = {"shape": shape, "participants": P, "ms": {}}
            for name, fn in calls.items():
                times = []
                for _ in range(repeats):
                    gc.collect()
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                row["ms"][name] = 1e3 * min(times)
            ref = module_cosine_similarity(starts, updates, module, 8)
            loop = cosine_similarity_pairwise(starts, updates, module, 8)
            both = ~torch.isnan(ref)
            row["pairwise_max_abs_diff"] = float((ref[both] - loop[both]).abs().max())
            row["pairwise_same_nan"] = bool(torch.equal(torch.isnan(ref), torch.isnan(loop)))
            out.append(row)
            print(f"  [metrics] {shape} {P} participants: " +
                  ", ".join(f"{k} {v:.1f} ms" for k, v in row["ms"].items()), flush=True)
    return out


# ---- reporting ------------------------------------------------------------------------------------------------
def machine_info() -> dict:
    return _machine_info(versions=package_versions())


def _speedups(key: str, slow: dict, fast: dict) -> dict:
    """``slow`` / ``fast``: rounds wall, median of same-round ratios, total wall including startup."""
    return {key: slow["rounds_wall_s"] / fast["rounds_wall_s"],
            f"{key}_same_round": statistics.median(b / a for a, b in zip(fast["step_s"], slow["step_s"])),
            f"{key}_total": slow["total_wall_s"] / fast["total_wall_s"]}


def compare(ab: dict) -> dict:
    V = ab["variants"]
    one, two, p1 = V["ray, 1 worker"], V["ray, 2 workers"], V["plain loop, 1 thread"]
    out = {
        "one_worker_over_plain": one["rounds_wall_s"] / p1["rounds_wall_s"],
        "one_worker_over_plain_same_round": statistics.median(a / b for a, b in zip(one["step_s"], p1["step_s"])),
        "one_worker_over_plain_total": one["total_wall_s"] / p1["total_wall_s"],
    }
    out.update(_speedups("speedup_two_workers", p1, two))
    if "ray, 2 workers, nice 15" in V:
        out.update(_speedups("speedup_two_workers_nice15", p1, V["ray, 2 workers, nice 15"]))
    p2 = V.get("plain loop, 2 threads")
    if p2:
        out.update({k: v for k, v in _speedups("speedup_two_workers_vs_plain2", p2, two).items()
                    if not k.endswith("_total")})
        out["plain2_over_plain1"] = p2["rounds_wall_s"] / p1["rounds_wall_s"]
    out["pass_one_worker"] = out["one_worker_over_plain"] <= 1.10
    out["pass_two_workers"] = out["speedup_two_workers"] >= 1.6
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--scale-child":
        n, p, rounds, address, path = argv[1:6]
        r = scale_child(int(n), float(p), int(rounds), address)
        Path(path).write_text(json.dumps(r))
        return r
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the MiniLM runs (parts a, b)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config overrides of the MiniLM runs")
    ap.add_argument("--plain-threads", default="1", help="torch threads of the plain-loop variants, e.g. 1,2")
    ap.add_argument("--no-renice", action="store_true",
                    help="skip the 2-worker variant whose actors are reniced to Ray's default 15")
    ap.add_argument("--scale-sizes", default="10:0.1,100:0.1,1000:0.1,1000:0.01",
                    help="total clients:participation of part (c)")
    ap.add_argument("--scale-rounds", type=int, default=5)
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 rounds of 1 step, no nice-15 variant, scale 10 clients for 2 rounds")
    ap.add_argument("--out", default=None,
                    help="JSON output, the .md next to it (default benchmarks/results/driver.json; --quick: a temp folder)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the markdown next to an existing result JSON")
    ap.add_argument("--update", action="store_true",
                    help="keep the parts of the existing --out JSON that this invocation skips (e.g. rerun part c only)")
    args = ap.parse_args(argv)
    if args.render:
        return rerender(args.render, markdown)

    import ray

    t_wall = time.perf_counter()
    torch.set_num_threads(1)
    rounds, overrides = args.rounds, list(args.overrides)
    sizes = [(int(a), float(b)) for a, b in (s.split(":") for s in args.scale_sizes.split(","))]
    scale_rounds = args.scale_rounds
    renice, breakdown = not args.no_renice, [10, 30, 100]
    if args.quick:
        rounds, overrides = 2, overrides + ["train.local_steps=1", "data.global_test_size=50"]
        sizes, scale_rounds, renice, breakdown = [(10, 0.1)], 2, False, [10]
    result: dict = {"command": " ".join(["python", "benchmarks/bench_driver.py"] + argv), "machine": machine_info()}
    print(f"machine: {result['machine']}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_driver_"))
    t0 = time.perf_counter()
    # 5 logical CPUs: the 2-worker, 2-worker nice-0 and 1-worker runs coexist (each is told its cluster has 2
    # CPUs; one run trains at a time, idle actors use no CPU)
    init_ray(num_cpus=5, num_gpus=0)
    t_ray_init = time.perf_counter() - t0
    try:
        if not args.skip_overhead:
            threads = [int(x) for x in args.plain_threads.split(",") if x]
            ab = overhead_and_plain(args.config, rounds, overrides, threads, t_ray_init, workdir, renice)
            if "plain loop, 1 thread" in ab["variants"]:
                ab["comparison"] = compare(ab)
            result["overhead"] = ab
        if not args.skip_scale:
            res = scale(sizes, scale_rounds)
            result["scale"] = {"rounds": scale_rounds, "results": res,
                               "metrics": metrics_breakdown(breakdown)}
    finally:
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"]["loadavg_end"] = load_average()
    result["wall_s"] = time.perf_counter() - t_wall
    print()
    print(render(result))
    out_path = result_path(args.out, "driver", args.quick)
    if args.update and out_path.is_file():
        old = read_result(out_path)
        for part in ("overhead", "scale"):
            if part not in result and part in old:
                result[part] = old[part]
        result["runs"] = old.get("runs", []) + [{k: old[k] for k in ("command", "machine", "wall_s") if k in old}]
    write_result(out_path, result, markdown(result))
    print(f"wall time {result['wall_s']:.1f} s")
    return result


if __name__ == "__main__":
    main()
