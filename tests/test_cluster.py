"""A real two-node Ray cluster on this machine: a sweep trial spread over both nodes survives losing one.

The head and a second node are separate raylets (``ray.cluster_utils.Cluster``, GCS on a free port) with 4
and 3 logical CPUs. A sweep runs through the command line with ``--address``, ``--placement SPREAD``,
``--driver-cpus 2`` and ``--max-failures 2``; its one trial reserves bundles of 2 (trainable), 1 and 1
(workers) CPUs. While the trial starts, another actor holds 3 of the head's CPUs, so the trainable's
bundle and one worker's land on the second node and the other worker on the head (no single node has
room for all three). Once the trial has checkpointed a round, the holder is released and the second
node killed (all its processes, no grace): the trial dies with its trainable, Tune restarts it on the
head alone, it resumes from its last checkpoint and must end with exactly the numbers of an uninterrupted
run of the same config.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from orchestrator.checkpoint import state_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TRIAL = "000-fed-plora-s0"
SPEC = {"name": "two_nodes", "base_config": str(REPO / "configs" / "tiny_llama_smoke.yaml"),
        "base": {"rounds": 3, "data": {"max_examples": 120, "global_test_size": 16},
                 "train": {"local_steps": 6}, "resources": {"num_workers": 2, "cpus_per_worker": 1.0, "device": "cpu"}},
        "axes": {"variants": [{"label": "Fed-PLoRA", "set": {"method.name": "fedplora"}}], "seeds": [0]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def two_nodes(monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_health_check_period_ms", "500")  # notice the lost node within seconds
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "gcs_server_port": _free_port(), "include_dashboard": False})
    second = cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    try:
        yield cluster, second
    finally:
        ray.shutdown()
        cluster.shutdown()


def _hold_head_cpus(cluster, cpus: float):
    """An actor pinned to the head that holds ``cpus`` of its CPUs until killed."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.options(num_cpus=cpus, scheduling_strategy=NodeAffinitySchedulingStrategy(
        cluster.head_node.node_id, soft=False)).remote()
    ray.get(holder.ready.remote())
    return holder



def _trial_state(out: Path) -> dict:
    try:
        return json.loads((out / "trials" / TRIAL / "trial.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _compare(a: Path, b: Path) -> None:
    sa, sb = load_file(str(state_file(a / "checkpoint"))), load_file(str(state_file(b / "checkpoint")))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    volatile = ("compute_seconds", "restarts", "worker_restarts")
    for name in ("rounds.csv", "clients.csv"):
        fa, fb = (pd.read_csv(x / name) for x in (a, b))
        fa, fb = (f.drop(columns=[c for c in f.columns if c.startswith("t_") or c in volatile]) for f in (fa, fb))
        pd.testing.assert_frame_equal(fa, fb)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "examples.parquet"), pd.read_parquet(b / "examples.parquet"))


def test_trial_spread_over_two_nodes_survives_losing_one(two_nodes, tmp_path, capsys):
    import ray

    from orchestrator.config import RunConfig, build
    from orchestrator.run import run

    # Prepare
    cluster, second = two_nodes
    head_id, second_id = cluster.head_node.node_id, second.node_id
    holder = _hold_head_cpus(cluster, 3)
    spec_file, out = tmp_path / "spec.yaml", tmp_path / "sweep"
    spec_file.write_text(yaml.safe_dump(SPEC))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps.run", "--config", str(spec_file), "--out", str(out), "--address",
         cluster.address, "--placement", "SPREAD", "--driver-cpus", "2", "--max-failures", "2",
         "--summary-every", "3600"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # Execute: once round 1 is checkpointed (checkpoint_every = 1), free the head and kill the second node
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and _trial_state(out).get("rounds_completed", 0) < 1:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        killed_at = _trial_state(out)["rounds_completed"]
        ray.kill(holder)
        t_kill = time.time()
        cluster.remove_node(second, allow_graceful=False)
        next_round = None
        while proc.poll() is None and time.time() < deadline:
            if next_round is None and _trial_state(out).get("rounds_completed", 0) > killed_at:
                next_round = time.time()
            time.sleep(0.05)
        output = proc.communicate(timeout=max(1.0, deadline - time.time()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]

    # Assert: first attempt on both nodes (trainable on the second), the restart on the head alone
    state = _trial_state(out)
    first, last = state["placements"][0], state["placements"][-1]
    assert first["trainable_node"] == second_id and sorted(first["worker_nodes"]) == sorted([head_id, second_id])
    assert state["attempts"] == 2 and state["status"] == "completed" and state["rounds_completed"] == 3
    assert last["trainable_node"] == head_id and last["worker_nodes"] == [head_id, head_id]
    assert killed_at <= last["from_round"] < 3  # resumed from its checkpoint, not from round 0
    restart = state["started_at"] - t_kill
    recovery = (next_round or time.time()) - t_kill
    with capsys.disabled():
        print(f"\nnode lost after round {killed_at}: Tune restarted the trial {restart:.1f} s after the kill "
              f"(setup {state['setup_seconds']:.1f} s), resumed from round {last['from_round']}; next round "
              f"done {recovery:.1f} s after the kill")

    # the same numbers as an uninterrupted run of the trial's config on what is left of the cluster
    saved = yaml.safe_load((out / "trials" / TRIAL / "config.yaml").read_text())
    run(build(RunConfig, {k: v for k, v in saved.items() if k != "fingerprint"}), tmp_path / "whole",
        log=lambda _: None)
    _compare(out / "trials" / TRIAL, tmp_path / "whole")
