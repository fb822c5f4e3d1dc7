"""System heterogeneity in real runs on Ray: empty rounds keep the state, results do not depend on workers."""

import copy

import pandas as pd
import pytest
import torch
from ray_helpers import local_ray

from core.rng import generator
from orchestrator.config import load_config
from orchestrator.driver import Driver
from orchestrator.method_config import MethodConfig
from orchestrator.methods import build_method
from orchestrator.methods.registry import available_methods
from orchestrator.system_model import SystemModel, job_work
from tests.method_helpers import random_state
from tests.test_driver import assert_same_run, run_quiet

pytestmark = pytest.mark.slow

SMOKE = "configs/tiny_llama_smoke.yaml"


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield from local_ray(num_cpus=2)


def test_round_where_every_client_drops_out_keeps_the_state_of_every_method():
    # Prepare: nobody answers; eval every 2 rounds, so round 1 runs no job at all
    cfg = load_config(SMOKE, ["rounds=2", "eval_every=2", "system.availability=0.0", "resources.num_workers=1",
                              "ranks.distribution=homogeneous", "ranks.rank=2", "ranks.max_rank=2"])
    driver = Driver(cfg)
    try:
        for name in available_methods():
            method = build_method(MethodConfig(name=name), driver.modules, driver.client_ranks, 2, cfg.seed)
            driver.method = method  # the driver's own build step, once per registered method
            state = random_state(method, seed=3)
            state.meta["marker"] = [1, 2]
            before, meta = {k: v.clone() for k, v in state.tensors.items()}, copy.deepcopy(state.meta)
            driver.set_state(state, 0)
            # Execute
            record = driver.run_round()
            # Assert
            after, completed = driver.get_state()
            assert completed == 1 and after.meta == meta, name
            assert after.tensors.keys() == before.keys(), name
            for k in before:
                assert torch.equal(after.tensors[k], before[k]), (name, k)
            assert record["updates"] == 0 and record["clients"] == 0 and record["sampled"] == 3, name
            assert record["note"] == "no client update arrived: global state unchanged"
            assert {r["outcome"] for r in record["client_rows"]} == {"unavailable"}
    finally:
        driver.shutdown()


def test_stragglers_deadline_and_dropouts_same_for_1_and_2_workers(tmp_path):
    options = ["system.speed=lognormal", "system.speed_spread=1.0", "system.deadline=30", "system.over_selection=0.5",
               "system.availability=0.8"]
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}"
        run_quiet(load_config(SMOKE, ["rounds=2", f"resources.num_workers={workers}", *options]), outs[workers])
    assert_same_run(outs[1], outs[2])

    # the outcomes recorded are the system model's, recomputed here from the seed alone
    cfg = load_config(SMOKE, ["rounds=2", *options])
    sizes = pd.read_csv(outs[1] / "partition.csv").set_index("client")["n_train"].to_dict()
    sm = SystemModel(cfg.system, cfg.seed, 6, cfg.clients_per_round,
                     [job_work(cfg.train.total_steps(sizes[c]), cfg.train.batch_size) for c in range(6)])
    clients, rounds = pd.read_csv(outs[1] / "clients.csv"), pd.read_csv(outs[1] / "rounds.csv")
    reasons = set()
    for t in range(2):
        perm = torch.randperm(6, generator=generator(cfg.seed, "sample", t))
        plan = sm.plan(t, perm[: sm.num_sampled].tolist())
        rows = clients[clients["round"] == t + 1]
        assert dict(zip(rows["client"], rows["outcome"])) == plan.outcome
        assert sorted(rows.loc[rows["outcome"] == "used", "client"]) == list(plan.kept)
        row = rounds[rounds["round"] == t + 1].iloc[0]
        assert row["updates"] == len(plan.kept) and row["sim_round_seconds"] == pytest.approx(plan.round_seconds)
        reasons |= set(plan.outcome.values())
    assert {"used", "deadline"} <= reasons  # the setting exercises partial aggregation
