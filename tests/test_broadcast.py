"""Broadcast once: shared tensors are put once, resolved from a per-worker cache, and change no result."""

import pytest
import torch
from ray_helpers import local_ray

from core.shared import SharedTensor, iter_tensors, map_tensors
from core.wire import AdapterInit, ClientStart, DenseDelta, LowRankDelta, tensor_bytes
from orchestrator.broadcast import share_tensors
from workers.shared_args import SharedArgs


class Store:
    """A plain dict object store: ``put`` returns a handle, ``get`` counts fetches."""

    def __init__(self):
        self.objects, self.puts, self.gets = {}, 0, 0

    def put(self, t):
        self.puts += 1
        handle = f"h{self.puts}"
        self.objects[handle] = t
        return handle

    def get(self, handle):
        self.gets += 1
        return self.objects[handle]


def flora_like_starts(n=3, d=16, k=32, r=2):
    """``n`` client starts that share one dense fold tensor and one head tensor (as FLoRA builds them)."""
    dW = torch.randn(d, k)
    head = {"score.weight": torch.randn(2, k)}
    starts = []
    for c in range(n):
        adapters = {"m": AdapterInit(torch.zeros(d, r), torch.randn(r, k))}
        starts.append(ClientStart(client_id=c, round=0, seed=c, rank=r, fold={"m": DenseDelta(dW)},
                                  adapters={"main": adapters}, head=head))
    return starts, dW, head


def test_map_tensors_keeps_untouched_containers_and_skips_post_init_checks():
    B, A = torch.ones(4, 2), torch.ones(2, 3)
    delta = LowRankDelta(B, A, 0.5)
    same = map_tensors({"m": delta}, lambda t: t)
    assert same["m"] is delta
    placeholder = SharedTensor("h", "k", 8)
    swapped = map_tensors({"m": delta}, lambda t: placeholder if t is B else t)
    assert swapped["m"].B is placeholder and swapped["m"].A is A and swapped["m"].scale == 0.5
    assert delta.B is B  # the original is never changed


def test_shared_tensors_are_put_once_and_counted():
    starts, dW, head = flora_like_starts(n=3)
    store = Store()
    args, stats = share_tensors([(s,) for s in starts], store.put, min_bytes=0)
    # dW and the head weight are in all three jobs: two objects, put once each
    assert store.puts == 2 and stats.objects == 2
    own = sum(a.nbytes() for s in starts for a in s.adapters["main"].values())  # per-client A and B
    shared = tensor_bytes(dW) + tensor_bytes(head["score.weight"])
    assert stats.per_job == own + 3 * shared
    assert stats.shared == shared and stats.inline == own and stats.serialized == own + shared
    for (s,), orig in zip(args, starts):
        assert isinstance(s.fold["m"].W, SharedTensor) and isinstance(s.head["score.weight"], SharedTensor)
        assert s.adapters["main"]["m"].A is orig.adapters["main"]["m"].A  # own tensors stay inline


def test_small_or_unshared_tensors_stay_inline():
    starts, dW, _ = flora_like_starts(n=2)
    store = Store()
    args, stats = share_tensors([(s,) for s in starts], store.put, min_bytes=tensor_bytes(dW) + 1)
    assert store.puts == 0 and stats.serialized == stats.per_job
    assert args[0][0] is starts[0]  # nothing replaced: the very same arguments
    _, stats_one = share_tensors([(starts[0],)], store.put, min_bytes=0)
    assert store.puts == 0 and stats_one.objects == 0  # one job shares nothing


def test_worker_resolves_each_object_once_and_gets_the_same_tensors():
    starts, dW, head = flora_like_starts(n=3)
    store = Store()
    args, _ = share_tensors([(s,) for s in starts], store.put, min_bytes=0)
    worker = SharedArgs(fetch=store.get)
    resolved = [worker.resolve(a[0]) for a in args]
    assert store.gets == 2  # two objects, fetched once for three jobs
    for r, orig in zip(resolved, starts):
        assert r.fold["m"].W is dW and r.head["score.weight"] is head["score.weight"]
        assert r.client_id == orig.client_id
        for x, y in zip(iter_tensors(r), iter_tensors(orig)):
            assert torch.equal(x, y)
    # a job that names other objects evicts the old ones
    other, _ = share_tensors([(s,) for s in flora_like_starts(n=2)[0]], store.put, min_bytes=0)
    worker.resolve(other[0][0])
    assert len(worker.cache) == 2 and store.gets == 4
    assert not set(worker.cache) & {p.key for p in iter_tensors(args[0]) if isinstance(p, SharedTensor)}


def placeholder_delta(B, A, scale):
    """A LowRankDelta whose factors are placeholders (as the workers receive it), built like map_tensors does."""
    delta = LowRankDelta.__new__(LowRankDelta)
    for name, value in (("B", B), ("A", A), ("scale", scale)):
        object.__setattr__(delta, name, value)
    return delta


def test_fold_key_names_only_fully_shared_folds():
    starts, dW, _ = flora_like_starts(n=2)
    args, _ = share_tensors([(s,) for s in starts], Store().put, min_bytes=0)
    k0, k1 = (SharedArgs.fold_key(a[0].fold) for a in args)
    assert k0 is not None and k0 == k1
    assert SharedArgs.fold_key(starts[0].fold) is None  # inline tensors: no key
    assert SharedArgs.fold_key({}) is None
    p, q = SharedTensor("h1", "a", 8), SharedTensor("h2", "b", 8)
    half, twice = placeholder_delta(p, q, 1.0), placeholder_delta(p, q, 2.0)
    assert SharedArgs.fold_key({"m": half}) != SharedArgs.fold_key({"m": twice})  # same objects, other scale


@pytest.mark.usefixtures("single_thread")
def test_trainer_skips_a_refold_only_for_the_same_key():
    from workers.local_training import LocalTrainer
    from workers.models import ModelConfig, load_model
    from workers.train_config import TrainConfig

    trainer = LocalTrainer(load_model(ModelConfig("tiny-llama"), "classification", 2), TrainConfig())
    m = next(iter(trainer.w0))
    d, k = trainer.w0[m].shape
    first, second = {m: DenseDelta(torch.full((d, k), 0.5))}, {m: DenseDelta(torch.full((d, k), -1.0))}
    weight = trainer.layers[m].get_base_layer().weight

    trainer.restore_and_fold(first, key="round-1")
    folded = weight.detach().clone()
    assert torch.equal(folded, trainer.w0[m] + 0.5)
    trainer.restore_and_fold(second, key="round-1")  # same key: the weights are kept as they are
    assert torch.equal(weight, folded)
    trainer.restore_and_fold(second, key="round-2")
    assert torch.equal(weight, trainer.w0[m] - 1.0)
    trainer.restore_and_fold(first, key=None)  # no key: always refolds, and forgets the last key
    trainer.restore_and_fold(second, key="round-2")
    assert torch.equal(weight, trainer.w0[m] - 1.0)


@pytest.fixture
def ray_two_cpus():
    yield from local_ray(num_cpus=2)


@pytest.mark.slow
def test_flora_rounds_are_bitwise_the_same_with_and_without_broadcast(ray_two_cpus):
    from orchestrator.config import load_config
    from orchestrator.driver import Driver

    cfg = load_config("configs/tiny_llama_smoke.yaml", ["rounds=2", "eval_every=1", "method.name=flora"])
    runs = []
    for share in (0, None):  # every shared tensor broadcast, then every job serialised on its own
        driver = Driver(cfg)
        driver.pool.share_min_bytes = share
        try:
            records = [driver.run_round() for _ in range(2)]
        finally:
            driver.shutdown()
        runs.append((records, driver.state))
    (shared_records, shared_state), (plain_records, plain_state) = runs
    assert shared_state.tensors.keys() == plain_state.tensors.keys()
    for key, value in shared_state.tensors.items():
        assert torch.equal(value, plain_state.tensors[key]), key
    skip = {"examples", "client_rows", "similarity", "bytes_serialized"}
    for a, b in zip(shared_records, plain_records):
        for key in a.keys() - skip:
            if not key.startswith("t_") and key != "bytes_serialized_per_job":
                assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), key
        # three clients share dW and the head: each crosses once instead of three times
        assert a["bytes_serialized"] < a["bytes_serialized_per_job"] == b["bytes_serialized"]


def test_sharing_off_only_counts():
    starts, dW, _ = flora_like_starts(n=3)
    store = Store()
    args, stats = share_tensors([(s,) for s in starts], store.put, min_bytes=None)
    assert store.puts == 0 and all(a[0] is s for a, s in zip(args, starts))
    assert stats.serialized == stats.per_job > 3 * tensor_bytes(dW)
