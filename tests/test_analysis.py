"""analysis/: loading, comparison tables, figures and the report, on synthetic sweep and run folders."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import plots
from analysis.load import add_setting, load_run, load_sweep, method_label, setting_label, trial_state
from analysis.report import main as report_main
from analysis.tables import (
    column_leaders,
    comparison_table,
    format_table,
    latex_escape,
    row_order_key,
    tidy_table,
    trial_values,
    write_table,
)

NAN = float("nan")
ROUNDS = 4
R = 4
# (label, method.name, partition, seed) -> final accuracy (round 4); round 2 is final - 0.1 unless listed below.
FINALS = {
    ("FedIT (R)", "fedit", "iid", 0): 0.80, ("FedIT (R)", "fedit", "iid", 1): 0.84,
    ("FedIT (R)", "fedit", "dirichlet", 0): 0.70, ("FedIT (R)", "fedit", "dirichlet", 1): 0.74,
    ("HETLoRA", "hetlora", "iid", 0): 0.70, ("HETLoRA", "hetlora", "iid", 1): 0.74,
    ("HETLoRA", "hetlora", "dirichlet", 0): 0.60, ("HETLoRA", "hetlora", "dirichlet", 1): 0.62,
    ("Fed-PLoRA", "fedplora", "iid", 0): 0.78, ("Fed-PLoRA", "fedplora", "iid", 1): 0.80,
    ("Fed-PLoRA", "fedplora", "dirichlet", 0): 0.75, ("Fed-PLoRA", "fedplora", "dirichlet", 1): 0.77,
}
ROUND2 = {("HETLoRA", "hetlora", "iid", 0): 0.76}  # best != final for this trial
IID, DIR = "IID", "non-IID (Dir 0.5)"


# ------------------------------------------------------------------------------------------ synthetic data
def rounds_rows(method: str, final: float, round2: float, rounds: int = ROUNDS) -> list[dict]:
    """rounds.csv rows of one run: evaluation on even rounds only."""
    rows = []
    for r in range(1, rounds + 1):
        acc = (final if r == ROUNDS else round2) if r % 2 == 0 else NAN
        row = {"round": r, "method": method, "clients": 3,
               "init_noise_fn": 0.0 if method == "fedplora" else 1.0 / r,
               "init_noise_param": 0.0 if method == "fedplora" else 2.0 / r, "agg_noise": 0.01 * r,
               "bytes_down": 1000 * (10 if method == "fedit" else 5), "bytes_up": 800,
               "accuracy": acc, "mcc": acc / 2 if acc == acc else NAN, "eval_loss": 1 - acc if acc == acc else NAN,
               "eval_examples": 50 if acc == acc else NAN, "train_loss": 1.0 / r, "mean_rank": 2.0,
               "t_client_compute_sum": 0.3, "t_client_compute_max": 0.1, "t_train_wall": 0.12,
               "t_client_starts": 0.001, "t_aggregate": 0.002, "t_metrics": 0.003, "t_eval": 0.01, "t_round": 0.15,
               "worker_restarts": 0}
        if method == "fedplora":
            row["agg_noise_rankwise"] = 0.005 * r
        rows.append(row)
    return rows


def config_for(method: str, partition: str, seed: int) -> dict:
    ranks = ({"distribution": "homogeneous", "max_rank": R, "mid_rank": 2, "rank": None}
             if method == "fedit" else {"distribution": "groups", "max_rank": R, "mid_rank": 2, "rank": None})
    return {"seed": seed, "rounds": ROUNDS, "participation": 0.5,
            "method": {"name": method, "selection": "random", "unselected": "fold", "scaling": "standard",
                       "train_head": True},
            "ranks": ranks, "model": {"name": "minilm"},
            "data": {"dataset": "rotten_tomatoes", "num_clients": 6, "partition": partition, "alpha": 0.5,
                     "classes_per_client": 2},
            "train": {"lr": 0.002, "local_steps": 2}, "fingerprint": f"fp-{method}-{partition}-{seed}"}


def trial_specs() -> list[dict]:
    """12 finished trials, 1 failed (Fed-PLoRA IID seed 2), 1 running (FLoRA IID seed 0)."""
    specs = []
    for i, ((label, method, partition, seed), final) in enumerate(FINALS.items()):
        round2 = ROUND2.get((label, method, partition, seed), final - 0.1)
        specs.append(dict(trial_id=f"t{i:02d}", label=label, method=method, partition=partition, seed=seed,
                          status="TERMINATED", rows=rounds_rows(method, final, round2), error=None))
    specs.append(dict(trial_id="t12", label="Fed-PLoRA", method="fedplora", partition="iid", seed=2, status="ERROR",
                      rows=rounds_rows("fedplora", NAN, 0.10)[:2],
                      error="Traceback ...\nRuntimeError: worker died | badly"))
    specs.append(dict(trial_id="t13", label="FLoRA", method="flora", partition="iid", seed=0, status="RUNNING",
                      rows=rounds_rows("flora", NAN, 0.50)[:2], error=None))
    return specs


def sweep_frames(with_setting: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, trials = [], []
    for s in trial_specs():
        axes = {"method.name": s["method"], "ranks.distribution": "homogeneous" if s["method"] == "fedit" else "groups",
                "data.partition": s["partition"], "data.alpha": 0.5, "seed": s["seed"]}
        extra = {"setting": IID if s["partition"] == "iid" else DIR} if with_setting else {}
        for row in s["rows"]:
            rows.append({**row, "trial_id": s["trial_id"], "status": s["status"], "label": s["label"], **axes, **extra})
        accs = [r["accuracy"] for r in s["rows"] if r["accuracy"] == r["accuracy"]]
        trials.append({"trial_id": s["trial_id"], "status": s["status"], "label": s["label"], **axes,
                       "final_accuracy": accs[-1] if accs else NAN, "best_accuracy": max(accs) if accs else NAN,
                       "wall_seconds": 1.5, "rounds_completed": len(s["rows"]), "error": s["error"]})
    # shuffle the method order so that the table has to sort it
    results = pd.DataFrame(rows).sort_values(["label", "trial_id", "round"], ascending=[False, True, True])
    return results.reset_index(drop=True), pd.DataFrame(trials)


def write_run(folder, spec: dict, finished: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config_for(spec["method"], spec["partition"], spec["seed"]),
                                                       sort_keys=False))
    rounds = pd.DataFrame(spec["rows"])
    rounds.to_csv(folder / "rounds.csv", index=False)
    clients = [{"round": r, "client": c, "rank": [1, 2, R][c % 3], "n_examples": 20, "train_loss": 0.5, "steps": 2,
                "compute_seconds": 0.1, "weight": 1 / 3, "restarts": 0} for r in rounds["round"] for c in (0, 2, 4)]
    pd.DataFrame(clients).to_csv(folder / "clients.csv", index=False)
    partition = [{"client": c, "n_train": 20, "n_test": 5, "rotten": 8 + c, "fresh": 12 - c} for c in range(6)]
    pd.DataFrame(partition).to_csv(folder / "partition.csv", index=False)
    if spec["method"] == "fedplora":
        sim = [{"round": r, "module": "layer.0.attention.query", "slot_i": i, "slot_j": j,
                "cosine": 1.0 if i == j else 0.1 * ((i + j) % 3)} for r in rounds["round"] for i in range(R)
               for j in range(R)]
        pd.DataFrame(sim).to_csv(folder / "similarity.csv", index=False)
    if finished:
        acc = rounds["accuracy"].dropna()
        summary = {"method": spec["method"], "rounds": ROUNDS, "final": {"accuracy": float(acc.iloc[-1])},
                   "best": {"accuracy": float(acc.max())}, "bytes_down_total": int(rounds["bytes_down"].sum()),
                   "bytes_up_total": int(rounds["bytes_up"].sum()), "wall_seconds": 2.0, "overhead_ratio": 1.05,
                   "versions": {"python": "3.11"}}
        (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def frames():
    return sweep_frames()


@pytest.fixture
def sweep_dir(tmp_path, frames):
    results, trials = frames
    d = tmp_path / "sweep"
    d.mkdir()
    results.to_parquet(d / "results.parquet")
    trials.to_parquet(d / "trials.parquet")
    for spec in trial_specs():
        write_run(d / "trials" / spec["trial_id"], spec, finished=spec["status"] == "TERMINATED")
    return d


# ------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("config, expected", [
    ({"method": {"name": "fedplora"}, "ranks": {"max_rank": 16}}, "Fed-PLoRA"),
    ({"method": {"name": "fedit"}, "ranks": {"distribution": "homogeneous", "max_rank": 16}}, "FedIT (R)"),
    ({"method": {"name": "fedit"}, "ranks": {"distribution": "homogeneous", "max_rank": 16, "rank": 8}},
     "FedIT (R/2)"),
    ({"method": {"name": "fedit"}, "ranks": {"max_rank": 16, "rank": 4}}, "FedIT (rank 4)"),
    ({"method.name": "flora"}, "FLoRA"), ({"method.name": "flexlora"}, "FlexLoRA"),
    ({"method.name": "hetlora"}, "HETLoRA"), ({"method.name": "ffa_lora"}, "FFA-LoRA"),
    ({"method.name": "pfedlora"}, "pFedLoRA"), ({"method.name": "fedsa_lora"}, "FedSA-LoRA"),
    ({"method.name": "fedex_lora"}, "FedEx-LoRA"), ({"method.name": "rbla"}, "RBLA"),
    ({"method": {"name": "fedplora", "unselected": "drop"}}, "Fed-PLoRA (drop)"),
    ({"method": {"name": "fedplora", "selection": "fixed"}}, "Fed-PLoRA (fixed)"),
    ({"method": {"name": "fedplora", "selection": "weight_norm"}}, "Fed-PLoRA (weight norm)"),
    ({"method": {"name": "fedplora", "scaling": "rslora"}}, "Fed-PrsLoRA"),
    ({"method.name": "hetlora", "method.train_head": False}, "HETLoRA (frozen head)"),
])
def test_method_label(config, expected):
    assert method_label(config) == expected


def test_fedit_label_uses_the_reference_rank():
    # FedIT run at max_rank 8 in a sweep whose heterogeneous R is 16 is "FedIT (R/2)"
    assert method_label({"method.name": "fedit", "ranks.max_rank": 8}, global_rank=16) == "FedIT (R/2)"


def test_setting_labels_and_trial_states():
    assert setting_label("iid") == "IID"
    assert setting_label("dirichlet", 0.5) == "non-IID (Dir 0.5)"
    assert setting_label("pathological", None, 1) == "non-IID (1 class/client)"
    assert setting_label("natural") == "non-IID (natural)"
    frame = add_setting(pd.DataFrame({"data.partition": ["iid", "iid"], "data.glue_task": ["cola", "rte"]}))
    assert frame["setting"].tolist() == ["CoLA", "RTE"]
    assert [trial_state(s) for s in ("TERMINATED", "ERROR", "RUNNING", None)] == ["ok", "failed", "incomplete", "ok"]


# ------------------------------------------------------------------------------------------ tables
def test_comparison_table_means_stds_and_order(frames):
    results, _ = frames
    table = comparison_table(results, metric="accuracy")
    assert list(table.index) == ["FedIT (R)", "HETLoRA", "Fed-PLoRA"]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == [IID, DIR, "Avg"]
    sd2 = math.sqrt(2 * 0.02**2)  # two seeds 0.04 apart
    sd1 = math.sqrt(2 * 0.01**2)  # two seeds 0.02 apart
    expected = {("FedIT (R)", IID): (0.82, sd2), ("FedIT (R)", DIR): (0.72, sd2),
                ("HETLoRA", IID): (0.72, sd2), ("HETLoRA", DIR): (0.61, sd1),
                ("Fed-PLoRA", IID): (0.79, sd1), ("Fed-PLoRA", DIR): (0.76, sd1)}
    for (row, col), (mean, std) in expected.items():
        assert table.loc[row, (col, "mean")] == pytest.approx(mean, abs=1e-12)
        assert table.loc[row, (col, "std")] == pytest.approx(std, abs=1e-12)
        assert table.loc[row, (col, "n")] == 2
    # Avg: mean of the column means; std over the per-seed averages across settings
    assert table.loc["FedIT (R)", ("Avg", "mean")] == pytest.approx(0.77, abs=1e-12)
    assert table.loc["FedIT (R)", ("Avg", "std")] == pytest.approx(np.std([0.75, 0.79], ddof=1), abs=1e-12)
    assert table.loc["HETLoRA", ("Avg", "mean")] == pytest.approx(0.665, abs=1e-12)
    assert table.loc["Fed-PLoRA", ("Avg", "mean")] == pytest.approx(0.775, abs=1e-12)
    assert table.loc["Fed-PLoRA", ("Avg", "min")] == pytest.approx(0.765, abs=1e-12)


def test_failed_and_running_trials_are_excluded_but_listed(frames):
    results, _ = frames
    table = comparison_table(results)
    assert table.attrs["excluded"] == {"t12": "ERROR", "t13": "RUNNING"}
    assert "FLoRA" not in table.index  # only a running trial
    assert table.loc["Fed-PLoRA", (IID, "n")] == 2  # the failed seed-2 trial (0.10) is not averaged
    with_running = comparison_table(results, include_running=True)
    assert with_running.loc["FLoRA", (IID, "mean")] == pytest.approx(0.50)
    assert list(with_running.index) == ["FedIT (R)", "FLoRA", "HETLoRA", "Fed-PLoRA"]
    assert with_running.attrs["excluded"] == {"t12": "ERROR"}


def test_best_stat_and_given_setting_column():
    results, _ = sweep_frames(with_setting=True)
    table = comparison_table(results, stat="best")
    assert table.loc["HETLoRA", (IID, "mean")] == pytest.approx((0.76 + 0.74) / 2, abs=1e-12)
    vals = trial_values(results[results["status"] == "TERMINATED"], "accuracy", "best")
    assert vals.loc[vals["trial_id"] == "t04", "round"].item() == 2
    loss = comparison_table(results, metric="eval_loss", stat="best")  # lower is better: min per trial
    assert loss.loc["Fed-PLoRA", (IID, "mean")] == pytest.approx(1 - 0.79, abs=1e-12)
    assert not loss.attrs["percent"] and not loss.attrs["higher_is_better"]


def test_row_order_follows_the_paper():
    labels = ["Fed-PLoRA", "pFedLoRA", "HETLoRA", "FedIT (R/2)", "Untuned", "FlexLoRA", "FLoRA", "FFA-LoRA",
              "FedIT (R)", "Fed-PLoRA (drop)"]
    assert sorted(labels, key=row_order_key) == ["Untuned", "FedIT (R)", "FedIT (R/2)", "FLoRA", "FlexLoRA",
                                                 "HETLoRA", "FFA-LoRA", "pFedLoRA", "Fed-PLoRA (drop)", "Fed-PLoRA"]


def test_format_markdown_bolds_the_best_and_daggers_the_ties(frames):
    # two seeds, no per-example records: t-intervals over seeds (cut at 100), paired t-tests over seeds.
    # FedIT (R) - HETLoRA is +0.10 on both IID seeds (certain: significant); every other gap is not.
    table = comparison_table(frames[0])
    lines = format_table(table, fmt="markdown").splitlines()
    assert lines[0] == f"| Method | {IID} | {DIR} | Avg |"
    assert lines[2] == "| FedIT (R) | **82.00 [56.59, 100.00]** | 72.00 [46.59, 97.41]† | 77.00 [51.59, 100.00]† |"
    assert lines[3] == "| HETLoRA | 72.00 [46.59, 97.41] | 61.00 [48.29, 73.71] | 66.50 [47.44, 85.56]† |"
    assert lines[4] == "| Fed-PLoRA | 79.00 [66.29, 91.71]† | **76.00 [63.29, 88.71]** | **77.50 [64.79, 90.21]** |"
    std = format_table(table, fmt="markdown", dev="std").splitlines()
    assert std[2] == "| FedIT (R) | **82.00 ± 2.83** | 72.00 ± 2.83† | 77.00 ± 2.83† |"
    hetero = format_table(table, fmt="markdown", hetero=True, dev="std").splitlines()
    assert hetero[4] == "| Fed-PLoRA | _79.00 ± 1.41_† | **_76.00 ± 1.41_** | **_77.50 ± 1.41_** |"
    ranged = format_table(table, fmt="markdown", dev="range").splitlines()
    assert "**82.00 (+2.00/−2.00)**" in ranged[2]
    text_fmt = format_table(table, fmt="text")
    assert "82.00 [56.59, 100.00]*" in text_fmt and "*: best mean among the cells significantly above" in text_fmt
    assert format_table(table, fmt="markdown", best=None).count("**") == 0


def test_format_latex_escapes_and_bolds(frames):
    results = frames[0].replace({"label": {"HETLoRA": "HET_LoRA & 50%"}})
    table = comparison_table(results)
    tex = format_table(table, fmt="latex")
    assert r"HET\_LoRA \& 50\%" in tex
    assert r"\textbf{82.00} {\scriptsize [56.59, 100.00]}" in tex and r"79.00$^\dagger$ {\scriptsize" in tex
    assert r"\textbf{82.00 $\pm$ 2.83}" in format_table(table, fmt="latex", dev="std")
    assert tex.startswith(r"\begin{tabular}{lccc}") and tex.rstrip().endswith(r"\end{tabular}")
    assert r"Method & IID & non-IID (Dir 0.5) & Avg \\" in tex
    assert latex_escape("a_b#c$d{e}~^\\") == r"a\_b\#c\$d\{e\}\textasciitilde{}\textasciicircum{}\textbackslash{}"
    ranged = format_table(table, fmt="latex", dev="range", hetero=True)
    assert r"\textbf{\underline{$76.00^{+1.00}_{-1.00}$}}" in ranged


def test_single_setting_has_no_avg_and_csv_roundtrip(frames, tmp_path):
    results = frames[0][frames[0]["data.partition"] == "iid"]
    table = comparison_table(results)
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == [IID]
    path = write_table(table, tmp_path / "t.csv")
    back = pd.read_csv(path).set_index("label")
    assert list(back.columns[:5]) == ["setting", "accuracy", "accuracy_lo", "accuracy_hi", "n_seeds"]
    assert back.loc["Fed-PLoRA", "accuracy"] == pytest.approx(0.79)
    assert back.loc["Fed-PLoRA", "accuracy_hi"] == pytest.approx(table.loc["Fed-PLoRA", (IID, "hi")])
    assert back.loc["Fed-PLoRA", "interval"] == "seeds" and back.loc["Fed-PLoRA", "mark"] == "tie"
    leaders = column_leaders(table)
    assert leaders.loc[0, "leader"] == "FedIT (R)" and leaders.loc[0, "runner_up"] == "Fed-PLoRA"
    assert leaders.loc[0, "margin"] == pytest.approx(0.03, abs=1e-12) and leaders.loc[0, "ties"] == ["Fed-PLoRA"]


def test_unknown_metric_is_a_clear_error(frames):
    with pytest.raises(ValueError, match="rouge_l.*available"):
        comparison_table(frames[0], metric="rouge_l")


# ------------------------------------------------------------------------------------------ loading
def test_load_sweep_types_labels_and_per_trial_frames(sweep_dir):
    sweep = load_sweep(sweep_dir)
    assert sweep.status_counts == {"TERMINATED": 12, "ERROR": 1, "RUNNING": 1}
    assert sweep.failed["trial_id"].tolist() == ["t12"]
    assert str(sweep.results["round"].dtype) == "Int64" and sweep.results["accuracy"].dtype == "float64"
    assert set(sweep.results["setting"]) == {IID, DIR}
    assert set(sweep.similarity["trial_id"]) == {"t08", "t09", "t10", "t11", "t12"}
    assert len(sweep.partition) == 14 * 6 and "trial_id" in sweep.clients.columns
    assert sweep.run("t00").label == "FedIT (R)"


def test_load_sweep_without_parquet_rebuilds_from_trial_folders(sweep_dir):
    (sweep_dir / "results.parquet").unlink()
    (sweep_dir / "trials.parquet").unlink()
    sweep = load_sweep(sweep_dir)
    table = comparison_table(sweep.results)
    assert table.loc["Fed-PLoRA", (DIR, "mean")] == pytest.approx(0.76, abs=1e-12)
    assert table.attrs["excluded"] == {"t12": "INCOMPLETE", "t13": "INCOMPLETE"}


def test_load_run(sweep_dir):
    run = load_run(sweep_dir / "trials" / "t08")
    assert run.label == "Fed-PLoRA" and run.status == "TERMINATED"
    frame = run.as_results()
    assert frame["setting"].unique().tolist() == [IID] and frame["trial_id"].unique().tolist() == ["t08"]
    assert frame["ranks.max_rank"].iloc[0] == R and len(run.similarity) == ROUNDS * R * R
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(sweep_dir / "nowhere")


# ------------------------------------------------------------------------------------------ plots
def _png(path) -> bool:
    return path is not None and path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_each_plot_writes_a_png(frames, sweep_dir, tmp_path):
    results, _ = frames
    sweep = load_sweep(sweep_dir)
    assert _png(plots.plot_curves(results, tmp_path / "curves.png", metric="accuracy"))
    assert _png(plots.plot_noise(results, tmp_path / "noise.png"))
    assert _png(plots.plot_by_axis(results, tmp_path / "by.png", axis="ranks.distribution"))
    assert _png(plots.plot_similarity(sweep.similarity, tmp_path / "sim.png", trial_id="t08"))
    assert _png(plots.plot_communication(results, tmp_path / "comm.png"))
    assert _png(plots.plot_partition(sweep.partition, tmp_path / "part.png", trial_id="t00"))
    no_labels = sweep.partition[["trial_id", "client", "n_train", "n_test"]]
    assert _png(plots.plot_partition(no_labels, tmp_path / "part2.png"))


def test_plots_return_none_when_data_is_missing(frames, tmp_path, caplog):
    results, _ = frames
    no_noise = results.drop(columns=["init_noise_fn", "init_noise_param", "agg_noise", "agg_noise_rankwise"])
    assert plots.plot_noise(no_noise, tmp_path / "a.png") is None
    assert plots.plot_similarity(None, tmp_path / "b.png") is None
    assert plots.plot_similarity(pd.DataFrame(), tmp_path / "b.png") is None
    assert plots.plot_by_axis(results, tmp_path / "c.png", axis="train.lr") is None
    assert plots.plot_partition(None, tmp_path / "d.png") is None
    assert plots.plot_curves(results, tmp_path / "e.png", metric="rouge_l") is None
    assert plots.plot_communication(results.drop(columns=["bytes_up"]), tmp_path / "f.png") is None
    assert not list(tmp_path.glob("*.png"))
    assert "plot_similarity skipped" in caplog.text


# ------------------------------------------------------------------------------------------ report
def test_report_on_a_sweep_folder(sweep_dir, capsys):
    assert report_main([str(sweep_dir), "--axis", "ranks.distribution"]) == 0
    text = (sweep_dir / "report.md").read_text()
    table_md = format_table(comparison_table(load_sweep(sweep_dir)), fmt="markdown")
    assert table_md in text
    assert "## Trials" in text and "| t12 | Fed-PLoRA | IID | 2 | ERROR |" in text
    assert "RuntimeError: worker died \\| badly" in text and "| t13 | FLoRA | IID | 0 | RUNNING |" in text
    assert "Not in the table: 2 trials" in text
    assert (f"In {DIR}: Fed-PLoRA has the best mean (76.00 [63.29, 88.71]); FedIT (R) is not distinguishable from "
            "it at this budget (†), so no single method leads." in text)
    assert "leads with" not in text and "ahead of" not in text  # ties are never announced as leads
    assert "FedIT (R) is better than HETLoRA: +10.00 points" in text  # the one significant gap (IID)
    assert "Focus method: FedIT (R)" in text  # no sweep.yaml here: the first trial's method
    for name in ("comparison.csv", "comparison.tex", "figures/curves_accuracy.png", "figures/noise.png",
                 "figures/communication_accuracy.png", "figures/similarity_iid.png", "figures/partition_iid.png",
                 "figures/by_ranks.distribution.png"):
        assert (sweep_dir / name).is_file(), name
        assert f"]({name})" in text or name.startswith("comparison.tex") or name in text
    out = capsys.readouterr().out
    assert "82.00 [56.59, 100.00]*" in out and f"report: {sweep_dir / 'report.md'}" in out


def test_report_falls_back_to_an_available_metric(sweep_dir):
    assert report_main([str(sweep_dir), "--metric", "rouge_l", "--stat", "best", "--no-figures"]) == 0
    text = (sweep_dir / "report.md").read_text()
    assert "`rouge_l` has no values here; the report uses `accuracy`." in text


def test_report_on_a_single_run_folder(tmp_path, capsys):
    spec = trial_specs()[8]  # Fed-PLoRA, IID, seed 0
    write_run(tmp_path / "run", spec)
    assert report_main([str(tmp_path / "run")]) == 0
    text = (tmp_path / "run" / "report.md").read_text()
    assert "# Run report: run" in text
    assert f"| Method | {IID} |" in text and "| Fed-PLoRA | 78.00 |" in text  # one seed, no records: no interval
    assert "Final accuracy 78.00 at round 4; best 78.00 at round 4 (2 evaluated rounds after training)" in text
    assert (tmp_path / "run" / "figures" / "curves_accuracy.png").is_file()
    assert (tmp_path / "run" / "figures" / "similarity_iid.png").is_file()
    assert "Fed-PLoRA" in capsys.readouterr().out


def test_report_on_a_partial_run_and_a_bad_folder(tmp_path, capsys):
    spec = trial_specs()[0]
    write_run(tmp_path / "run", {**spec, "rows": spec["rows"][:1]}, finished=False)  # no evaluation yet
    assert report_main([str(tmp_path / "run"), "--no-figures"]) == 0
    assert "No finished trial has an evaluated round yet." in (tmp_path / "run" / "report.md").read_text()
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "neither a sweep folder" in capsys.readouterr().err


def test_sweep_writer_vocabulary_defaults_and_grid_rows(frames, tmp_path):
    # statuses as sweeps/results.py writes them, no settings axis ("default"), labels = raw method names
    results, trials = frames
    status = {"TERMINATED": "completed", "ERROR": "error", "RUNNING": "pending"}
    lr = {0: 0.001, 1: 0.002, 2: 0.001}
    for frame in (results, trials):
        frame["status"] = frame["status"].map(status)
        frame["train.lr"] = frame["seed"].map(lr)
        frame["setting"] = frame["data.partition"].map({"iid": "default", "dirichlet": DIR})
        frame["label"] = frame["label"].where(frame["label"] != "HETLoRA", "hetlora")
    trials["metric"] = "accuracy"
    table = comparison_table(results, rows=["label", "train.lr"])
    assert list(table.index) == ["FedIT (R) (train.lr=0.001)", "FedIT (R) (train.lr=0.002)",
                                 "HETLoRA (train.lr=0.001)", "HETLoRA (train.lr=0.002)",
                                 "Fed-PLoRA (train.lr=0.001)", "Fed-PLoRA (train.lr=0.002)"]
    assert table.loc["HETLoRA (train.lr=0.002)", (IID, "mean")] == pytest.approx(0.74)
    assert table.attrs["excluded"] == {"t12": "error", "t13": "pending"}
    d = tmp_path / "sweep"
    d.mkdir()
    results.to_parquet(d / "results.parquet")
    trials.to_parquet(d / "trials.parquet")
    assert report_main([str(d), "--no-figures"]) == 0
    text = (d / "report.md").read_text()
    assert "Rows are split by `train.lr`" in text and "| Fed-PLoRA (train.lr=0.002) |" in text
    # the focus (the first trial's method: FedIT) is compared within its train.lr group only (one seed each
    # and no per-example records: no test is possible, so nothing is claimed)
    assert ("FedIT (R) (train.lr=0.001) vs HETLoRA (train.lr=0.001): no paired test was possible" in text)
    assert "FedIT (R) (train.lr=0.001) vs HETLoRA (train.lr=0.002)" not in text
    assert "| t13 | FLoRA | IID | 0 | pending |" in text


# ------------------------------------------------------------------------------------------ evidence
# A one-seed sweep with per-example records on a 400-example test set (examples 0-255 of class 1: majority
# rate 64%). Round 0 (untrained) predicts class 0 everywhere (36%). Examples each method gets wrong at its
# final round: FLoRA differs from Fed-PLoRA on 2 examples (a tie); FedIT (R) IID is wrong on 40 more (all
# minority-class) examples (significantly worse, still above the majority rate); FedIT (R) non-IID is
# 65% with all its errors on the majority class (not significantly above 64%); HETLoRA predicts class 1.
WRONG = {IID: {"Fed-PLoRA": range(60), "FLoRA": range(62), "FedIT (R)": [*range(60), *range(256, 296)],
               "HETLoRA": "majority"},
         DIR: {"Fed-PLoRA": range(80), "FLoRA": range(82), "FedIT (R)": range(140), "HETLoRA": "majority"}}
N_TEST, N_MAJOR = 400, 256
METHOD_NAMES = {"Fed-PLoRA": "fedplora", "FLoRA": "flora", "FedIT (R)": "fedit", "HETLoRA": "hetlora"}
NOTE = "client 3: topped up from 5 to 8 examples (Dirichlet split)"


def _predictions(wrong) -> np.ndarray:
    labels = (np.arange(N_TEST) < N_MAJOR).astype(int)
    if wrong == "majority":
        return np.ones(N_TEST, dtype=int)
    pred = labels.copy()
    pred[list(wrong)] = 1 - labels[list(wrong)]
    return pred


def write_evidence_trial(folder, label: str, partition: str, wrong) -> None:
    """A trial folder in the new contract: round 0 in rounds.csv, examples.parquet, baselines in summary.json."""
    from workers.task_metrics import matthews_corrcoef

    folder.mkdir(parents=True)
    method = METHOD_NAMES[label]
    (folder / "config.yaml").write_text(yaml.safe_dump(config_for(method, partition, 0), sort_keys=False))
    labels = (np.arange(N_TEST) < N_MAJOR).astype(int)
    preds = {0: np.zeros(N_TEST, dtype=int), 4: _predictions(wrong)}
    preds[2] = preds[4].copy()
    preds[2][100:110] = 1 - labels[100:110]  # round 2: 10 more mistakes than the final round
    frames, rows = [], []
    for rnd, pred in sorted(preds.items()):
        score = (pred == labels).astype(float)
        frames.append(pd.DataFrame({"round": rnd, "scope": "global", "client": -1, "example": np.arange(N_TEST),
                                    "label": labels, "prediction": pred, "score": score, "loss": 1.0 - score}))
        if rnd == 0:
            rows.append({"round": 0, "accuracy": score.mean(), "mcc": matthews_corrcoef(pred, labels),
                         "eval_loss": 1 - score.mean(), "eval_examples": N_TEST})
    pd.concat(frames).to_parquet(folder / "examples.parquet")
    for row in rounds_rows(method, float((preds[4] == labels).mean()), float((preds[2] == labels).mean())):
        if row["accuracy"] == row["accuracy"]:
            row["mcc"] = matthews_corrcoef(preds[row["round"]], labels)
        rows.append(row)
    pd.DataFrame(rows).to_csv(folder / "rounds.csv", index=False)
    summary = {"method": method, "rounds": ROUNDS, "final": {}, "best": {}, "bytes_down_total": 1, "bytes_up_total": 1,
               "wall_seconds": 1.0, "test_examples": N_TEST, "data_notes": [NOTE] if partition == "dirichlet" else [],
               "baselines": {"majority_class": 1, "majority_rate": N_MAJOR / N_TEST,
                             "minority_rate": 1 - N_MAJOR / N_TEST,
                             "untrained": {"accuracy": 1 - N_MAJOR / N_TEST, "mcc": 0.0}}}
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def evidence_dir(tmp_path_factory):
    """A sweep folder without result tables (rebuilt from the trial folders) and with a sweep.yaml.

    Shared by the tests of this module (read-only: a test that writes into it works on a copy).
    """
    d = tmp_path_factory.mktemp("evidence") / "sweep_folder"
    for setting, partition in ((IID, "iid"), (DIR, "dirichlet")):
        for label, wrong in WRONG[setting].items():
            write_evidence_trial(d / "trials" / f"{METHOD_NAMES[label]}-{partition}", label, partition, wrong)
    variants = [{"label": lab, "set": {"method.name": m}} for lab, m in METHOD_NAMES.items()]
    (d / "sweep.yaml").write_text(yaml.safe_dump({"spec": {"name": "evidence_demo", "axes": {"variants": variants}}}))
    return d


def test_examples_baselines_and_round_zero_load(evidence_dir, sweep_dir):
    sweep = load_sweep(evidence_dir)
    assert sweep.name == "evidence_demo"
    assert set(sweep.examples["trial_id"]) == {"fedplora-iid", "flora-iid", "fedit-iid", "hetlora-iid",
                                               "fedplora-dirichlet", "flora-dirichlet", "fedit-dirichlet",
                                               "hetlora-dirichlet"}
    assert len(sweep.examples) == 8 * 3 * N_TEST and str(sweep.examples["example"].dtype) == "int64"
    some = sweep.load_examples({"flora-iid": [0, 4]})
    assert set(some["round"]) == {0, 4} and set(some["trial_id"]) == {"flora-iid"}
    base = sweep.baselines.set_index("trial_id")
    assert base.loc["fedit-iid", "majority_rate"] == pytest.approx(0.64)
    assert base.loc["fedit-iid", "test_examples"] == 400
    assert base.loc["fedit-dirichlet", "data_notes"] == (NOTE,) and base.loc["fedit-iid", "data_notes"] == ()
    # round 0 is the untrained model: neither the final nor the best value of a trial
    vals = trial_values(sweep.results, "accuracy", "best").set_index("trial_id")
    assert vals.loc["fedplora-iid", "round"] == 4 and vals.loc["fedplora-iid", "value"] == pytest.approx(0.85)
    only_zero = sweep.results[(sweep.results["round"] == 0)]
    assert not len(trial_values(only_zero, "accuracy", "final"))
    # folders written before examples and baselines existed still load, with empty frames
    old = load_sweep(sweep_dir)
    assert not len(old.examples) and list(old.examples.columns[:3]) == ["round", "scope", "client"]
    assert old.baselines["majority_rate"].isna().all() and not len(load_run(sweep_dir / "trials" / "t00").examples)


def test_table_has_baselines_intervals_and_significance_marks(evidence_dir):
    table = comparison_table(load_sweep(evidence_dir))
    assert list(table.index) == ["Majority class", "Untrained", "FedIT (R)", "FLoRA", "HETLoRA", "Fed-PLoRA"]
    cell = table.loc["Fed-PLoRA", IID]
    assert cell["mean"] == pytest.approx(0.85) and cell["lo"] < 0.85 < cell["hi"] and cell["interval"] == "examples"
    assert cell["hi"] - cell["lo"] == pytest.approx(2 * 1.96 * math.sqrt(0.85 * 0.15 / 400), abs=0.012)
    assert (cell["mark"], cell["status"], cell["test_examples"], cell["n"]) == ("best", "", 400, 1)
    assert table.loc["FLoRA", (IID, "mark")] == "tie"  # 2 discordant examples: McNemar p = 0.5
    assert table.loc["FedIT (R)", (IID, "mark")] == "" and table.loc["FedIT (R)", (IID, "status")] == ""
    assert table.loc["HETLoRA", (IID, "status")] == "≈ majority" and table.loc["HETLoRA", (IID, "mark")] == ""
    # 65% vs a 64% majority rate on the same examples (144 vs 140 discordant): not significantly above it
    assert table.loc["FedIT (R)", (DIR, "status")] == "≈ majority"
    assert table.loc["Majority class", (IID, "mean")] == pytest.approx(0.64)
    assert table.loc["Untrained", (IID, "mean")] == pytest.approx(0.36)
    assert table.loc["Fed-PLoRA", (IID, "best")] == pytest.approx(0.85)  # best == final (round 2 is lower)
    assert table.loc["HETLoRA", ("Avg", "status")] == "≈ baseline in 2/2"
    md = format_table(table, fmt="markdown")
    assert "| HETLoRA | 64.00 [" in md and "] ≈ majority |" in md and "**85.00 [" in md and "]†" in md
    tex = format_table(table, fmt="latex")
    assert r"\textbf{85.00}" in tex and r"84.50$^\dagger$" in tex and r"$\approx$ majority" in tex


@pytest.fixture(scope="module")
def evidence_report(evidence_dir, tmp_path_factory):
    """The default report of a copy of the evidence sweep: ``(folder, report text)``."""
    d = tmp_path_factory.mktemp("evidence_report") / "sweep_folder"
    shutil.copytree(evidence_dir, d)
    assert report_main([str(d), "--no-figures"]) == 0
    return d, (d / "report.md").read_text()


def test_report_claims_only_significant_differences(evidence_report):
    _, text = evidence_report
    assert text.startswith("# Sweep report: evidence_demo\n")  # the sweep's name, not the folder's
    assert "Focus method: Fed-PLoRA" in text  # the sweep's first variant
    assert "| Majority class | 64.00 | 64.00 | 64.00 |" in text and "| Untrained | 36.00 [" in text
    assert f"- {NOTE} (4 of 8 trials)" in text and "- Test set: 400 examples per trial" in text
    assert "HETLoRA (64.00 [" in text and "is not significantly above the majority-class rate: not a result." in text
    assert ("Fed-PLoRA and FLoRA are not distinguishable at this budget: +0.50 points, 95% CI" in text
            and "test examples per seed (now 400)" in text)
    assert "Fed-PLoRA is better than FedIT (R): +10.00 points" in text
    assert "Fed-PLoRA vs HETLoRA" not in text and "Fed-PLoRA and HETLoRA" not in text  # not a result: not compared
    assert "leads with" not in text and "so no single method leads" in text
    assert "`mcc` (x100) of the same trials" in text and "bootstrap over test examples (one seed" in text
    assert "Untuned" not in text


def test_report_and_dataframe_api_give_the_same_numbers(evidence_report):
    folder, text = evidence_report
    csv = pd.read_csv(folder / "comparison.csv")
    table = comparison_table(load_sweep(folder))
    api = tidy_table(table)
    assert list(csv.columns) == list(api.columns) and len(csv) == len(api)
    for col in ("accuracy", "accuracy_lo", "accuracy_hi", "n_seeds", "p_untrained", "p_majority"):
        assert np.allclose(csv[col].to_numpy(float), api[col].to_numpy(float), equal_nan=True, rtol=0, atol=1e-12)
    assert csv["mark"].fillna("").tolist() == api["mark"].tolist()
    assert format_table(table, fmt="markdown") in text


def test_focus_is_a_parameter(evidence_dir, tmp_path):
    shutil.copytree(evidence_dir, tmp_path / "copy")
    assert report_main([str(tmp_path / "copy"), "--no-figures", "--focus", "FedIT (R)"]) == 0
    text = (tmp_path / "copy" / "report.md").read_text()
    assert "Focus method: FedIT (R)" in text and "FedIT (R) is worse than Fed-PLoRA: -10.00 points" in text
    assert "FedIT (R) is not compared with the other methods here: it is not a result." in text  # the non-IID cell


def test_setup_lists_only_the_options_that_applied():
    from analysis.describe import option_lines

    configs = pd.DataFrame({
        "trial_id": ["a", "b", "c"], "data.partition": ["iid", "dirichlet", "dirichlet"],
        "data.alpha": [0.5, 0.3, 0.3], "data.classes_per_client": [2, 2, 2], "data.path": ["x.csv"] * 3,
        "data.max_length": [48] * 3, "data.global_test_size": [200] * 3, "data.max_examples": [None] * 3,
        "ranks.distribution": ["groups", "homogeneous", "groups"], "ranks.rank": [None, 4, None]})
    fixed, varied = option_lines(configs)
    assert "`data.alpha` = 0.3 (data.partition dirichlet only)" in fixed  # IID's default is not "varied"
    assert "classes_per_client" not in fixed + varied and "max_examples" not in fixed
    assert "`data.path` = x.csv" in fixed and "`data.max_length` = 48" in fixed
    assert "`data.global_test_size` = 200" in fixed
    assert "`ranks.rank` = 4 (ranks.distribution homogeneous only)" in fixed
    assert varied == "- Varied: `data.partition`: iid, dirichlet; `ranks.distribution`: groups, homogeneous."


def test_figures_show_values_baselines_and_round_zero(evidence_dir, frames, monkeypatch, tmp_path):
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figs.append(fig) or out)
    sweep = load_sweep(evidence_dir)
    plots.plot_curves(sweep.results, tmp_path / "c.png", baselines=sweep.baselines)
    ax = figs[-1].axes[0]
    curve = next(line for line in ax.lines if line.get_label() == "Fed-PLoRA")
    assert curve.get_xdata()[0] == 0 and curve.get_marker() == "o"  # starts at the untrained model; few rounds
    assert any(line.get_label() == "majority class" for line in ax.lines)
    assert figs[-1].legends and all(a.get_legend() is None for a in figs[-1].axes)  # the legend is outside
    plots.plot_curves(frames[0], tmp_path / "c2.png")  # two seeds: shaded 95% bands
    assert figs[-1].axes[0].collections
    plots.plot_noise(frames[0], tmp_path / "n.png")
    figs[-1].canvas.draw()
    for ax in figs[-1].axes:
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) >= 2, ax.get_ylabel()
    assert "= 0 every round (not drawn): Fed-PLoRA" in figs[-1].axes[0].get_xlabel()
    write_run(tmp_path / "simrun", trial_specs()[8])
    plots.plot_similarity(load_run(tmp_path / "simrun").similarity, tmp_path / "s.png")
    assert figs[-1].axes[0].get_xlabel() == "rank slot j" and figs[-1].axes[0].get_ylabel() == "rank slot i"


def test_trials_table_values_ignore_round_zero():
    from sweeps.results import _final_best

    rounds = pd.DataFrame({"round": [0, 1, 2, 3], "accuracy": [0.95, NAN, 0.8, 0.7],
                           "train_loss": [NAN, 1.0, 0.5, 0.4], "eval_loss": [0.1, NAN, 0.5, 0.6]})
    assert _final_best(rounds) == {"final_accuracy": 0.7, "best_accuracy": 0.8, "untrained_accuracy": 0.95,
                                   "final_eval_loss": 0.6, "untrained_eval_loss": 0.1, "final_train_loss": 0.4}
    assert _final_best(rounds.iloc[:1]) == {"untrained_accuracy": 0.95, "untrained_eval_loss": 0.1}


def test_the_package_exports_the_evidence_api():
    import analysis

    for name in ("assess", "Evidence", "evidence_table", "tidy_table", "table_legend", "focus_method", "stats",
                 "read_examples", "untrained_values", "write_report"):
        assert hasattr(analysis, name), name
