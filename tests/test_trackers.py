"""Experiment trackers (MLflow, TensorBoard, W&B): options, and records read back with each tracker's reader."""

from __future__ import annotations

import glob
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ray_helpers import local_ray
from tracker_readers import mlflow_runs, rounds_table, tensorboard_scalars, wandb_history, wandb_records

from orchestrator import trackers as trackers_module
from orchestrator.config import load_config
from orchestrator.trackers import LoggingConfig, TrackerMissingError, check_installed, flatten, round_metrics
from sweeps.spec import SweepSpecError, parse_spec

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_llama_smoke.yaml"
TINY_SET = {"rounds": 2, "data.max_examples": 200, "data.global_test_size": 20, "train.local_steps": 1,
            "resources.num_workers": 1, "resources.device": "cpu"}
ALL = ("mlflow", "tensorboard", "wandb")


# ------------------------------------------------------------------------------------------- options
def test_logging_section_rejects_unknown_tracker_naming_the_field():
    with pytest.raises(ValueError, match=r"logging.trackers='neptune' is not allowed.*mlflow.*tensorboard.*wandb"):
        LoggingConfig(trackers=("neptune",))
    with pytest.raises(ValueError, match="must be a list"):
        LoggingConfig(trackers="mlflow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown config key 'logging.tracker'"):
        load_config(None, {"logging.tracker": ["mlflow"]})


def test_log_flags_add_to_the_yaml_section_once_each_in_order():
    cfg = load_config(None, {"logging.trackers": ["wandb", "mlflow"]})
    assert cfg.logging.with_trackers(["mlflow", "tensorboard"]).trackers == ("wandb", "mlflow", "tensorboard")
    assert LoggingConfig().folder(Path("/x/run")) == Path("/x/run/trackers")
    assert LoggingConfig(dir="/elsewhere").folder(Path("/x/run")) == Path("/elsewhere")


def test_logging_never_changes_the_fingerprint():
    plain = load_config(None, {})
    logged = load_config(None, {"logging.trackers": list(ALL), "logging.dir": "/tmp/t"})
    assert plain.fingerprint() == logged.fingerprint()
    assert plain.fingerprint() != load_config(None, {"seed": 1}).fingerprint()


def test_missing_tracker_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(trackers_module.REQUIRED_MODULES, "wandb", ("no_such_module_wandb_x", "wandb"))
    check_installed(["mlflow", "tensorboard"])  # installed: no error
    with pytest.raises(TrackerMissingError, match=r"--log wandb.*pip install 'hetfedlora\[trackers\]'.*pip install "
                                                  r"wandb"):
        check_installed(["mlflow", "wandb"])


def test_missing_tracker_fails_when_the_options_are_parsed(monkeypatch, capsys, tmp_path):
    """Both commands stop with the pip command before Ray starts (exit code 2: bad input)."""
    from orchestrator.run import main as run_main
    from sweeps.run import main as sweep_main

    monkeypatch.setitem(trackers_module.REQUIRED_MODULES, "mlflow", ("no_such_module_mlflow_x", "mlflow-skinny"))
    assert run_main(["--config", str(TINY), "--out", str(tmp_path / "run"), "--log", "mlflow"]) == 2
    assert "pip install" in capsys.readouterr().err
    assert sweep_main(["--config", str(REPO / "configs/sweeps/tiny_smoke.yaml"), "--out", str(tmp_path / "sw"),
                       "--log", "mlflow"]) == 2
    assert "pip install 'hetfedlora[trackers]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "sw").exists()


def test_no_tracker_package_is_imported_at_start_up():
    code = ("import sys, orchestrator.run, sweeps.run, sweeps.cli, sweeps.tracking; "
            "print(sorted(m for m in ('mlflow', 'wandb', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sweep_logging_section_merges_over_the_base_and_is_checked():
    base = {"base": {"logging": {"trackers": ["tensorboard"], "experiment": "from-base"}},
            "logging": {"trackers": ["mlflow"]}, "axes": {"seeds": [0]}}
    spec = parse_spec(base)
    cfg = spec.logging_config(["wandb", "mlflow"])
    assert cfg.trackers == ("mlflow", "wandb") and cfg.experiment == "from-base"
    assert parse_spec(spec.to_dict()).logging == spec.logging  # kept in sweep.yaml for --resume
    with pytest.raises(SweepSpecError, match="logging.trackers='comet' is not allowed"):
        parse_spec({"logging": {"trackers": ["comet"]}})
    with pytest.raises(SweepSpecError, match="unknown config key 'logging.folder'"):
        parse_spec({"logging": {"folder": "x"}})


def test_flatten_and_round_metrics():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}
    record = {"round": 3, "accuracy": 0.5, "clients": 4, "eval_loss": float("nan"), "ok": True, "name": "x",
              "client_rows": [{"a": 1}]}
    assert round_metrics(record) == {"accuracy": 0.5, "clients": 4.0}


# ---------------------------------------------------------------------------------- records read back
def _assert_series_equal(logged: dict[str, dict[int, float]], expected: dict[str, dict[int, float]], rel: float,
                         key=lambda col: col) -> None:
    """Every finite value of every rounds.csv column is logged at step = round, and nothing else at those steps."""
    assert expected, "rounds.csv has no numeric column"
    for col, by_round in expected.items():
        got = logged.get(key(col))
        assert got is not None, f"{col} not logged; logged: {sorted(logged)[:20]}"
        for rnd, value in by_round.items():
            assert rnd in got, f"{col}: round {rnd} missing (steps {sorted(got)})"
            assert math.isclose(got[rnd], value, rel_tol=rel, abs_tol=1e-12), (col, rnd, got[rnd], value)


@pytest.fixture(scope="module")
def ray_two_cpus():
    yield from local_ray(num_cpus=2)


@pytest.mark.slow
def test_single_run_records_equal_rounds_csv_in_all_three_trackers(ray_two_cpus, tmp_path, monkeypatch):
    from orchestrator.run import run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config(TINY, {**TINY_SET, "logging.trackers": list(ALL)})
    out = tmp_path / "run"
    lines: list[str] = []
    summary = run(cfg, out, log=lines.append)
    expected = rounds_table(out)
    assert 0 in expected["eval_loss"] and 2 in expected["train_loss"]
    folder = out / "trackers"
    # MLflow: parameters, every round (0 included) at step = round, the summary, the files
    (name, mlrun), = mlflow_runs(folder).items()
    assert name == "run" and mlrun["status"] == "FINISHED" and mlrun["experiment"] == "hetfedlora"
    assert mlrun["params"]["method.name"] == "fedplora" and mlrun["params"]["rounds"] == "2"
    assert mlrun["params"] == {k: str(v) for k, v in flatten(cfg.to_dict()).items() if not k.startswith("logging.")}
    _assert_series_equal(mlrun["metrics"], expected, rel=0)
    assert mlrun["metrics"]["final/eval_loss"] == {2: summary["final"]["eval_loss"]}
    assert {"config.yaml", "rounds.csv", "summary.json", "adapter"} <= mlrun["artifacts"]
    # TensorBoard: float32 scalars
    scalars = tensorboard_scalars(folder / "tensorboard" / "run")
    _assert_series_equal(scalars, expected, rel=1e-6)
    assert math.isclose(scalars["final/eval_loss"][2], summary["final"]["eval_loss"], rel_tol=1e-6)
    # W&B offline: the transaction log, decoded by wandb itself
    (run_file,) = glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = wandb_records(Path(run_file))
    history = {int(row["round"]): row for row in wandb_history(records)}
    _assert_series_equal({col: {r: row[col] for r, row in history.items() if col in row} for col in expected},
                         expected, rel=0)
    config = next(r["run"]["config"]["update"] for r in records if r.get("type") == "run")
    assert config["method.name"] == "fedplora"
    summaries = {k: v for r in records if r.get("type") == "summary" for k, v in r["summary"]["update"].items()}
    assert summaries["final/eval_loss"] == summary["final"]["eval_loss"]
    assert any(r.get("type") == "artifact" for r in records)
    # one progress line per round, with the rate and the ETA
    assert [ln.split("]")[0] for ln in lines if ln.startswith("[round 1/") or ln.startswith("[round 2/")] == [
        "[round 1/2", "[round 2/2"]
    assert all(re.search(r"\| [12]/2 rounds, [0-9.]+ (s/round|rounds/s), ETA 0m00s$", ln)
               for ln in lines if ln.startswith("[round 2/")), lines
    # the report of the folder, as a run of its own in the same stores
    from analysis.report import main as report_main

    assert report_main([str(out), "--log", "mlflow", "--log", "tensorboard", "--log", "wandb"]) == 0
    report_run = mlflow_runs(folder)["run report"]
    assert {"report.md", "figures"} <= report_run["artifacts"] and report_run["status"] == "FINISHED"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tensorboard" / "run report"))
    acc.Reload()
    assert any(tag.startswith("report.md") for tag in acc.Tags()["tensors"])
    (report_file,) = set(glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))) - {run_file}
    assert any(r.get("type") == "artifact" for r in wandb_records(Path(report_file)))


@pytest.mark.slow
def test_sweep_records_equal_each_trials_rounds_csv(ray_two_cpus, tmp_path, monkeypatch):
    from sweeps.run import run_sweep
    from sweeps.trials import expand

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    spec = parse_spec({"name": "tracked", "base_config": str(TINY),
                       "base": {"rounds": 2, "data": {"max_examples": 200, "global_test_size": 20},
                                "train": {"local_steps": 1}, "resources": {"num_workers": 1, "device": "cpu"}},
                       "logging": {"trackers": ["mlflow", "tensorboard"]},
                       "axes": {"variants": [{"label": "Fed-PLoRA", "set": {"method.name": "fedplora"}}]}})
    trials = expand(spec)
    out = tmp_path / "sweep"
    lines: list[str] = []
    table = run_sweep(spec, {}, trials, out, log=lines.append, summary_every=3600,
                      logging=spec.logging_config(["wandb"]))
    assert list(table["status"]) == ["completed"]
    (tid,) = [t.trial_id for t in trials]
    expected = rounds_table(out / "trials" / tid)
    folder = out / "trackers"
    (name, mlrun), = mlflow_runs(folder).items()
    assert name == tid and mlrun["experiment"] == "tracked" and mlrun["status"] == "FINISHED"
    assert mlrun["params"]["method.name"] == "fedplora" and mlrun["params"]["trial"] == tid
    _assert_series_equal(mlrun["metrics"], expected, rel=0)
    assert {"config.yaml", "rounds.csv", "summary.json", "adapter"} <= mlrun["artifacts"]
    scalars = tensorboard_scalars(folder / "tensorboard" / tid)
    _assert_series_equal(scalars, expected, rel=1e-6, key=lambda col: f"ray/tune/{col}")
    (run_file,) = glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = wandb_records(Path(run_file))
    history = {int(row["round"]): row for row in wandb_history(records)}
    trained = {col: {r: v for r, v in by.items() if r >= 1} for col, by in expected.items()}
    trained = {col: by for col, by in trained.items() if by}
    _assert_series_equal({col: {r: row[col] for r, row in history.items() if col in row} for col in trained},
                         trained, rel=0)
    config = next(r["run"]["config"]["update"] for r in records if r.get("type") == "run")
    assert config["method.name"] == "fedplora" and config["trial"] == tid
    # the finished-trial line and a progress summary with rounds and ETA
    assert any(ln.startswith("[1/1 done") for ln in lines)


def test_sweep_callbacks_backfill_the_rounds_tune_did_not_report(tmp_path):
    """Round 0 (before Tune's first report) and, after a resume, the rounds before it, from rounds.csv."""
    from types import SimpleNamespace

    from sweeps.tracking import _Trials

    folder = tmp_path / "trials" / "t0"
    folder.mkdir(parents=True)
    (folder / "rounds.csv").write_text("round,accuracy,train_loss\n0,0.5,\n1,0.6,0.9\n2,0.7,0.8\n3,0.75,0.7\n")
    facts = _Trials([], tmp_path)
    trial = SimpleNamespace(config={"trial": "t0"})
    assert facts.unreported_rounds(trial, reported={3}) == [
        (0, {"accuracy": 0.5}), (1, {"accuracy": 0.6, "train_loss": 0.9}), (2, {"accuracy": 0.7, "train_loss": 0.8})]
    assert facts.unreported_rounds(trial, reported={0, 1, 2, 3}) == []
