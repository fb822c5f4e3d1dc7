"""Errors cross process boundaries: every project exception pickles; a client failure reaches the user named."""

import importlib
import inspect
import os
import pickle
import pkgutil
import types
import typing
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "workers", "orchestrator", "analysis", "sweeps")


def project_exception_classes() -> list[type]:
    """Every BaseException subclass defined in the project's packages (each module imported)."""
    found = {}
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__.split(".")[0] in PACKAGES:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


SAMPLES = {str: "bad thing", int: 3, float: 0.5, BaseException: ValueError("the cause"), Path: Path("/x/y")}


def sample_args(cls: type) -> list:
    """Arguments of the right types for ``cls.__init__`` (one message string for a plain exception)."""
    init = cls.__init__
    if init in (BaseException.__init__, Exception.__init__) or not hasattr(init, "__code__"):
        return ["a message naming data.path"]
    hints = typing.get_type_hints(init)
    args = []
    for name, param in inspect.signature(init).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(name, str)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        args.append(next(v for k, v in SAMPLES.items() if isinstance(hint, type) and issubclass(hint, k)))
    return args


def comparable(value):
    if isinstance(value, BaseException):
        return type(value), value.args
    return value


def test_the_walk_finds_the_classes_that_cross_ray():
    names = {c.__name__ for c in project_exception_classes()}
    assert {"ClientJobError", "InvalidClientUpdate", "WorkerStartupError", "RunSetupError", "SweepSpecError",
            "InjectedFault", "RemoteActorDied"} <= names


@pytest.mark.parametrize("cls", project_exception_classes(), ids=lambda c: c.__name__)
def test_every_project_exception_survives_pickling(cls):
    err = cls(*sample_args(cls))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err) and str(err)
    assert {k: comparable(v) for k, v in vars(back).items()} == {k: comparable(v) for k, v in vars(err).items()}


def test_client_job_error_message_names_client_round_and_cause():
    from orchestrator.pool import ClientJobError
    from orchestrator.update_checks import InvalidClientUpdate

    err = pickle.loads(pickle.dumps(ClientJobError("client 3 in round 2", ValueError("bad row"))))
    assert str(err) == "client 3 in round 2 failed: ValueError: bad row"
    assert err.label == "client 3 in round 2" and isinstance(err.cause, ValueError)
    bad = pickle.loads(pickle.dumps(InvalidClientUpdate(4, "train_loss is nan", 7)))
    assert str(bad) == "client 4 in round 7: train_loss is nan" and bad.client_id == 4 and bad.round_idx == 7


# ------------------------------------------------------------------------------ end to end, through Ray
SMOKE = "configs/tiny_llama_smoke.yaml"


def first_sampled_client(seed: int = 0, num_clients: int = 6, per_round: int = 3) -> int:
    """The lowest client id the Driver samples in round 1 (its rule: ``Driver.sample_clients``)."""
    from core.rng import generator

    return sorted(torch.randperm(num_clients, generator=generator(seed, "sample", 0))[:per_round].tolist())[0]


@pytest.fixture(scope="module")
def faulty_ray():
    """A Ray instance whose workers fail the first sampled client of round 1 (``workers.faults``)."""
    import ray

    from workers.faults import ENV

    if ray.is_initialized():
        ray.shutdown()
    client = first_sampled_client()
    os.environ[ENV] = f"{client}:1"
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield client
    ray.shutdown()
    os.environ.pop(ENV, None)


@pytest.mark.slow
def test_client_failure_through_the_driver_actor_names_client_and_round(faulty_ray, tmp_path):
    from orchestrator.config import load_config
    from orchestrator.pool import ClientJobError
    from orchestrator.run import run

    cfg = load_config(SMOKE, ["rounds=2", "resources.num_workers=1"])
    with pytest.raises(ClientJobError) as info:
        run(cfg, tmp_path / "run", log=lambda _: None)
    assert str(info.value).startswith(f"client {faulty_ray} in round 1 failed: InjectedFault: injected fault")
    assert "Ray" not in type(info.value).__name__ and isinstance(info.value.cause, RuntimeError)


@pytest.mark.slow
def test_client_failure_in_a_tune_trial_reaches_trial_json_trials_parquet_and_console(faulty_ray, tmp_path):
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec
    from sweeps.trials import expand

    spec = parse_spec({"name": "fail", "base_config": str(REPO / SMOKE),
                       "base": {"rounds": 2, "resources": {"num_workers": 1, "device": "cpu"}}})
    trials = expand(spec)
    lines: list[str] = []
    table = run_sweep(spec, {}, trials, tmp_path / "sweep", log=lines.append, summary_every=1e9)
    expected = f"client {faulty_ray} in round 1 failed: InjectedFault"
    row = table.iloc[0]
    assert row["status"] == "error" and expected in row["error"], row["error"]
    stored = pd.read_parquet(tmp_path / "sweep" / "trials.parquet").iloc[0]
    assert expected in stored["error"]
    console = "\n".join(lines)
    assert expected in console and "RaySystemError" not in console and "deserializ" not in console.lower()


@pytest.fixture(scope="module")
def faulty_driver(faulty_ray):
    """A Driver on ``faulty_ray`` with 2 workers whose rounds train packs of 2 clients."""
    from orchestrator.config import load_config
    from orchestrator.driver import Driver

    driver = Driver(load_config(SMOKE, ["rounds=2", "resources.num_workers=2", "resources.clients_per_worker=2"]))
    yield driver
    driver.shutdown()


@pytest.mark.slow
def test_client_failure_inside_a_pack_names_the_pack_the_client_and_round(faulty_ray, faulty_driver):
    from orchestrator.pool import ClientJobError

    pack = faulty_driver.sample_clients(0)[:2]  # the failing client is the first of round 1: pack 0
    with pytest.raises(ClientJobError) as info:
        faulty_driver.run_round()
    assert str(info.value).startswith(f"clients {pack[0]}, {pack[1]} in round 1 (pack 0) failed: InjectedFault: "
                                      "injected fault")
    assert str(info.value).endswith(f"client {faulty_ray} fails in round 1") and faulty_driver.round == 0


@pytest.mark.slow
def test_worker_restarts_during_evaluation_are_counted(faulty_driver):
    import ray

    driver = faulty_driver
    clean = driver.evaluate()
    assert clean["worker_restarts"] == 0
    replaced = driver.pool.replaced
    ray.kill(driver.pool.workers[0], no_restart=True)  # dead before the evaluation's first job reaches it
    again = driver.evaluate()
    assert again["worker_restarts"] == 1 and driver.pool.replaced == replaced + 1
    assert again["rouge_l"] == clean["rouge_l"] and again["eval_loss"] == clean["eval_loss"]
