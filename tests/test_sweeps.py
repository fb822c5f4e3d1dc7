"""Sweeps: spec expansion, loud bad input, a real Tune sweep end to end, kill + resume, fractional GPUs.

The Ray tests share one local Ray instance with 4 logical CPUs and 1 logical GPU (``ray.init(num_gpus=1)``
on a CPU machine: bookkeeping only, torch stays on the CPU). The reference sweep runs in this process;
the killed/resumed sweep runs as ``python -m sweeps.run --address <this cluster>`` subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeps.run import SweepSetupError, check_out_dir, main, sweep_record
from sweeps.spec import (
    SweepSpecError,
    available_presets,
    load_preset,
    parse_overrides,
    parse_spec,
)
from sweeps.trials import expand, sweep_fingerprint
from sweeps.tune_runner import SweepResourceError, plan_resources

REPO = Path(__file__).resolve().parents[1]

TINY_BASE = {
    "rounds": 3, "participation": 0.5, "eval_every": 1,
    "model": {"name": "tiny-llama"},
    "data": {"dataset": "rotten_tomatoes_instruct", "num_clients": 4, "max_examples": 200, "global_test_size": 20,
             "max_length": 48},
    "train": {"local_steps": 1, "batch_size": 8, "max_new_tokens": 3},
    "ranks": {"distribution": "groups", "max_rank": 4, "mid_rank": 2},
}
FEDPLORA = {"label": "Fed-PLoRA", "set": {"method.name": "fedplora"}}
FEDIT_HALF = {"label": "FedIT (R/2)", "set": {"method.name": "fedit", "ranks.distribution": "homogeneous",
                                              "ranks.rank": 2}}
IID = {"label": "IID", "set": {"data.partition": "iid"}}
DIR = {"label": "non-IID (Dir 0.5)", "set": {"data.partition": "dirichlet", "data.alpha": 0.5}}


def tiny_spec(**axes) -> dict:
    return {"name": "tiny", "base": json.loads(json.dumps(TINY_BASE)), "axes": axes}


# ------------------------------------------------------------------------------------------ expansion
def test_trials_are_variants_x_settings_x_grid_x_seeds():
    # Prepare
    spec = parse_spec(tiny_spec(variants=[FEDPLORA, FEDIT_HALF], settings=[IID, DIR],
                                grid={"train.lr": [1e-3, 5e-4]}, seeds=[0, 1]))
    # Execute
    trials = expand(spec)
    # Assert
    assert len(trials) == 2 * 2 * 2 * 2
    assert [t.index for t in trials] == list(range(16))
    assert len({t.trial_id for t in trials}) == 16
    first, last = trials[0], trials[-1]
    assert (first.label, first.setting, first.axes, first.seed) == ("Fed-PLoRA", "IID", {"train.lr": 1e-3}, 0)
    assert (last.label, last.setting, last.axes, last.seed) == ("FedIT (R/2)", "non-IID (Dir 0.5)",
                                                                 {"train.lr": 5e-4}, 1)
    assert first.trial_id == "000-fed-plora-iid-lr=0.001-s0"
    assert last.config.method.name == "fedit" and last.config.ranks.rank == 2
    assert last.config.data.partition == "dirichlet" and last.config.data.alpha == 0.5
    assert last.config.train.lr == 5e-4 and last.config.seed == 1
    assert trials[1].seed == 1 and trials[1].axes == {"train.lr": 1e-3}  # seeds vary fastest
    assert first.metric == "rouge_l"


def test_no_variants_label_is_the_method_and_seed_defaults_to_base():
    trials = expand(parse_spec({"base": {**TINY_BASE, "seed": 7}, "axes": {"grid": {"method.name": ["fedplora",
                                                                                                       "flora"]}}}))
    assert [(t.label, t.setting, t.seed) for t in trials] == [("fedplora", "default", 7), ("flora", "default", 7)]


def test_set_overrides_every_trial_and_1e_3_is_a_float():
    from sweeps.spec import load_yaml

    assert load_yaml("lr: 1e-3") == {"lr": 0.001} and load_yaml("n: 3") == {"n": 3}
    trials = expand(parse_spec(tiny_spec(variants=[FEDPLORA, FEDIT_HALF])), parse_overrides(["rounds=2",
                                                                                             "train.lr=1e-3"]))
    assert [(t.config.rounds, t.config.train.lr) for t in trials] == [(2, 0.001), (2, 0.001)]


def test_base_config_file_is_merged_under_inline_base():
    from sweeps.spec import load_spec_file

    spec = load_spec_file(REPO / "configs" / "sweeps" / "tiny_smoke.yaml")
    trials = expand(spec)
    assert spec.base["model"]["name"] == "tiny-llama"  # from configs/tiny_llama_smoke.yaml
    assert {t.config.rounds for t in trials} == {2}  # inline base wins
    assert len(trials) == 4


def test_every_preset_expands():
    assert {"quick", "paper_glue", "paper_ni", "paper_dolly", "paper_finance", "ablation_rank_families",
            "ablation_selection", "ablation_targets", "ablation_head", "ablation_scaling"} <= set(available_presets())
    for name in available_presets():
        overrides = {"data.path": "/data/x"} if name in ("paper_ni", "paper_finance") else {}
        trials = expand(load_preset(name), overrides)
        assert trials, name
    quick = expand(load_preset("quick"))
    assert len(quick) == 14 and {t.setting for t in quick} == {"IID", "non-IID (Dir 0.5)"}
    assert sorted({t.label for t in quick}) == sorted(["Fed-PLoRA", "FLoRA", "FlexLoRA", "HETLoRA", "pFedLoRA",
                                                       "FedIT (R)", "FedIT (R/2)"])
    glue = expand(load_preset("paper_glue"))
    assert len(glue) == 7 * 12 * 3 and {t.config.data.num_clients for t in glue} == {100}
    assert {t.config.rounds for t in glue if t.config.data.glue_task == "cola"} == {200}


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("axes, match", [
    ({"grid": {"train.lrr": [0.1]}}, r"unknown config key 'train.lrr'; did you mean 'train.lr'\?"),
    ({"variants": [{"label": "X", "set": {"data.num_client": 5}}]}, r"did you mean 'data.num_clients'\?"),
    ({"variants": [{"label": "Avg", "set": {"method.name": "fedavg"}}]},
     r"method.name='fedavg' is not allowed; choose one of \['fedex_lora', 'fedit', 'fedplora', 'fedsa_lora'"),
    ({"grid": {}}, r"axes.grid is empty"),
    ({"grid": {"train.lr": []}}, r"axes.grid.train.lr has no values: the grid would have zero trials"),
    ({"seeds": []}, r"axes.seeds must be a non-empty list"),
    ({"variants": [FEDPLORA], "grid": {"method.name": ["flora"]}}, r"method.name is set by both axes.variants "
                                                                    r"and axes.grid"),
    ({"gird": {"train.lr": [0.1]}}, r"unknown axes key 'gird'; did you mean 'grid'\?"),
])
def test_bad_axes_fail_before_any_trial(axes, match):
    with pytest.raises(SweepSpecError, match=match):
        expand(parse_spec(tiny_spec(**axes)))


def test_bad_values_are_reported_with_their_trial_labels():
    spec = parse_spec(tiny_spec(variants=[FEDPLORA, {"label": "FedIT het", "set": {"method.name": "fedit"}}],
                                grid={"data.alpha": [0.5, -1.0]}))
    with pytest.raises(SweepSpecError) as info:
        expand(spec)
    text = str(info.value)
    assert "data.alpha=-1.0 must be a finite number > 0" in text
    assert "trial 1 (Fed-PLoRA | data.alpha=-1.0)" in text and "trial 3 (FedIT het | data.alpha=-1.0)" in text
    assert "method 'fedit' needs every client at the same rank" in text and "trial 2 (FedIT het" in text


def test_unknown_preset_lists_the_presets(capsys):
    with pytest.raises(SweepSpecError, match=r"unknown preset 'quik'; did you mean 'quick'\? Available presets: "):
        load_preset("quik")
    assert main(["--preset", "nope", "--out", "/tmp/never-created-sweep"]) == 2
    assert "Available presets: ['ablation_head'" in capsys.readouterr().err
    assert not Path("/tmp/never-created-sweep").exists()


def test_set_that_fights_an_axis_is_refused():
    with pytest.raises(SweepSpecError, match=r"--set method.name: the sweep's axes set method.name per trial"):
        expand(parse_spec(tiny_spec(variants=[FEDPLORA])), {"method.name": "flora"})


def test_results_dir_holding_a_different_sweep_is_refused(tmp_path, capsys):
    # Prepare: a folder that holds sweep A
    spec_a = parse_spec(tiny_spec(variants=[FEDPLORA]))
    trials_a = expand(spec_a)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep_record(spec_a, {}, trials_a)))
    trials_b = expand(parse_spec(tiny_spec(variants=[FEDPLORA])), {"rounds": 5})
    # Execute / Assert
    with pytest.raises(SweepSetupError, match=r"holds a different sweep .* trial 000-fed-plora-s0 changed: "
                                              r"rounds: 3 -> 5"):
        check_out_dir(out, trials_b, resume=True)
    with pytest.raises(SweepSetupError, match="already holds this sweep; pass --resume"):
        check_out_dir(out, trials_a, resume=False)
    assert check_out_dir(out, trials_a, resume=True)["fingerprint"] == sweep_fingerprint(trials_a)
    spec_file = tmp_path / "b.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(variants=[FEDPLORA, FEDIT_HALF])))
    assert main(["--config", str(spec_file), "--resume", str(out)]) == 2
    assert "holds a different sweep" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["sweep.yaml"]  # nothing started


def test_a_pool_that_can_never_fit_fails_before_the_sweep():
    trials = expand(parse_spec(tiny_spec(variants=[FEDPLORA])), {"resources.num_workers": 3,
                                                                 "resources.device": "cuda"})
    with pytest.raises(SweepResourceError, match=r"resources.device='cuda' but the Ray cluster has no GPUs"):
        plan_resources(trials, {"CPU": 8.0})
    trials = expand(parse_spec(tiny_spec(variants=[FEDPLORA])), {"resources.num_workers": 3})
    with pytest.raises(SweepResourceError, match=r"3 workers x 1 CPU need 3 CPUs but the Ray cluster has 2"):
        plan_resources(trials, {"CPU": 2.0})
    plan = plan_resources(trials, {"CPU": 4.0, "GPU": 1.0})  # auto: 1/3 GPU each (even share)
    entry = plan[trials[0].trial_id]
    assert entry["bundles"][0] == {} and len(entry["bundles"]) == 4
    assert entry["config"]["resources"]["gpus_per_worker"] == pytest.approx(1 / 3)


def test_clients_per_worker_is_an_axis_that_keeps_the_trials_resources(tmp_path):
    from analysis.describe import IGNORED_KEYS

    trials = expand(parse_spec(tiny_spec(grid={"resources.clients_per_worker": [1, 2]})))
    assert [t.trial_id for t in trials] == ["000-fedplora-clients-per-worker=1-s0",
                                            "001-fedplora-clients-per-worker=2-s0"]
    assert [t.config.resources.clients_per_worker for t in trials] == [1, 2]
    plan = plan_resources(trials, {"CPU": 4.0})  # packs run inside a worker: the same bundles
    assert plan[trials[0].trial_id]["bundles"] == plan[trials[1].trial_id]["bundles"] == [{}, {"CPU": 1.0},
                                                                                          {"CPU": 1.0}]
    assert plan[trials[1].trial_id]["config"]["resources"]["clients_per_worker"] == 2
    assert "resources.clients_per_worker".startswith(IGNORED_KEYS) is False  # the report splits trials by it
    assert "resources.num_workers".startswith(IGNORED_KEYS)
    # a stored sweep resumed with another k is a different sweep; with another pool size it is the same
    spec = parse_spec(tiny_spec(variants=[FEDPLORA]))
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep_record(spec, {}, expand(spec))))
    assert check_out_dir(out, expand(spec, {"resources.num_workers": 1}), resume=True)
    with pytest.raises(SweepSetupError, match=r"changed: resources.clients_per_worker: 1 -> 2"):
        check_out_dir(out, expand(spec, {"resources.clients_per_worker": 2}), resume=True)


# ------------------------------------------------------------------------------------------ Ray sweeps
# FedIT's trials train their round's clients in one pack (resources.clients_per_worker)
FEDIT_HALF_PACKED = {**FEDIT_HALF, "set": {**FEDIT_HALF["set"], "resources.clients_per_worker": 2}}
RAY_SPEC = {
    "name": "ray_tiny",
    "base": {**TINY_BASE, "resources": {"device": "auto", "num_workers": 2, "gpus_per_worker": 0.25,
                                        "cpus_per_worker": 0.5}},
    "axes": {
        "variants": [FEDPLORA, FEDIT_HALF_PACKED,
                     # passes validation, fails at worker start-up: 40 clients x 8 examples > 200 examples
                     {"label": "Broken", "set": {"method.name": "fedplora", "data.num_clients": 40,
                                                 "resources.device": "cpu", "resources.num_workers": 1}}],
        "settings": [IID],
        "grid": {"train.lr": [0.001]},
        "seeds": [0],
    },
}
# The killed/resumed sweep: the reference's two good trials (same ids, same configs).
KILL_SPEC = {**RAY_SPEC, "name": "ray_tiny_kill", "axes": {**RAY_SPEC["axes"], "variants": [FEDPLORA,
                                                                                            FEDIT_HALF_PACKED]}}
COMPARED = ["trial_id", "status", "label", "setting", "seed", "rounds_completed", "final_rouge_l",
            "final_eval_loss", "final_train_loss", "error"]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    if ray.is_initialized():  # another module's cluster: this one needs 4 CPUs and 1 logical GPU
        ray.shutdown()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")  # "local": never a `ray start` cluster of this machine
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def reference_sweep(ray_cluster, tmp_path_factory):
    """The RAY_SPEC sweep run uninterrupted in this process (all three trials at once)."""
    from sweeps.run import run_sweep

    out = tmp_path_factory.mktemp("reference") / "sweep"
    spec = parse_spec(RAY_SPEC)
    trials = expand(spec)
    lines: list[str] = []
    t0 = time.time()
    table = run_sweep(spec, {}, trials, out, summary_every=3600, log=lines.append)
    return out, table, lines, time.time() - t0


@pytest.mark.slow
def test_sweep_end_to_end_writes_tables(reference_sweep):
    out, table, lines, _ = reference_sweep
    results = pd.read_parquet(out / "results.parquet")
    trials = pd.read_parquet(out / "trials.parquet")
    # one row per trial
    assert list(trials["trial_id"]) == ["000-fed-plora-iid-lr=0.001-s0", "001-fedit-r-2-iid-lr=0.001-s0",
                                        "002-broken-iid-lr=0.001-s0"]
    assert list(trials["status"]) == ["completed", "completed", "error"]
    assert list(trials["label"]) == ["Fed-PLoRA", "FedIT (R/2)", "Broken"]
    for col in ("setting", "seed", "train.lr", "method.name", "ranks.distribution", "data.partition",
                "final_rouge_l", "best_rouge_l", "final_eval_loss", "wall_seconds", "rounds_completed", "error"):
        assert col in trials.columns, col
    ok = trials[trials["status"] == "completed"]
    assert (ok["rounds_completed"] == 3).all() and ok["error"].isna().all() and (ok["wall_seconds"] > 0).all()
    # the failed trial records its message (no stack dump) and the sweep went on
    broken = trials.iloc[2]
    assert "data.num_clients=40 needs at least 320 examples" in broken["error"]
    assert "Traceback" not in broken["error"] and broken["rounds_completed"] == 0
    # long results: one row per trial x round with every rounds.csv column
    assert len(results) == 2 * 4  # round 0 (the untrained model) and rounds 1-3
    rounds_csv = pd.read_csv(out / "trials" / "000-fed-plora-iid-lr=0.001-s0" / "rounds.csv")
    expected = set(rounds_csv.columns) | {"trial_id", "status", "label", "setting", "seed", "train.lr",
                                          "method.name", "ranks.distribution", "data.partition"}
    assert expected <= set(results.columns)
    assert list(results["round"]) == [0, 1, 2, 3, 0, 1, 2, 3]
    trial = out / "trials" / "000-fed-plora-iid-lr=0.001-s0"  # the same files as a one-run folder
    assert (trial / "examples.parquet").is_file() and "baselines" in json.loads((trial / "summary.json").read_text())
    assert set(results["method.name"]) == {"fedplora", "fedit"} and set(results["train.lr"]) == {0.001}
    packed = pd.read_csv(out / "trials" / "001-fedit-r-2-iid-lr=0.001-s0" / "clients.csv")  # 2 clients, one pack
    assert packed["pack"].tolist() == [0, 0] * 3 and packed.groupby("round")["client"].is_monotonic_increasing.all()
    # files of the sweep folder and compact progress (one line per finished trial)
    assert (out / "sweep.yaml").is_file() and (out / "trials" / "000-fed-plora-iid-lr=0.001-s0" / "adapter").is_dir()
    done = [line for line in lines if line.startswith("[")]
    assert len(done) == 3 and any("ERROR" in line and "Broken" in line for line in done)


@pytest.mark.slow
def test_fractional_gpu_trials_share_one_gpu(reference_sweep):
    """Two trials of 2 workers x 0.25 GPU ran at the same time on the one logical GPU.

    Each trial's placement group holds its two worker bundles ({CPU 0.5, GPU 0.25}) for as long as its
    trainable lives, and the two trainables overlapped in time: both groups, 2 x 0.5 GPU, were reserved
    together on the cluster's single GPU (GPU 0). In each group the workers (created by the trial's Driver
    actor, itself created by the trainable) used up exactly the worker bundles, 0.25 GPU each, so they
    were captured into their trial's group. (The tiny trials' rounds take about a second while actor
    start-up can take a minute on a loaded machine, so the workers themselves need not overlap.)
    """
    out = reference_sweep[0]
    tids = ["000-fed-plora-iid-lr=0.001-s0", "001-fedit-r-2-iid-lr=0.001-s0"]
    place = [json.loads((out / "trials" / t / "placement.json").read_text()) for t in tids]
    state = [json.loads((out / "trials" / t / "trial.json").read_text()) for t in tids]
    assert place[0]["placement_group_id"] != place[1]["placement_group_id"]
    for p in place:
        pg = p["placement_group_id"]
        assert p["cluster_gpus"] == 1.0
        assert p["bundles"] == [{"CPU": 0.5, "GPU": 0.25}, {"CPU": 0.5, "GPU": 0.25}]
        assert p["used"][f"GPU_group_0_{pg}"] == pytest.approx(0.25)
        assert p["used"][f"GPU_group_1_{pg}"] == pytest.approx(0.25)
        assert p["used"][f"GPU_group_{pg}"] == pytest.approx(0.5)
    # concurrent: both trainables (and so both placement groups) were alive at the same time
    assert max(s["started_at"] for s in state) < min(s["ended_at"] for s in state)
    assert all(s["started_at"] < p["time"] < s["ended_at"] for s, p in zip(state, place))
    config = yaml.safe_load((out / "trials" / tids[0] / "config.yaml").read_text())
    assert config["resources"]["gpus_per_worker"] == 0.25 and config["resources"]["device"] == "auto"


def _sweep_cli(args: list[str], address: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "sweeps.run", *args, "--address", address, "--summary-every",
                             "3600"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _wait_for_placement_groups_released(timeout: float) -> None:
    import ray

    deadline = time.time() + timeout
    while time.time() < deadline:
        if not [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]:
            return
        time.sleep(0.2)
    raise AssertionError("the killed sweep's placement groups were not released")


def _state(out: Path, tid: str) -> dict:
    path = out / "trials" / tid / "trial.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_trials_table(reference_sweep, ray_cluster, tmp_path):
    # Prepare: the same sweep, one trial at a time, in a subprocess we can kill
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(KILL_SPEC))
    out = tmp_path / "sweep"
    first, second = "000-fed-plora-iid-lr=0.001-s0", "001-fedit-r-2-iid-lr=0.001-s0"
    proc = _sweep_cli(["--config", str(spec_file), "--out", str(out), "--max-concurrent", "1"], ray_cluster)
    # Execute: kill it (SIGKILL, no clean-up) once the first trial is done and the second is under way
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if _state(out, first).get("status") == "completed" and _state(out, second).get("rounds_completed", 0) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _state(out, second).get("rounds_completed", 0)
    _wait_for_placement_groups_released(timeout=60)  # the killed job's actors are gone too
    assert not (out / "trials.parquet").exists()
    resumed = _sweep_cli(["--resume", str(out)], ray_cluster)
    output = resumed.communicate(timeout=240)[0]
    # Assert: the same table as the uninterrupted sweep, and the killed trial continued from its checkpoint
    assert resumed.returncode == 0, output[-3000:]
    table = pd.read_parquet(out / "trials.parquet")
    reference = reference_sweep[1].iloc[:2]
    pd.testing.assert_frame_equal(table[COMPARED].reset_index(drop=True), reference[COMPARED].reset_index(drop=True))
    state = _state(out, second)
    assert state["status"] == "completed"
    if killed_at < 3:  # killed mid-trial: the second attempt continued from the trial's own checkpoint
        assert state["attempts"] == 2, state
        print(f"killed after round {killed_at} of 3; resumed")
    assert _state(out, first)["attempts"] == 1  # a finished trial is never rerun


def test_focus_must_name_a_variant_and_is_kept_in_the_spec():
    spec = parse_spec({**tiny_spec(variants=[FEDPLORA, FEDIT_HALF]), "focus": FEDIT_HALF["label"]})
    assert spec.focus == FEDIT_HALF["label"] and spec.to_dict()["focus"] == FEDIT_HALF["label"]
    with pytest.raises(SweepSpecError, match=r"focus='FLoRA' must be the label of one of axes.variants"):
        parse_spec({**tiny_spec(variants=[FEDPLORA, FEDIT_HALF]), "focus": "FLoRA"})


@pytest.mark.slow
def test_warm_trials_run_on_kept_workers_and_match_fresh_ones(reference_sweep, tmp_path):
    """One trial at a time: the second trial runs on the first one's Driver and workers (kept models), with
    exactly the numbers of the reference sweep, whose trials ran at once on fresh actors."""
    from sweeps.run import run_sweep

    spec = parse_spec(KILL_SPEC)
    out = tmp_path / "warm"
    table = run_sweep(spec, {}, expand(spec), out, max_concurrent=1, summary_every=3600, log=lambda _: None)
    reference = reference_sweep[1].iloc[:2]
    pd.testing.assert_frame_equal(table[COMPARED].reset_index(drop=True), reference[COMPARED].reset_index(drop=True))
    ids = list(table["trial_id"])
    states = [_state(out, t) for t in ids]
    assert [s["warm_start"] for s in states] == [False, True]
    assert [s["untrained_cached"] for s in states] == [False, True]  # one untrained model, evaluated once
    assert len(list((out / "cache" / "untrained").glob("*.pkl"))) == 1
    for tid in ids:
        warm, cold = (pd.read_csv(d / "trials" / tid / "rounds.csv") for d in (out, reference_sweep[0]))
        metrics = [c for c in cold.columns if not c.startswith("t_")]
        pd.testing.assert_frame_equal(warm[metrics], cold[metrics])
    print(f"setup seconds: cold {states[0]['setup_seconds']:.1f}, warm {states[1]['setup_seconds']:.1f}")
