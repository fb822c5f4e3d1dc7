"""The driver and one federated run on Ray: determinism, fault tolerance, resume, outputs, bad input."""

import json
import threading
import time

import pandas as pd
import pytest
import ray
import torch
from ray_helpers import local_ray
from safetensors.torch import load_file

from orchestrator.checkpoint import state_file
from orchestrator.config import load_config
from orchestrator.driver import Driver, WorkerStartupError, client_jobs
from orchestrator.pool import ClientJobError, WorkerPool
from orchestrator.run import main, run

pytestmark = pytest.mark.slow

SMOKE = "configs/tiny_llama_smoke.yaml"


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield from local_ray(num_cpus=4)


def smoke(*overrides, rounds=3):
    return load_config(SMOKE, [f"rounds={rounds}", *overrides])


def run_quiet(cfg, out, **kw):
    return run(cfg, out, log=lambda _: None, **kw)


def final_state(out):
    return load_file(str(state_file(out / "checkpoint")))


def metrics_frame(out):
    frame = pd.read_csv(out / "rounds.csv")
    return frame.drop(columns=[c for c in frame.columns if c.startswith("t_")])


def assert_same_run(a, b):
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    pd.testing.assert_frame_equal(metrics_frame(a), metrics_frame(b))
    ca, cb = (pd.read_csv(x / "clients.csv").drop(columns=["compute_seconds", "restarts"]) for x in (a, b))
    pd.testing.assert_frame_equal(ca, cb)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "examples.parquet"), pd.read_parquet(b / "examples.parquet"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 3-round run with 2 workers: the reference the other runs must equal."""
    out = tmp_path_factory.mktemp("ref") / "run"
    summary = run_quiet(smoke(), out)
    return out, summary


def test_one_run_writes_every_output(reference):
    out, summary = reference
    for name in ("config.yaml", "rounds.csv", "clients.csv", "partition.csv", "summary.json", "similarity.csv",
                 "examples.parquet"):
        assert (out / name).is_file(), name
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2, 3]  # round 0: the untrained model
    assert (rounds["init_noise_fn"][1:] < 1e-5).all()  # Fed-PLoRA: zero initialization noise
    assert {"rouge_l", "bytes_down", "bytes_up", "agg_noise", "train_loss"} <= set(rounds.columns)
    untrained = rounds.iloc[0]
    assert untrained["rouge_l"] == untrained["rouge_l"] and untrained["eval_examples"] == 40
    assert untrained[["train_loss", "agg_noise", "bytes_down", "t_round", "t_eval", "clients"]].isna().all()
    clients = pd.read_csv(out / "clients.csv")
    assert len(clients) == 3 * 3 and set(clients["rank"]) <= {1, 2, 4}
    assert summary["rounds"] == 3 and json.loads((out / "summary.json").read_text())["method"] == "fedplora"
    assert summary["test_examples"] == 40 and isinstance(summary["data_notes"], list)
    assert summary["baselines"] == {"majority_class": None, "majority_rate": None, "minority_rate": None,
                                    "untrained": {"rouge_l": untrained["rouge_l"], "eval_loss": untrained["eval_loss"]}}
    assert summary["final"]["round"] == 3 and summary["best"]["rouge_l"] == rounds["rouge_l"][1:].max()
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and (out / "adapter" / "adapter_model.safetensors").is_file()


def test_examples_parquet_holds_every_evaluated_example(reference):
    out, _ = reference
    examples = pd.read_parquet(out / "examples.parquet")
    assert list(examples.columns) == ["round", "scope", "client", "example", "label", "prediction", "score", "loss"]
    assert examples.dtypes.astype(str).tolist() == ["int64", "str", "int64", "int64", "int64", "int64", "float64",
                                                    "float64"]
    rounds = pd.read_csv(out / "rounds.csv")
    assert examples["round"].unique().tolist() == [0, 1, 2, 3]  # eval_every=1 and the untrained model
    for r, rows in examples.groupby("round"):
        assert rows["example"].tolist() == list(range(40)) and (rows["scope"] == "global").all()
        assert (rows["client"] == -1).all() and (rows["label"] == -1).all() and (rows["prediction"] == -1).all()
        assert rows["score"].mean() == pytest.approx(rounds.loc[rounds["round"] == r, "rouge_l"].item())
    assert sorted(p.name for p in (out / "checkpoint" / "examples").iterdir())[:2] == [
        "round-000000.parquet", "round-000001.parquet"]


def test_personal_examples_are_each_clients_own_test_split():
    driver = Driver(smoke("method.name=pfedlora", "eval_every=1", rounds=1))
    try:
        initial = driver.evaluate_initial()
        assert initial["round"] == 0 and set(initial["examples"]["scope"]) == {"global"}  # no private adapter yet
        record = driver.run_round()
        rows = pd.DataFrame(record["examples"])
        personal = rows[rows["scope"] == "personal"]
        sizes = {r["client"]: r["n_test"] for r in driver.partition}
        trained = sorted(r["client"] for r in record["client_rows"])
        assert sorted(personal["client"].unique()) == trained and record["personal_clients"] == len(trained)
        for c, part in personal.groupby("client"):
            assert part["example"].tolist() == list(range(sizes[c]))
        per_client = personal.groupby("client")["score"].mean()
        assert per_client.mean() == pytest.approx(record["personal_rouge_l"])
        assert rows.loc[rows["scope"] == "global", "score"].mean() == pytest.approx(record["rouge_l"])
    finally:
        driver.shutdown()


def test_untrained_evaluation_is_one_computation_for_every_method():
    """Round 0 with the zero deltas dropped equals the full evaluation of the initial state, and is the same
    record (metrics and rows) with the same cache key for every method: what a sweep's untrained cache shares."""
    driver = Driver(smoke(rounds=1))
    try:
        first, key = None, driver.untrained_key()
        for name in ("fedplora", "flora", "pfedlora", "ffa_lora"):
            if name != "fedplora":
                driver.reset(smoke(f"method.name={name}", rounds=1))
            assert driver.untrained_key() == key is not None
            initial = driver.evaluate_initial()
            full = driver.evaluate(driver.method.init_global(driver.initial_head), 0)  # every delta folded
            for k in ("rouge_l", "eval_loss", "eval_examples"):
                assert initial[k] == full[k], (name, k)
            assert initial["examples"] == full["examples"]
            initial.pop("method")
            first = first or initial
            assert initial == first, name
        driver.reset(smoke("seed=1", rounds=1))
        assert driver.untrained_key() not in (key, None)
    finally:
        driver.shutdown()


@pytest.mark.parametrize("workers", [1, 4])
def test_same_result_for_1_2_4_workers(reference, tmp_path, workers):
    out = tmp_path / f"w{workers}"
    run_quiet(smoke(f"resources.num_workers={workers}"), out)
    assert_same_run(reference[0], out)


def comparable(record):
    """A round record without its timings (``t_*``, compute seconds), as JSON text (NaN equals NaN)."""
    out = {k: v for k, v in record.items() if not k.startswith("t_")}
    out["client_rows"] = [{k: v for k, v in row.items() if k != "compute_seconds"} for row in record["client_rows"]]
    return json.dumps(out, sort_keys=True)


def test_packs_of_sorted_clients_give_the_same_rounds_on_1_and_2_workers_and_k_1_is_unchanged(reference):
    # Prepare: rounds 1-2 of the smoke run (3 clients a round) without evaluation, in packs of 2 and 1, on two
    # workers; then the same run started over on one of them (a pool of one worker), then with k = 1 there
    packed_cfg = smoke("resources.clients_per_worker=2", "eval_every=3")
    driver = Driver(packed_cfg)
    records, states = {}, {}
    try:
        records[2] = [driver.run_round() for _ in range(2)]
        states[2] = driver.get_state()[0].tensors
        first, second = driver.pool.workers
        ray.kill(second)
        driver.pool = WorkerPool(lambda _: first, 1)
        driver.reset(packed_cfg)
        records[1] = [driver.run_round() for _ in range(2)]
        states[1] = driver.get_state()[0].tensors
        driver.reset(smoke("eval_every=3"))
        plain = [driver.run_round() for _ in range(2)]
    finally:
        driver.shutdown()
    # Assert: packed rounds are bitwise the same for 1 and 2 workers
    assert states[1].keys() == states[2].keys()
    for key, value in states[1].items():
        assert torch.equal(value, states[2][key]), key
    assert [comparable(r) for r in records[1]] == [comparable(r) for r in records[2]]
    for packed, unpacked in zip(records[2], plain):
        rows = packed["client_rows"]
        assert [r["client"] for r in rows] == sorted(r["client"] for r in rows) == [r["client"] for r in
                                                                                   unpacked["client_rows"]]
        assert [r["pack"] for r in rows] == [0, 0, 1] and "pack" not in unpacked["client_rows"][0]
        for key in ("bytes_down", "bytes_up", "bytes_serialized_per_job"):  # what crosses per client is unchanged
            assert packed[key] == unpacked[key], key
    # k = 1 after packed rounds: exactly the reference run's training rounds
    ref = pd.read_csv(reference[0] / "rounds.csv").set_index("round")
    for record in plain:
        for key in ("train_loss", "agg_noise", "init_noise_fn", "mean_rank", "bytes_down", "bytes_up"):
            assert record[key] == ref.loc[record["round"], key], key


def test_killed_worker_is_replaced_and_result_unchanged():
    cfg = smoke("train.local_steps=40", rounds=2)
    clean = Driver(cfg)
    for _ in range(cfg.rounds):
        clean.run_round()
    ref = clean.get_state()[0].tensors
    clean.shutdown()
    driver = Driver(cfg)
    killed = []

    def kill_one():  # kill a worker while round 1's jobs run
        time.sleep(0.3)
        victim = driver.pool.workers[0]
        ray.kill(victim, no_restart=True)
        killed.append(victim)

    records = []
    killer = threading.Thread(target=kill_one)
    killer.start()
    records.append(driver.run_round())
    killer.join()
    while driver.round < cfg.rounds:
        records.append(driver.run_round())
    assert killed and driver.pool.replaced >= 1
    state, _ = driver.get_state()
    for k, v in state.tensors.items():
        assert torch.equal(v, ref[k]), k
    driver.shutdown()


def test_resume_after_kill_equals_uninterrupted(reference, tmp_path):
    part = tmp_path / "part"
    run_quiet(smoke(rounds=2), part)  # a run stopped after round 2 ...
    # ... then killed in round 3 after its record was appended, mid-way through the next record and
    # after the state file of round 3 was written but before the JSON committed it
    folder = part / "checkpoint"
    with open(folder / "records.jsonl", "a") as f:
        f.write(json.dumps({"round": 3, "method": "fedplora", "accuracy": 1.0}) + "\n" + '{"round": 4, "meth')
    (folder / "state-000003.safetensors").write_bytes(b"half a file")
    stale = pd.read_parquet(folder / "examples" / "round-000002.parquet").assign(round=4, score=-1.0)
    stale.to_parquet(folder / "examples" / "round-000004.parquet")  # rows of a round after the checkpoint
    round0 = (folder / "examples" / "round-000000.parquet").stat().st_mtime_ns
    assert main(["--resume", str(part), "--set", "rounds=3"]) == 0  # ... continued to round 3
    assert [p.name for p in folder.glob("state-*")] == ["state-000003.safetensors"]
    assert (folder / "examples" / "round-000000.parquet").stat().st_mtime_ns == round0  # round 0 not redone
    assert_same_run(reference[0], part)


def test_resume_before_any_checkpoint_keeps_round_0(reference, tmp_path):
    part = tmp_path / "part"
    run_quiet(smoke(rounds=1), part)
    folder = part / "checkpoint"  # killed in round 1 before its checkpoint committed
    for name in ("state.json", *(p.name for p in folder.glob("state-*"))):
        (folder / name).unlink()
    round0 = (folder / "examples" / "round-000000.parquet").stat().st_mtime_ns
    run_quiet(smoke(), part, resume=True)
    assert (folder / "examples" / "round-000000.parquet").stat().st_mtime_ns == round0
    assert [json.loads(line)["round"] for line in (folder / "records.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    assert_same_run(reference[0], part)


def test_client_job_failure_names_the_client(tmp_path):
    driver = Driver(smoke())
    start = driver.method.client_start(driver.state, 0, 0)
    bad = type(start)(**{**start.__dict__, "client_id": 99})
    from orchestrator.pool import Job

    with pytest.raises(ClientJobError, match=r"client 99 in round 1 failed: ValueError: client_id=99 is out of range"):
        driver.pool.run([Job("train", (bad,), "client 99 in round 1")])
    with pytest.raises(ClientJobError, match=r"clients 0, 99 in round 1 \(pack 0\) failed: ValueError: client_id=99 is "
                                             "out of range"):
        driver.pool.run(client_jobs([start, bad], 2, 0))
    driver.shutdown()


@pytest.mark.parametrize("override, match", [
    ("model.name=/no/such/model", "model.name"),
    ("model.target_modules=[k_proj_missing]", "k_proj_missing"),
])
def test_bad_worker_input_fails_fast_with_the_workers_message(override, match):
    with pytest.raises(WorkerStartupError, match=match):
        Driver(smoke(override))


MINILM_RISING = [  # the quick preset's sizes (sweeps/presets/quick.yaml), 12 rounds, 2 workers
    "rounds=12", "eval_every=2", "participation=0.25", "data.num_clients=12", "data.max_examples=1200",
    "data.global_test_size=200", "data.max_length=48", "train.local_steps=3", "train.batch_size=8",
    "train.lr=0.005", "resources.num_workers=2"]


def test_minilm_fedplora_accuracy_rises_over_rounds(tmp_path):
    """A real run: MiniLM on Rotten Tomatoes, ranks 1/4/8, 3 of 12 clients per round, IID."""
    out = tmp_path / "minilm"
    run_quiet(load_config("configs/minilm_fedplora.yaml", MINILM_RISING), out)
    rounds = pd.read_csv(out / "rounds.csv").dropna(subset=["accuracy"])
    print(rounds[["round", "accuracy", "mcc", "eval_loss", "train_loss"]].to_string(index=False))
    assert list(rounds["round"]) == [0, 2, 4, 6, 8, 10, 12]  # round 0: the untrained model
    first, last = rounds.iloc[1], rounds.iloc[-1]
    assert last["accuracy"] >= first["accuracy"] + 0.05  # measured: 0.64 -> 0.755
    assert last["mcc"] > first["mcc"] + 0.2 and last["eval_loss"] < first["eval_loss"]


def test_gpus_requested_but_absent_fail_before_any_actor():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="resources.device='cuda' but the Ray cluster has no GPUs"):
        Driver(smoke("resources.device=cuda"))
    assert time.perf_counter() - t0 < 5


def test_cli_refuses_bad_input_before_work(tmp_path, capsys):
    assert main(["--config", SMOKE, "--out", str(tmp_path / "x"), "--set", "method.nmae=flora"]) == 2
    assert "did you mean 'method.name'" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "config.yaml").write_text("rounds: 1\n")
    (tmp_path / "busy" / "checkpoint").mkdir()  # a run with a finished round (one without is replaced)
    (tmp_path / "busy" / "checkpoint" / "state.json").write_text('{"round": 1}')
    assert main(["--config", SMOKE, "--out", str(tmp_path / "busy")]) == 2
    assert "--overwrite" in capsys.readouterr().err

