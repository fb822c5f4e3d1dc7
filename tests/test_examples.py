"""The examples/ folder runs: each example is executed here with fast settings (tiny model, 1 round).

Fast tier: the plugin method's math (bit-equal to a Fed-PLoRA ablation), the ``plugins`` key and flag, the
CSV example's data. Slow tier (Ray): the custom-method sweep against built-ins (its trials and Driver
actors run in Ray worker processes that import the plugin themselves), the custom figure on that sweep,
and the CSV example's run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from core.plugins import load_plugin, resolve_plugin
from orchestrator.config import load_config
from orchestrator.methods import registry
from orchestrator.methods.base import main_slots
from sweeps.spec import load_spec_file
from sweeps.trials import expand
from tests.method_helpers import make, random_state, run_rounds
from tests.ray_helpers import local_ray

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PLUGIN = EXAMPLES / "custom_method" / "slotavg.py"
# Fast settings for the examples' trials: tiny random-init Llama classifier, 1 round of 1 step; half a CPU per
# worker, so the sweep's three trials run at once on the 2 CPUs of the test's Ray instance.
FAST = ["model.name=tiny-llama", "rounds=1", "eval_every=1", "data.num_clients=4", "data.max_examples=64",
        "data.global_test_size=16", "data.max_length=24", "train.local_steps=1", "train.batch_size=8",
        "resources.num_workers=1", "resources.cpus_per_worker=0.5", "resources.device=cpu"]


def _forget_plugin() -> None:
    """Unregister the example method and drop its module, so the next load registers it again."""
    registry._METHODS.pop("slotavg", None)
    for name in [n for n in sys.modules if n.startswith("hetfedlora_plugin_slotavg_")]:
        del sys.modules[name]


@pytest.fixture
def slotavg():
    _forget_plugin()
    load_plugin(str(PLUGIN))
    yield
    _forget_plugin()


# ------------------------------------------------------------------------------ (a) a method in one file
def test_slotavg_equals_fedplora_fixed_drop_with_data_weights(slotavg):
    # Prepare: the same non-zero start (B != 0) for both, ranks 1/2/4 of R = 4, two rounds
    ours = make("slotavg", [1, 2, 4, 4], R=4)
    ref = make("fedplora", [1, 2, 4, 4], R=4, selection="fixed", unselected="drop", weighting="data")
    start = random_state(ours)
    # Execute
    state_ours, (_, starts, _, agg) = run_rounds(ours, [[0, 1, 3], [0, 1, 2]], state=start.copy())
    state_ref, _ = run_rounds(ref, [[0, 1, 3], [0, 1, 2]], state=start.copy())
    # Assert: bit-equal global factors; slot 3 was held by client 2 only in round 2, slot 0 by all three
    assert state_ours.tensors.keys() == state_ref.tensors.keys()
    for key in state_ours.tensors:
        assert torch.equal(state_ours.tensors[key], state_ref.tensors[key]), key
    assert [main_slots(s, "layer0.q") for s in starts] == [[0], [0, 1], [0, 1, 2, 3]]
    assert agg.weights == pytest.approx({0: 10 / 33, 1: 11 / 33, 2: 12 / 33})  # data sizes 10, 11, 12


def test_slotavg_slot_held_by_one_client_takes_its_value(slotavg):
    method = make("slotavg", [1, 4], R=4)
    state = random_state(method)
    _, (_, starts, updates, agg) = run_rounds(method, [[0, 1]], state=state)
    B1, A1 = updates[1].adapters["main"]["layer0.v"]
    B0, A0 = updates[0].adapters["main"]["layer0.v"]
    new_B, new_A = agg.state.tensors["layer0.v/B"], agg.state.tensors["layer0.v/A"]
    assert torch.equal(new_B[:, 1:], B1[:, 1:]) and torch.equal(new_A[1:], A1[1:])  # only client 1 holds 1..3
    w0, w1 = 10.0, 11.0  # data sizes of clients 0 and 1 (method_helpers.trained)
    expected = ((w0 * B0[:, 0].double() + w1 * B1[:, 0].double()) / (w0 + w1)).to(new_B.dtype)
    assert torch.allclose(new_B[:, 0], expected, atol=0, rtol=1e-6)


def test_plugins_key_registers_the_method_and_unknown_names_say_how():
    _forget_plugin()
    with pytest.raises(ValueError, match=r"method\.name='slotavg' is not allowed.*list its file under `plugins:`"):
        load_config(None, ["method.name=slotavg"])
    try:
        cfg = load_config(None, ["method.name=slotavg"], plugins=[str(PLUGIN.relative_to(REPO))])
        assert cfg.plugins == (str(PLUGIN),) and cfg.method.name == "slotavg"
        again = load_config(None, {"plugins": [str(PLUGIN)], "method.name": "slotavg"}, plugins=[str(PLUGIN)])
        assert again.plugins == (str(PLUGIN),)  # once, however often it is named
        plain = load_config(None, {"method.name": "fedplora"})
        assert plain.fingerprint() == load_config(None, {"method.name": "fedplora", "plugins": [str(PLUGIN)]
                                                         }).fingerprint()
    finally:
        _forget_plugin()


def test_plugin_flag_of_both_command_lines(tmp_path, capsys):
    import argparse

    from orchestrator.run import main as run_main
    from sweeps.run import resolve_request

    _forget_plugin()
    try:
        assert run_main(["--plugin", str(PLUGIN), "--set", "method.name=slotavg", "--print-config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["plugins"] == [str(PLUGIN)] and printed["method"]["name"] == "slotavg"
        _forget_plugin()
        args = argparse.Namespace(preset="quick", config=None, resume=None, out=str(tmp_path / "s"), overrides=[],
                                  plugin=[str(PLUGIN)])
        _, _, trials, _ = resolve_request(args)
        assert "slotavg" in registry._METHODS and {t.config.plugins for t in trials} == {(str(PLUGIN),)}
    finally:
        _forget_plugin()


def test_plugin_errors_name_the_entry(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"plugins: 'nowhere/mine\.py' does not exist"):
        load_plugin("nowhere/mine.py")
    with pytest.raises(ValueError, match=r"plugins: cannot import module 'no_such_module_xyz'"):
        load_plugin("no_such_module_xyz")
    with pytest.raises(ValueError, match=r"plugins='x\.py' must be a list"):
        load_config(None, {"plugins": "x.py"})


def test_sweep_yaml_plugins_are_relative_to_the_file_and_reach_every_trial(monkeypatch, tmp_path):
    _forget_plugin()
    monkeypatch.chdir(tmp_path)  # not the repository: the path must resolve against the sweep file
    try:
        spec = load_spec_file(EXAMPLES / "custom_method" / "sweep.yaml")
        trials = expand(spec, {"model.name": "tiny-llama"})
        assert [t.label for t in trials[::2]] == ["SlotAvg", "Fed-PLoRA", "HETLoRA"]
        assert {t.config.plugins for t in trials} == {(str(PLUGIN),)}
        assert spec.to_dict()["base"]["plugins"] == [str(PLUGIN)]  # what sweep.yaml records for --resume
    finally:
        _forget_plugin()


def test_plugin_module_is_imported_once_per_process(slotavg):
    first = load_plugin(str(PLUGIN))
    assert load_plugin(resolve_plugin("examples/custom_method/slotavg.py", REPO)) is first
    assert registry.method_class("slotavg") is first.SlotAverage


# ------------------------------------------------------------------------------ (b) your own CSV
def test_own_csv_example_loads_and_splits():
    from workers.data import load_examples
    from workers.partition import partition

    cfg = load_config(EXAMPLES / "own_csv" / "run.yaml")
    pool = load_examples(cfg.data)
    frame = pd.read_csv(EXAMPLES / "own_csv" / "tickets.csv")
    assert len(pool) == len(frame) == 150 and pool.label_names == ["account", "billing", "technical"]
    assert [pool.label_names[e.label] for e in pool.examples[:5]] == frame["team"].head(5).tolist()
    fed = partition(pool, cfg.data, cfg.seed)
    assert len(fed.clients) == 6 and len(fed.global_test) == 40


# ------------------------------------------------------------------------------ Ray: the examples as run
@pytest.fixture(scope="module")
def ray_local():
    yield from local_ray(num_cpus=2)


@pytest.fixture(scope="module")
def custom_sweep(ray_local, tmp_path_factory):
    """examples/custom_method/sweep.yaml with the fast settings, through the sweep command line."""
    from sweeps.run import main

    _forget_plugin()
    folder = tmp_path_factory.mktemp("examples")
    # the example's sweep with its first setting only (3 trials), in a copy away from the plugin file
    spec = yaml.safe_load((EXAMPLES / "custom_method" / "sweep.yaml").read_text())
    spec["plugins"] = [str(PLUGIN)]
    spec["axes"]["settings"] = spec["axes"]["settings"][:1]
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec))
    out = folder / "slotavg"
    args = ["--config", str(folder / "sweep.yaml"), "--out", str(out), "--summary-every", "3600"]
    rc = main(args + [a for item in FAST for a in ("--set", item)])
    _forget_plugin()
    return out, rc


@pytest.mark.slow
def test_custom_method_sweep_runs_against_the_builtins(custom_sweep):
    out, rc = custom_sweep
    trials = pd.read_parquet(out / "trials.parquet")
    assert rc == 0 and (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert sorted(trials["label"].unique()) == ["Fed-PLoRA", "HETLoRA", "SlotAvg"] and len(trials) == 3
    slot_trials = trials[trials["label"] == "SlotAvg"]["trial_id"]
    for trial_id in slot_trials:  # the trial and its Driver imported the plugin in their own processes
        config = yaml.safe_load((out / "trials" / trial_id / "config.yaml").read_text())
        assert config["method"]["name"] == "slotavg" and config["plugins"] == [str(PLUGIN)]
        rounds = pd.read_csv(out / "trials" / trial_id / "rounds.csv")
        assert rounds["round"].tolist() == [0, 1] and rounds["accuracy"].notna().all()
    assert "slotavg" not in registry._METHODS  # this process forgot it: the trials registered it themselves


@pytest.mark.slow
def test_custom_figure_gains_equal_rounds_csv(custom_sweep, tmp_path):
    from analysis import load_sweep
    from examples.custom_figure.gain_figure import gain_per_trial, main

    out, _ = custom_sweep
    png = tmp_path / "gain.png"
    assert main([str(out), "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    gains = gain_per_trial(load_sweep(out).results, "accuracy")
    assert len(gains) == 3
    for trial_id, row in gains.iterrows():
        rounds = pd.read_csv(out / "trials" / str(trial_id) / "rounds.csv")
        acc = rounds.set_index("round")["accuracy"]
        assert row["gain"] == pytest.approx(acc[1] - acc[0], abs=1e-12)


@pytest.mark.slow
def test_own_csv_example_runs(ray_local, tmp_path):
    from orchestrator.run import main

    out = tmp_path / "tickets"
    overrides = [a for item in FAST if not item.startswith("data.") for a in ("--set", item)]
    assert main(["--config", str(EXAMPLES / "own_csv" / "run.yaml"), "--out", str(out)] + overrides) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round"].tolist() == [0, 1] and rounds["eval_examples"].tolist()[0] == 40
    partition = pd.read_csv(out / "partition.csv")
    assert partition["client"].nunique() == 6
