"""FedSA-LoRA and FedEx-LoRA on Ray: same result for 1 and 2 workers and across a checkpoint.

These two carry state no older method has (client-local B; a folded residual next to the factors). RBLA's
state and client starts are those of FedIT/FFA-LoRA; its checkpoint round trip is in the fast tier.
"""

import json

import pytest
import torch
from ray_helpers import local_ray
from test_driver import smoke

from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.driver import Driver

pytestmark = pytest.mark.slow

SMALL = ("data.max_examples=120", "data.global_test_size=16", "train.local_steps=1")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield from local_ray(num_cpus=2)


def comparable(record) -> str:
    """A round's record without timings and per-client compute times, as JSON (so NaN equals NaN)."""
    out = {k: v for k, v in record.items() if not k.startswith("t_") and k != "client_rows"}
    out["client_rows"] = [{k: v for k, v in row.items() if k != "compute_seconds"} for row in record["client_rows"]]
    return json.dumps(out, sort_keys=True, default=str)


@pytest.mark.parametrize("method, extra", [("fedsa_lora", ()), ("fedex_lora", ("ranks.distribution=homogeneous",))])
def test_new_method_same_for_1_and_2_workers_across_a_checkpoint(tmp_path, method, extra):
    sets = (f"method.name={method}", *SMALL, *extra)
    two = Driver(smoke(*sets, rounds=2))  # 2 workers, uninterrupted
    try:
        two.run_round()
        save_checkpoint(tmp_path, two.get_state()[0], {"round": 1})
        ref_raw = two.run_round()
        ref_record = comparable(ref_raw)
        ref_state = two.get_state()[0]
    finally:
        two.shutdown()
    one = Driver(smoke(*sets, "resources.num_workers=1", rounds=2))  # 1 worker, resumed after round 1
    try:
        state, info = load_checkpoint(tmp_path)
        one.set_state(state, info["round"])
        record = comparable(one.run_round())
        got = one.get_state()[0]
    finally:
        one.shutdown()
    assert record == ref_record
    assert got.tensors.keys() == ref_state.tensors.keys() and got.meta == ref_state.meta
    for k in ref_state.tensors:
        assert torch.equal(got.tensors[k], ref_state.tensors[k]), k
    if method == "fedsa_lora":  # the trained clients' local B, and their personalized evaluation
        assert any(k.startswith("client/") for k in got.tensors) and ref_raw["personal_clients"] >= 1
    else:  # the folded residual, and an exact aggregate
        assert any(k.endswith("/dW") for k in got.tensors) and ref_raw["agg_noise"] < 1e-4
