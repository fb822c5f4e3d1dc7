"""A real two-node Ray cluster on this machine: a sweep trial spread over both nodes survives losing one.

The head and a second node are separate raylets (``ray.cluster_utils.Cluster``, head on a free port), with
2 and 1 CPUs. A sweep runs through the command line with ``--address``, ``--placement SPREAD`` and
``--max-failures 2``; its one trial has two 1-CPU workers, one per node. Once the trial has checkpointed a
round, the second node is killed (all its processes). The trial must carry on from its last checkpoint on
the head alone and end with exactly the numbers of an uninterrupted run of the same config.
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
        "base": {"rounds": 4, "data": {"max_examples": 120, "global_test_size": 16},
                 "train": {"local_steps": 6}, "resources": {"num_workers": 2, "device": "cpu"}},
        "axes": {"variants": [{"label": "Fed-PLoRA", "set": {"method.name": "fedplora"}}], "seeds": [0]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "gcs_server_port": _free_port(), "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster, second
    finally:
        cluster.shutdown()


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
    cluster, second = two_nodes
    spec_file, out = tmp_path / "spec.yaml", tmp_path / "sweep"
    spec_file.write_text(yaml.safe_dump(SPEC))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps.run", "--config", str(spec_file), "--out", str(out), "--address",
         cluster.address, "--placement", "SPREAD", "--max-failures", "2", "--summary-every", "3600"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # Execute: kill the second node once a round is checkpointed (checkpoint_every = 1)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and _trial_state(out).get("rounds_completed", 0) < 1:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        before = _trial_state(out)
        killed_at, t_kill = before["rounds_completed"], time.time()
        cluster.remove_node(second, allow_graceful=False)
        resumed_round = None
        while proc.poll() is None and time.time() < deadline:
            state = _trial_state(out)
            if resumed_round is None and state.get("rounds_completed", 0) > killed_at:
                resumed_round = time.time()
            time.sleep(0.05)
        output = proc.communicate(timeout=max(1.0, deadline - time.time()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]

    # Assert: the workers were on both nodes before the kill, on the head alone after it
    state = _trial_state(out)
    placements = state["placements"]
    head_id, second_id = cluster.head_node.node_id, second.node_id
    assert sorted(placements[0]["worker_nodes"]) == sorted([head_id, second_id]), placements
    assert state["status"] == "completed" and state["rounds_completed"] == 4
    retried = state["attempts"] > 1
    if retried:  # Tune restarted the trial: from its checkpoint, on the head alone
        assert placements[-1]["worker_nodes"] == [head_id, head_id] and placements[-1]["from_round"] >= killed_at
    else:  # the trial's driver lived on the head: its pool replaced the lost worker there, within the round
        assert pd.read_csv(out / "trials" / TRIAL / "rounds.csv")["worker_restarts"].sum() >= 1
    recovery = (resumed_round or time.time()) - t_kill
    with capsys.disabled():
        print(f"\nnode lost after round {killed_at}; {'trial restarted by Tune' if retried else 'worker replaced'}"
              f" (attempts {state['attempts']}); next round completed {recovery:.1f} s after the kill")

    # the same numbers as an uninterrupted run of the trial's config on what is left of the cluster
    import ray

    from orchestrator.config import RunConfig, build
    from orchestrator.run import run

    saved = yaml.safe_load((out / "trials" / TRIAL / "config.yaml").read_text())
    cfg = build(RunConfig, {k: v for k, v in saved.items() if k != "fingerprint"})
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    try:
        run(cfg, tmp_path / "uninterrupted", log=lambda _: None)
    finally:
        ray.shutdown()
    _compare(out / "trials" / TRIAL, tmp_path / "uninterrupted")
