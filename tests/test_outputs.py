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


def test_appended_files_equal_a_full_rewrite(tmp_path):
    # rounds 1-2 without evaluation, round 3 brings new columns, round 4 has none of them, round 5 no similarity
    records = [record(1), record(2), record(3, evaluated=True), record(4), record(5, similarity=False)]
    appended, rewritten = tmp_path / "a", tmp_path / "b"
    appended.mkdir()
    rewritten.mkdir()
    files = RoundFiles(appended, "q")
    files.rewrite([])
    for k in range(1, len(records) + 1):
        files.append(records[:k])
    RoundFiles(rewritten, "q").rewrite(records)
    for name in ("rounds.csv", "clients.csv", "similarity.csv"):
        assert (appended / name).read_text() == (rewritten / name).read_text(), name
    rounds = pd.read_csv(appended / "rounds.csv")
    assert list(rounds["round"]) == [1, 2, 3, 4, 5] and rounds["accuracy"].notna().tolist() == [0, 0, 1, 0, 0]
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
