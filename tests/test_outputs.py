"""Run files and checkpoints: appended CSVs equal a full rewrite; a kill at any point leaves a usable checkpoint."""

import json
import math

import pandas as pd
import pytest
import torch

from orchestrator.checkpoint import append_record, load_checkpoint, read_records, save_checkpoint, state_file
from orchestrator.outputs import RoundFiles
from orchestrator.state import GlobalState


def record(r, evaluated=False, similarity=True):
    rec = {"round": r, "method": "fedplora", "clients": 2, "train_loss": 1.0 / r, "agg_noise": 0.1 * r,
           "client_rows": [{"round": r, "client": c, "rank": c + 1, "n_examples": 10, "train_loss": 0.5 / r,
                            "weight": 0.5} for c in (0, 1)]}
    if evaluated:
        rec.update(accuracy=0.5 + r / 100, eval_loss=float("nan"))
    if similarity:
        rec["similarity"] = [[1.0, 0.1 * r], [0.1 * r, float("nan")]]
    return rec


@pytest.mark.parametrize("round0", [False, True])
def test_appended_files_equal_a_full_rewrite(tmp_path, round0):
    # rounds 1-2 without evaluation, round 3 brings new columns, round 4 has none of them, round 5 no similarity;
    # with round 0 (the untrained model: evaluated, no training columns) written first, as a run does
    head = [{"round": 0, "method": "fedplora", "accuracy": 0.5, "eval_loss": 0.7}] if round0 else []
    records = head + [record(1), record(2), record(3, evaluated=True), record(4), record(5, similarity=False)]
    appended, rewritten = tmp_path / "a", tmp_path / "b"
    appended.mkdir()
    rewritten.mkdir()
    files = RoundFiles(appended, "q")
    files.rewrite(head)
    for k in range(len(head) + 1, len(records) + 1):
        files.append(records[:k])
    RoundFiles(rewritten, "q").rewrite(records)
    for name in ("rounds.csv", "clients.csv", "similarity.csv"):
        assert (appended / name).read_text() == (rewritten / name).read_text(), name
    rounds = pd.read_csv(appended / "rounds.csv")
    assert list(rounds["round"]) == [0] * round0 + [1, 2, 3, 4, 5]
    assert rounds["accuracy"].notna().tolist() == [1] * round0 + [0, 0, 1, 0, 0]
    assert rounds["train_loss"].notna().tolist() == [0] * round0 + [1, 1, 1, 1, 1]
    assert len(pd.read_csv(appended / "clients.csv")) == 10
    assert len(pd.read_csv(appended / "similarity.csv")) == 16


def state(value):
    return GlobalState({"q/A": torch.full((2, 3), value, dtype=torch.float32),
                        "q/dW": torch.full((3, 3), value, dtype=torch.float64)}, {"global_rank": 2})


def test_kill_between_state_file_and_commit_keeps_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "checkpoint"
    append_record(folder, record(1))
    save_checkpoint(folder, state(1.0), {"round": 1, "fingerprint": "f"})
    # round 2: its record is appended and its state file written, then the process dies before the JSON
    append_record(folder, record(2))
    (folder / "state-000002.safetensors").write_bytes(b"torn")
    with open(folder / "records.jsonl", "a") as f:
        f.write('{"round": 3, "meth')
    loaded, info = load_checkpoint(folder)
    assert info == {"round": 1, "fingerprint": "f"} and loaded.meta == {"global_rank": 2}
    assert torch.equal(loaded.tensors["q/A"], torch.full((2, 3), 1.0))
    assert loaded.tensors["q/dW"].dtype == torch.float64  # saved dtypes are kept
    records = read_records(folder, info["round"])
    assert [r["round"] for r in records] == [1] and math.isnan(records[0]["similarity"][1][1])
    assert len((folder / "records.jsonl").read_text().splitlines()) == 1  # the rounds after it are dropped
    # the next commit replaces the state file and removes the older ones
    save_checkpoint(folder, state(2.0), {"round": 2, "fingerprint": "f"})
    assert state_file(folder).name == "state-000002.safetensors"
    assert sorted(p.name for p in folder.glob("state-*")) == ["state-000002.safetensors"]
    assert json.loads((folder / "state.json").read_text())["round"] == 2


def test_missing_records_or_state_file_are_clear_errors(tmp_path):
    folder = tmp_path / "checkpoint"
    save_checkpoint(folder, state(1.0), {"round": 2, "fingerprint": "f"})
    with pytest.raises(FileNotFoundError, match="0 complete rounds but the checkpoint is of round 2"):
        read_records(folder, 2)
    state_file(folder).unlink()
    with pytest.raises(FileNotFoundError, match="names 'state-000002.safetensors', which is missing"):
        load_checkpoint(folder)


def test_records_keep_round_0_before_the_checkpointed_rounds(tmp_path):
    folder = tmp_path / "checkpoint"
    append_record(folder, {"round": 0, "method": "fedplora", "accuracy": 0.5})
    for r in (1, 2):
        append_record(folder, record(r))
    assert [r["round"] for r in read_records(folder, 2)] == [0, 1, 2]
    assert [r["round"] for r in read_records(folder, 1)] == [0, 1]  # round 2 was never checkpointed
    assert [r["round"] for r in read_records(folder, 0)] == [0]  # nothing checkpointed: round 0 survives
    assert len((folder / "records.jsonl").read_text().splitlines()) == 1
    (folder / "records.jsonl").write_text('{"round": 0, "meth')  # killed while writing round 0
    assert read_records(folder, 0) == [] and (folder / "records.jsonl").read_text() == ""


def test_example_files_are_pruned_to_the_checkpoint_and_gathered_in_round_order(tmp_path):
    from orchestrator.outputs import ExampleFiles
    from workers.eval_results import EvalPartial, example_rows

    files = ExampleFiles(tmp_path, tmp_path / "checkpoint" / "examples")
    part = EvalPartial("classification", [0.5, 1.5], [1, 1], preds=[1, 0], labels=[1, 1])
    for r in (4, 0, 2):
        files.write(r, example_rows([("global", -1, [part]), ("personal", 1, [part])], r))
    files.prune(2)  # resumed from the checkpoint of round 2: round 4 is redone
    assert files.rounds() == [0, 2]
    frame = files.gather()
    assert frame.equals(pd.read_parquet(tmp_path / "examples.parquet"))
    assert frame["round"].tolist() == [0] * 4 + [2] * 4 and frame["client"].tolist() == [-1, -1, 1, 1] * 2
    assert frame.dtypes.astype(str).tolist() == ["int64", "str", "int64", "int64", "int64", "int64", "float64",
                                                 "float64"]


def _timed(rec):
    return {**rec, "bytes_down": 10, "bytes_up": 5, "t_round": 1.0, "t_client_compute_sum": 1.0,
            "t_aggregate": 0.1, "t_eval": 0.2}


def test_summary_best_ignores_round_0_and_reports_the_baselines(monkeypatch):
    from orchestrator import outputs

    monkeypatch.setattr(outputs, "package_versions", lambda: {})
    round0 = {"round": 0, "method": "fedplora", "accuracy": 0.95, "mcc": 0.0, "eval_loss": 0.7, "eval_examples": 100.0}
    records = [round0] + [_timed({**record(r), "accuracy": a, "mcc": 0.1 * r, "eval_loss": 0.5})
                          for r, a in ((1, 0.7), (2, 0.8), (3, 0.75))]
    data = {"global_test_size": 100, "global_test_label_counts": [36, 64, 0], "notes": ["a note"]}
    summary = outputs.summarize(records, {"method": {"name": "fedplora"}}, "f", 1.0, 2, {"rounds": 3,
                                "rounds_seconds": 3.0, "seconds": 4.0}, data=data)
    assert summary["rounds"] == 3 and summary["best"]["accuracy"] == 0.8 and summary["final"]["accuracy"] == 0.75
    assert summary["bytes_down_total"] == 30 and summary["round_seconds_total"] == 3.0
    assert summary["test_examples"] == 100 and summary["data_notes"] == ["a note"]
    assert summary["baselines"] == {"majority_class": 1, "majority_rate": 0.64, "minority_rate": 0.36,
                                    "untrained": {"accuracy": 0.95, "mcc": 0.0, "eval_loss": 0.7}}
    assert outputs.baselines([5, 5], {})["majority_class"] == 0  # a tie goes to the smaller class id
    assert outputs.baselines(None, {"rouge_l": 0.1}) == {"majority_class": None, "majority_rate": None,
                                                         "minority_rate": None, "untrained": {"rouge_l": 0.1}}


def test_package_versions_are_the_imported_ones():
    import peft
    import ray
    import torch
    import transformers

    from orchestrator.outputs import package_versions

    versions = package_versions()
    assert versions["torch"] == torch.__version__ and versions["ray"] == ray.__version__
    assert versions["transformers"] == transformers.__version__ and versions["peft"] == peft.__version__
    assert versions["pandas"] == pd.__version__
