"""The untrained model's evaluation: zero deltas dropped, the key and the shared cache."""

import dataclasses
import pickle
import threading
import time

import pytest
import torch
from method_helpers import make, ranks_for

from core.wire import DenseDelta, LowRankDelta
from orchestrator.config import load_config
from orchestrator.methods import available_methods
from orchestrator.untrained_cache import UntrainedCache, is_zero, nonzero_deltas, untrained_key

SMOKE = "configs/tiny_llama_smoke.yaml"


def test_is_zero_is_exact_for_each_kind_of_delta():
    B, A = torch.zeros(4, 2), torch.randn(2, 3)
    assert is_zero(LowRankDelta(B, A, 2.0)) and is_zero(LowRankDelta(A.T, torch.zeros(2, 3)))
    assert is_zero(LowRankDelta(torch.randn(4, 2), A, 0.0))
    tiny = B.clone()
    tiny[3, 1] = 1e-30
    assert not is_zero(LowRankDelta(tiny, A))
    assert is_zero(DenseDelta(torch.zeros(4, 3))) and not is_zero(DenseDelta(torch.eye(4, 3)))
    assert is_zero([LowRankDelta(B, A), DenseDelta(torch.zeros(4, 3))])
    assert not is_zero([LowRankDelta(B, A), DenseDelta(torch.eye(4, 3))])
    kept = nonzero_deltas({"q": LowRankDelta(B, A), "v": DenseDelta(torch.eye(4, 3))})
    assert list(kept) == ["v"]


@pytest.mark.parametrize("name", available_methods())
def test_every_method_starts_from_the_base_model(name):
    """Every built-in method's initial global (and personal) delta is exactly zero: one untrained model."""
    method = make(name, ranks_for(name, [1, 2, 4]), R=4)
    state = method.init_global()
    assert nonzero_deltas(method.global_delta(state)) == {}
    for c in range(3):
        personal = method.personal_delta(state, c)
        assert personal is None or nonzero_deltas(personal) == {}


def test_key_depends_on_what_the_evaluation_depends_on_only():
    cfg = load_config(SMOKE)
    head = {"w": torch.ones(2, 3)}
    key = untrained_key(cfg, head, [])
    same = [load_config(SMOKE, ["method.name=flora", "ranks.max_rank=8", "train.lr=0.5", "rounds=9",
                                "resources.num_workers=3", "train.local_steps=2"])]
    for other in same:
        assert untrained_key(other, head, []) == key
    different = [load_config(SMOKE, [s]) for s in ("seed=1", "data.max_length=16", "train.eval_batch_size=3",
                                                   "train.max_new_tokens=5", "data.partition=dirichlet")]
    for other in different:
        assert untrained_key(other, head, []) != key, other
    assert untrained_key(cfg, {"w": torch.ones(2, 3) * 2}, []) != key
    assert untrained_key(cfg, None, []) != key
    assert untrained_key(cfg, head, [0, 2]) != key
    assert untrained_key(cfg, head, [], "cuda") != key == untrained_key(cfg, head, [], "cpu")
    assert untrained_key(dataclasses.replace(cfg), head, []) == key


def test_cache_computes_once_and_waits_for_a_concurrent_computation(tmp_path):
    cache = UntrainedCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return {"round": 0, "accuracy": 0.5, "examples": {"round": [0]}}

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]
    assert all(record["accuracy"] == 0.5 for record, _ in results)
    assert cache.get_or_compute("other", lambda: {"accuracy": 0.1})[0]["accuracy"] == 0.1
    assert len(calls) == 1


def test_unreadable_or_old_files_are_computed_again(tmp_path):
    cache = UntrainedCache(tmp_path)
    cache.path("k").write_bytes(b"not a pickle")
    assert cache.get_or_compute("k", lambda: {"accuracy": 0.7}) == ({"accuracy": 0.7}, False)
    cache.path("k").write_bytes(pickle.dumps({"format": "untrained-eval-0", "record": {"accuracy": 0.1}}))
    assert cache.get_or_compute("k", lambda: {"accuracy": 0.7}) == ({"accuracy": 0.7}, False)
    assert cache.get_or_compute("k", lambda: {"accuracy": 0.9}) == ({"accuracy": 0.7}, True)
