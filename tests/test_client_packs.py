"""Packed client jobs (``resources.clients_per_worker``): fixed packs, updates back in client order, bytes."""

import pickle

import pytest
import torch

from core.wire import AdapterInit, ClientStart, ClientUpdate, DenseDelta, tensor_bytes
from orchestrator.broadcast import share_tensors
from orchestrator.config import load_config
from orchestrator.driver import client_jobs, unpack_updates
from orchestrator.preflight import packing_warnings


def start(client_id, round_idx=4, dW=None, head=None):
    adapters = {"m": AdapterInit(torch.full((8, 2), float(client_id)), torch.ones(2, 16))}
    return ClientStart(client_id=client_id, round=round_idx, seed=client_id, rank=2,
                       fold={} if dW is None else {"m": DenseDelta(dW)}, adapters={"main": adapters}, head=head)


def update(client_id):
    return ClientUpdate(client_id=client_id, round=4, adapters={}, n_examples=client_id + 1, train_loss=0.5)


def test_packs_are_consecutive_chunks_of_the_sorted_clients_named_in_their_labels():
    starts = [start(c) for c in (0, 2, 3, 5, 8)]
    jobs = client_jobs(starts, 2, 4)
    assert [j.method for j in jobs] == ["train_pack"] * 3
    assert [[s.client_id for s in j.args[0]] for j in jobs] == [[0, 2], [3, 5], [8]]
    assert [j.label for j in jobs] == ["clients 0, 2 in round 5 (pack 0)", "clients 3, 5 in round 5 (pack 1)",
                                       "clients 8 in round 5 (pack 2)"]
    assert all(a is b for j, pack in zip(jobs, ([0, 1], [2, 3], [4])) for a, b in zip(j.args[0], (starts[i] for i in
                                                                                                  pack)))
    assert [len(j.args[0]) for j in client_jobs(starts, 8, 4)] == [5]
    single = client_jobs(starts, 1, 4)  # k = 1: one train job per client, as without packing
    assert [(j.method, j.args, j.label) for j in single] == [("train", (s,), f"client {s.client_id} in round 5")
                                                             for s in starts]


def test_updates_come_back_one_per_client_in_client_order_with_their_pack():
    updates, pack_of = unpack_updates([[update(0), update(2)], [update(3)]], 2, [0, 2, 3])
    assert [u.client_id for u in updates] == [0, 2, 3] and pack_of == [0, 0, 1]
    updates, pack_of = unpack_updates([update(0), update(2)], 1, [0, 2])
    assert [u.client_id for u in updates] == [0, 2] and pack_of == [0, 1]
    with pytest.raises(RuntimeError, match=r"updates of clients \[2, 0, 3\]; expected \[0, 2, 3\]"):
        unpack_updates([[update(2), update(0)], [update(3)]], 2, [0, 2, 3])
    with pytest.raises(RuntimeError, match=r"updates of clients \[0, 2\]; expected \[0, 2, 3\]"):
        unpack_updates([[update(0), update(2)]], 2, [0, 2, 3])


def test_packed_jobs_serialise_a_tensor_their_clients_share_once():
    dW, head = torch.randn(64, 256), {"score.weight": torch.randn(2, 256)}  # large next to pickle's overhead
    starts = [start(c, dW=dW, head=head) for c in range(3)]
    own = sum(a.nbytes() for s in starts for a in s.adapters["main"].values())
    shared = tensor_bytes(dW) + tensor_bytes(head["score.weight"])
    packs = [job.args for job in client_jobs(starts, 2, 4)]  # (0, 1) and (2,)
    # Execute: nothing put in the store (sharing off), then everything shared by two jobs put once
    plain_args, plain = share_tensors(packs, lambda t: t, min_bytes=None)
    _, stats = share_tensors(packs, lambda t: t, min_bytes=0)
    # Assert: per_job counts one job per client; inline counts each object once per job that carries it
    assert plain.per_job == stats.per_job == own + 3 * shared
    assert plain.serialized == own + 2 * shared and (stats.inline, stats.shared) == (own, shared)
    # what the pool's serialisation really copies: the pack of two carries dW and the head once
    two, one = (len(pickle.dumps(args)) for args in plain_args)
    alone = [len(pickle.dumps((s,))) for s in starts]
    assert abs(two - (alone[0] + alone[1] - shared)) < 0.02 * shared and abs(one - alone[2]) < 64


@pytest.mark.parametrize("k, workers, expected", [
    (1, 4, []), (2, 2, []), (3, 1, []),
    (2, 4, ["resources.clients_per_worker=2 cuts a round's 3 clients into 2 pack(s), fewer than "
            "resources.num_workers=4: 2 worker(s) wait while the round trains"]),
    (8, 2, ["resources.clients_per_worker=8 cuts a round's 3 clients into 1 pack(s), fewer than "
            "resources.num_workers=2: 1 worker(s) wait while the round trains"]),
])
def test_packs_fewer_than_workers_are_a_warning(k, workers, expected):
    cfg = load_config(None, ["data.num_clients=10", "participation=0.3", f"resources.clients_per_worker={k}",
                             f"resources.num_workers={workers}"])
    assert packing_warnings(cfg) == expected
