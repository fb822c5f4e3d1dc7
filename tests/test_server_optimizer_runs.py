"""Server optimizers and FedProx in real runs on the tiny Llama: every method x every optimizer, resume, workers."""

import dataclasses

import pytest
import torch
from method_helpers import ranks_for
from ray_helpers import local_ray
from test_driver import assert_same_run, final_state, run_quiet, smoke

from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.driver import Driver
from orchestrator.method_config import MethodConfig
from orchestrator.methods import available_methods, build_method
from orchestrator.run import main
from orchestrator.server_optimizer import MOMENT_PREFIX, SERVER_OPTIMIZERS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield from local_ray(num_cpus=2)


@pytest.fixture(scope="class")
def driver():
    """One driver and its 2 workers (both CPUs) for every (method, optimizer): no evaluation within 2 rounds."""
    d = Driver(smoke("train.local_steps=1", "train.batch_size=4", "eval_every=100", "metrics.similarity_module=null",
                     rounds=100))
    yield d
    d.shutdown()


def use(driver, name, optimizer):
    """Point ``driver`` at a fresh run of ``name`` with ``optimizer`` (the workers are method-agnostic)."""
    cfg = dataclasses.replace(driver.cfg, method=MethodConfig(name=name, server_optimizer=optimizer))
    R = cfg.ranks.max_rank
    ranks = ranks_for(name, driver.client_ranks, top=R)
    driver.cfg = cfg
    driver.method = build_method(cfg.method, driver.modules, ranks, R, cfg.seed)
    driver.set_state(driver.method.init_global(driver.initial_head), 0)


def without_timings(record):
    return {k: v for k, v in record.items() if not k.startswith("t_") and k != "client_rows"}


def assert_same_state(a, b):
    assert a.tensors.keys() == b.tensors.keys() and a.meta == b.meta
    for k, v in a.tensors.items():
        assert torch.equal(b.tensors[k], v), k


class TestEveryMethodWithEveryOptimizer:
    """Its driver is released after the class, so the later runs get the CPUs."""

    @pytest.mark.parametrize("optimizer", SERVER_OPTIMIZERS)
    @pytest.mark.parametrize("name", available_methods())
    def test_resumes_exactly(self, driver, name, optimizer, tmp_path):
        # Execute: 2 uninterrupted rounds, checkpointing after round 1
        use(driver, name, optimizer)
        driver.run_round()
        save_checkpoint(tmp_path, driver.state, {"round": 1})
        second = driver.run_round()
        whole = driver.state
        # ... then a resumed run: a fresh method object, the checkpoint read back, round 2 again
        use(driver, name, optimizer)
        state, info = load_checkpoint(tmp_path)
        driver.set_state(state, info["round"])
        again = driver.run_round()

        # Assert: bitwise the uninterrupted run; the moments are in the state (none with avg)
        assert_same_state(whole, driver.state)
        assert without_timings(again) == without_timings(second)
        moments = [k for k in whole.tensors if k.startswith(MOMENT_PREFIX)]
        assert (not moments) if optimizer == "avg" else moments
        if optimizer == "avg":  # today's path: the aggregate itself, exactly what skipping the step gives
            use(driver, name, optimizer)
            driver.method.server_step = lambda old, new: new
            driver.run_round()
            driver.run_round()
            assert_same_state(whole, driver.state)


def test_adaptive_optimizer_with_fedprox_resumed_on_1_worker_equals_2_workers_uninterrupted(tmp_path):
    # Prepare: FlexLoRA (the dense SVD path) with FedYogi on the server and FedProx on the clients
    opts = ["method.name=flexlora", "method.server_optimizer=yogi", "method.server_lr=0.02", "train.prox_mu=0.1",
            "train.local_steps=3"]
    ref, part = tmp_path / "ref", tmp_path / "part"

    # Execute: 2 rounds uninterrupted on 2 workers; 1 round on 1 worker, then resumed to 2 (still 1 worker)
    run_quiet(smoke(*opts, rounds=2), ref)
    run_quiet(smoke(*opts, "resources.num_workers=1", rounds=1), part)
    assert main(["--resume", str(part), "--set", "rounds=2"]) == 0

    # Assert: bitwise the same run (state with its moments, metrics, clients, per-example rows)
    assert_same_run(ref, part)
    assert any(k.startswith(MOMENT_PREFIX) for k in final_state(part))
