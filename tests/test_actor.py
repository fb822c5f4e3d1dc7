import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from core.rng import generator, kaiming_uniform_A
from core.wire import AdapterInit, ClientStart, ClientUpdate, LowRankDelta
from workers.data_config import DataConfig
from workers.models import ModelConfig
from workers.resources import ResourceConfig, WorkerResources, resolve_resources
from workers.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURES = Path(__file__).parent / "fixtures"
DATA = DataConfig(dataset="csv", path=str(FIXTURES / "reviews.csv"), text_column="review", label_column="sentiment",
                  num_clients=3, global_test_size=12, min_examples_per_client=6)
TINY = ModelConfig("tiny-llama")
TRAIN = TrainConfig(lr=1e-2, local_steps=2, batch_size=4)


# ---------------------------------------------------------------- resolve_resources (no Ray)


def test_auto_uses_gpus_when_the_cluster_has_them_else_cpu():
    on_gpu = resolve_resources(ResourceConfig(num_workers=8, gpus_per_worker=0.25, cpus_per_worker=0.25),
                               {"CPU": 2.0, "GPU": 2.0})
    assert (on_gpu.num_gpus, on_gpu.num_cpus, on_gpu.device, on_gpu.torch_threads) == (0.25, 0.25, "cuda", 1)
    assert on_gpu.actor_options() == {"num_cpus": 0.25, "num_gpus": 0.25}
    on_cpu = resolve_resources(ResourceConfig(num_workers=2, gpus_per_worker=0.25, cpus_per_worker=2), {"CPU": 4.0})
    assert (on_cpu.num_gpus, on_cpu.device, on_cpu.torch_threads) == (0.0, "cpu", 2)
    assert on_cpu.actor_options()["num_gpus"] == 0.0 and on_cpu.bundle() == {"CPU": 2.0}


def test_default_gpu_share_splits_the_gpus_evenly():
    assert resolve_resources(ResourceConfig(num_workers=6, cpus_per_worker=0.1), {"CPU": 1, "GPU": 2}).num_gpus == 1 / 3
    assert resolve_resources(ResourceConfig(num_workers=2), {"CPU": 2, "GPU": 4}).num_gpus == 1.0
    assert resolve_resources(ResourceConfig(device="cpu", num_workers=2), {"CPU": 2, "GPU": 4}).num_gpus == 0.0


def test_cuda_without_gpus_fails_naming_what_exists():
    with pytest.raises(ValueError, match=r"resources\.device='cuda' but the Ray cluster has no GPUs \(it has CPU=2\)"):
        resolve_resources(ResourceConfig(device="cuda"), {"CPU": 2.0})


@pytest.mark.parametrize("workers, share, gpus, match", [
    (8, 0.5, 2.0, r"8 workers x 0.5 GPU need 4 GPUs \(at most 2 workers per GPU\) but the Ray cluster has 2 GPUs"),
    # 3 x 0.6 = 1.8 <= 2 GPUs in total, but a share never spans two GPUs: only 2 fit
    (3, 0.6, 2.0, r"3 workers x 0.6 GPU need 1.8 GPUs \(at most 1 workers per GPU\).*room for 2 workers"),
    (2, 2.0, 3.0, r"2 workers x 2 GPU need 4 GPUs"),
])
def test_asking_more_gpu_than_exists_fails(workers, share, gpus, match):
    with pytest.raises(ValueError, match=match):
        resolve_resources(ResourceConfig(device="cuda", num_workers=workers, gpus_per_worker=share,
                                         cpus_per_worker=0.1), {"CPU": 8.0, "GPU": gpus})


def test_asking_more_cpu_than_exists_fails():
    with pytest.raises(ValueError, match=r"4 workers x 1 CPU need 4 CPUs but the Ray cluster has 2"):
        resolve_resources(ResourceConfig(device="cpu", num_workers=4), {"CPU": 2.0})


@pytest.mark.parametrize("kwargs, match", [
    (dict(device="tpu"), r"resources\.device='tpu' is not allowed"),
    (dict(num_workers=0), r"resources\.num_workers=0"),
    (dict(gpus_per_worker=1.5), r"resources\.gpus_per_worker=1\.5"),
    (dict(gpus_per_worker=0), r"resources\.gpus_per_worker=0"),
    (dict(cpus_per_worker=0), r"resources\.cpus_per_worker=0"),
    (dict(clients_per_worker=0), r"resources\.clients_per_worker=0 must be an integer >= 1"),
    (dict(clients_per_worker=1.5), r"resources\.clients_per_worker=1\.5 must be an integer >= 1"),
    (dict(clients_per_worker=True), r"resources\.clients_per_worker=True must be an integer >= 1"),
])
def test_resource_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResourceConfig(**kwargs)


# ---------------------------------------------------------------- the worker in-process


def main_start(worker, client_id, seed, rank=2):
    adapters = {}
    for spec in worker.module_specs():
        g = generator(seed, "init", spec.name)
        adapters[spec.name] = AdapterInit(torch.randn(spec.d_out, rank, generator=g) * 0.1,
                                          kaiming_uniform_A(rank, spec.k_in, g))
    return ClientStart(client_id=client_id, round=0, seed=seed, rank=rank, fold={}, adapters={"main": adapters},
                       head=worker.initial_head())


@pytest.fixture(scope="module")
def local_worker():
    from workers.actor import ClientWorker

    threads = torch.get_num_threads()
    worker = ClientWorker(TINY, DATA, TRAIN, seed=0, num_threads=threads)
    yield worker
    torch.set_num_threads(threads)


def test_worker_exposes_specs_head_sizes_and_counts_only(local_worker):
    specs = local_worker.module_specs()
    assert [s.name for s in specs][:2] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    assert set(local_worker.initial_head()) == {"score.weight"}
    assert local_worker.client_num_examples() == {0: 10, 1: 10, 2: 10}
    records = local_worker.partition_summary()
    assert [r["client"] for r in records] == [0, 1, 2]
    assert all(set(r) == {"client", "n_train", "n_test", "negative", "positive"} for r in records)
    assert local_worker.data_info()["global_test_size"] == 12


def test_data_info_counts_test_labels_truncation_and_split_notes():
    """Label counts of the global test set, truncation by max_length and the split's warnings, as counts/text."""
    import warnings

    from workers.actor import ClientWorker
    from workers.data_notes import truncation_stats
    from workers.local_training import token_lengths
    from workers.partition import PartitionWarning

    cfg = DataConfig(dataset="csv", path=DATA.path, text_column="review", label_column="sentiment", num_clients=3,
                     global_test_size=12, min_examples_per_client=12, partition="dirichlet", alpha=0.01,
                     max_length=24)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartitionWarning)  # kept as a note, not printed by every worker
        worker = ClientWorker(TINY, cfg, TRAIN, seed=0)
    info = worker.data_info()
    test = worker.data.global_test
    assert info["global_test_label_counts"] == [sum(ex.label == k for ex in test) for k in (0, 1)]
    assert sum(info["global_test_label_counts"]) == info["global_test_size"] == 12
    lengths = [len(worker.trainer.tokenizer(ex.text)["input_ids"]) for ex in test]
    assert token_lengths(worker.trainer.tokenizer, test, "classification") == lengths
    cut = sorted(n - 24 for n in lengths if n > 24)
    assert info["truncation"]["test"] == truncation_stats(lengths, 24) and info["truncation"]["test"]["cut"] == len(cut)
    assert cut and info["truncation"]["test"]["max_cut"] == cut[-1]
    assert info["truncation"]["train"]["examples"] == sum(len(c.train) for c in worker.data.clients)
    topped = [n for n in info["notes"] if "topped up" in n]
    assert len(topped) == 1 and topped[0] == worker.data.notes[0]
    assert any(n.startswith("data.max_length=24 truncates ") and f"{len(cut)} of 12 test examples (by up to "
               f"{cut[-1]} tokens" in n for n in info["notes"])


def test_truncation_note_lists_only_cut_splits():
    from workers.data_notes import truncation_note, truncation_stats

    stats = {"train": truncation_stats([10, 30, 50, 20], 20), "test": truncation_stats([5, 6], 20)}
    assert stats["train"] == {"examples": 4, "cut": 2, "max_cut": 30, "median_cut": 20.0}
    assert truncation_note(stats, 20) == ("data.max_length=20 truncates 2 of 4 train examples (by up to 30 tokens, "
                                          "median 20)")
    assert truncation_note({"test": stats["test"]}, 20) is None


def test_worker_trains_and_evaluates_global_and_client_splits(local_worker):
    head0 = local_worker.initial_head()
    update = local_worker.train(main_start(local_worker, 1, seed=3))
    assert not torch.equal(update.head["score.weight"], head0["score.weight"])  # the job trained the head
    assert torch.equal(local_worker.initial_head()["score.weight"], head0["score.weight"])  # still the initial one
    deltas = {m: LowRankDelta(B, A) for m, (B, A) in update.adapters["main"].items()}
    on_global = local_worker.evaluate(deltas, update.head)
    on_client = local_worker.evaluate(deltas, update.head, client_id=1)
    assert (update.client_id, update.n_examples, update.steps) == (1, 10, 2)
    assert on_global["n_examples"] == 12 and on_client["n_examples"] == 2
    with pytest.raises(ValueError, match="client_id=3 is out of range: the run has 3 clients"):
        local_worker.train(main_start(local_worker, 3, seed=3))


def assert_same_update(a, b, **tolerance):
    """Equal updates: bitwise without ``tolerance``, else adapters, head and loss within it (counts exactly)."""
    assert (a.client_id, a.round, a.n_examples, a.steps) == (b.client_id, b.round, b.n_examples, b.steps)
    pairs = [(x, y) for name in a.adapters for m in a.adapters[name]
             for x, y in zip(a.adapters[name][m], b.adapters[name][m])] + [(a.head[k], b.head[k]) for k in a.head]
    for x, y in pairs:
        if tolerance:
            torch.testing.assert_close(x, y, **tolerance)
        else:
            assert torch.equal(x, y)
    assert a.train_loss == b.train_loss if not tolerance else a.train_loss == pytest.approx(b.train_loss, rel=1e-4)


def test_train_pack_gives_each_client_its_own_data_fold_and_fault(local_worker, monkeypatch):
    """A pack of two clients of one round: each update is the one the client gets alone (its examples, fold and
    seed), a pack of one is ``train`` bitwise, the pack's shared tensors are fetched once for the whole pack,
    and an injected fault names its client."""
    from dataclasses import replace

    from core.wire import DenseDelta
    from orchestrator.broadcast import share_tensors
    from workers.faults import ENV, InjectedFault
    from workers.shared_args import SharedArgs

    # Prepare: clients 0 and 2 with different ranks and folds (a dense dW, a low-rank branch), one shared head
    spec = local_worker.module_specs()[0]
    g = torch.Generator().manual_seed(1)
    dW = torch.randn(spec.d_out, spec.k_in, generator=g) * 0.05
    low = LowRankDelta(torch.randn(spec.d_out, 2, generator=g) * 0.1, torch.randn(2, spec.k_in, generator=g), 0.5)
    head = local_worker.initial_head()
    s0 = replace(main_start(local_worker, 0, seed=4), fold={spec.name: DenseDelta(dW)}, head=head)
    s2 = replace(main_start(local_worker, 2, seed=5, rank=1), fold={spec.name: low}, head=head)
    alone = [local_worker.train(s) for s in (s0, s2)]
    # Execute / Assert
    assert_same_update(local_worker.train_pack([s0])[0], alone[0])
    packed = local_worker.train_pack([s0, s2])
    assert [u.client_id for u in packed] == [0, 2]
    for p, a in zip(packed, alone):  # float32 rounding of the packed arithmetic; another client's data is far off
        assert_same_update(p, a, rtol=1e-3, atol=1e-5)
    store: dict[str, torch.Tensor] = {}

    def put(t):
        key = f"h{len(store)}"
        store[key] = t
        return key

    s1 = replace(main_start(local_worker, 1, seed=6), fold={spec.name: DenseDelta(dW)}, head=head)
    (pack, _), _ = share_tensors([((s0, s2),), ((s1,),)], put, min_bytes=0)  # the head and dW are in both jobs
    local_worker.shared = SharedArgs(store.__getitem__)
    try:
        for p, a in zip(local_worker.train_pack(pack[0]), packed):
            assert_same_update(p, a)
        assert local_worker.shared.fetches == len(store) == 2
    finally:
        local_worker.shared = SharedArgs()
    monkeypatch.setenv(ENV, "2:1")
    with pytest.raises(InjectedFault, match="client 2 fails in round 1"):
        local_worker.train_pack([s0, s2])


# ---------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cpu_only():
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_cuda_with_no_gpus_fails_within_seconds(ray_cpu_only):
    from workers.actor import make_workers

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"device='cuda' but the Ray cluster has no GPUs"):
        make_workers(ResourceConfig(device="cuda", num_workers=1), TINY, DATA, TRAIN, seed=0)
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.slow
def test_ray_worker_on_cpu_matches_the_in_process_worker_and_reports_bad_input(ray_cpu_only, local_worker):
    from workers.actor import make_worker, make_workers

    ray = ray_cpu_only
    (actor,) = make_workers(ResourceConfig(device="auto", num_workers=1, cpus_per_worker=1), TINY, DATA, TRAIN,
                            seed=0)
    info = ray.get(actor.ping.remote())
    assert info["gpu_ids"] == [] and info["device"] == "cpu" and info["torch_threads"] == 1
    start = main_start(local_worker, 2, seed=5)
    remote = ray.get(actor.train.remote(start))
    here = local_worker.train(start)
    assert isinstance(remote, ClientUpdate)
    for m, (B, A) in here.adapters["main"].items():  # same partition and job on every worker
        assert torch.allclose(remote.adapters["main"][m][0], B, atol=1e-6)
        assert torch.allclose(remote.adapters["main"][m][1], A, atol=1e-6)

    # bad input: the worker's own message crosses the process boundary
    res = WorkerResources(num_cpus=0.5, num_gpus=0.0, num_workers=1)
    bad = make_worker(res, ModelConfig("no-such-org/no-such-model"), DATA, TRAIN, seed=0)
    with pytest.raises(ray.exceptions.RayActorError, match="is not a local path and the model hub is offline"):
        ray.get(bad.ping.remote(), timeout=120)
    bad = make_worker(res, ModelConfig("tiny-llama", target_modules=("qkv",)), DATA, TRAIN, seed=0)
    with pytest.raises(ray.exceptions.RayActorError, match=r"\['qkv'\] match no linear layer.*q_proj"):
        ray.get(bad.ping.remote(), timeout=120)


@pytest.mark.slow
def test_fractional_gpus_pack_four_workers_per_gpu(ray_cpu_only):
    import ray

    from workers.actor import make_worker

    ray.shutdown()  # this test needs a cluster with (logical) GPUs
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote
    class Probe:
        def gpu_ids(self):
            return ray.get_gpu_ids()

    res = resolve_resources(ResourceConfig(num_workers=8, gpus_per_worker=0.25, cpus_per_worker=0.25),
                            ray.cluster_resources())
    probes = [Probe.options(**res.actor_options()).remote() for _ in range(8)]
    ids = ray.get([p.gpu_ids.remote() for p in probes], timeout=120)
    assert all(len(i) == 1 for i in ids)
    assert sorted(Counter(str(i[0]) for i in ids).values()) == [4, 4]
    for p in probes:
        ray.kill(p)

    # a real ClientWorker with a GPU share: Ray assigns the GPU, torch (no CUDA here) stays on the CPU
    worker = make_worker(res, TINY, DATA, TRAIN, seed=0)
    info = ray.get(worker.ping.remote(), timeout=120)
    assert len(info["gpu_ids"]) == 1 and info["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_release_freed_memory_returns_fragmented_heap_pages():
    import psutil

    from workers.memory import _malloc_trim, release_freed_memory

    if _malloc_trim() is None:
        pytest.skip("not glibc: nothing to trim")
    proc = psutil.Process()
    blocks = [torch.ones(16_000) for _ in range(4_000)]  # 64 KB each (below the mmap threshold): on the heap
    keep = blocks[::8]  # one live block in eight pins the heap: glibc cannot give the holes back by itself
    del blocks
    before = proc.memory_info().rss
    assert release_freed_memory() is True
    freed = before - proc.memory_info().rss
    assert freed > 100 * 2**20, f"only {freed / 2**20:.0f} MiB returned"
    assert len(keep) == 500


def test_reconfigured_worker_equals_a_fresh_one(local_worker):
    """Warm trials: a worker that served one run serves the next exactly as a freshly started one would."""
    from dataclasses import replace

    from workers.actor import ClientWorker

    other_data, other_train = replace(DATA, num_clients=2), replace(TRAIN, lr=5e-3, local_steps=3)
    used = ClientWorker(TINY, DATA, TRAIN, seed=0)
    used.train(main_start(used, 1, seed=3))  # leaves trained weights, adapters and a trained head behind
    reused = used.reconfigure(TINY, other_data, other_train, seed=5)
    fresh = ClientWorker(TINY, other_data, other_train, seed=5)
    assert reused == {"model_reused": True, "data_reused": False}
    assert used.module_specs() == fresh.module_specs()
    assert used.client_num_examples() == fresh.client_num_examples() == {0: 14, 1: 14}
    head_used, head_fresh = used.initial_head(), fresh.initial_head()
    assert torch.equal(head_used["score.weight"], head_fresh["score.weight"])  # the seed-5 head, not seed 0's
    a, b = used.train(main_start(used, 1, seed=9)), fresh.train(main_start(fresh, 1, seed=9))
    for (Ba, Aa), (Bb, Ab) in zip(a.adapters["main"].values(), b.adapters["main"].values()):
        assert torch.equal(Ba, Bb) and torch.equal(Aa, Ab)
    assert torch.equal(a.head["score.weight"], b.head["score.weight"]) and a.train_loss == b.train_loss
    # a model-shaping option that differs: the model is loaded again
    assert used.reconfigure(TINY, other_data, replace(other_train, gradient_checkpointing=True), seed=5) == {
        "model_reused": False, "data_reused": True}
