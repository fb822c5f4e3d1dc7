import warnings

import numpy as np
import pytest

from workers.data import Example, LabelledPool, load_examples
from workers.data_config import DataConfig
from workers.partition import PartitionWarning, partition, partition_summary


@pytest.fixture(scope="module")
def rt_pool():
    return load_examples(DataConfig())


def make_pool(n=400, num_labels=4, labelled=True, groups=None, heldout=0):
    rng = np.random.default_rng(123)
    labels = rng.integers(num_labels, size=n)
    def ex(i, y):
        return Example(text=f"t{i}", label=int(y) if labelled else None,
                       group=None if groups is None else f"g{i % groups}")
    examples = [ex(i, y) for i, y in enumerate(labels)]
    held = [Example(text=f"h{i}", label=i % num_labels) for i in range(heldout)] or None
    return LabelledPool(examples, [f"c{k}" for k in range(num_labels)] if labelled else [], "classification",
                        heldout=held)


def all_indices(fed):
    return [np.concatenate([c.train_idx, c.test_idx]) for c in fed.clients]


def label_entropy(labels, num_labels):
    p = np.bincount(labels, minlength=num_labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mean_client_entropy(fed):
    return np.mean([label_entropy([e.label for e in c.train + c.test], fed.num_labels) for c in fed.clients])


# ---------------------------------------------------------------- sizes, disjointness, determinism


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "pathological", "natural"])
def test_sizes_sum_and_nothing_shared(rt_pool, scheme):
    cfg = DataConfig(partition=scheme, alpha=0.5, classes_per_client=1, num_clients=10)
    fed = partition(rt_pool, cfg, seed=0)
    parts = all_indices(fed)
    assert fed.num_clients == 10 and len(fed.global_test) == 500
    assert sum(len(p) for p in parts) + len(fed.global_test) == len(rt_pool)
    union = np.concatenate(parts + [fed.global_test_idx])
    assert len(np.unique(union)) == len(union) == len(rt_pool)  # no example twice, global test disjoint
    for c in fed.clients:
        assert len(c.train) == len(c.train_idx) and len(c.test) == len(c.test_idx)
        assert c.train == [rt_pool.examples[i] for i in c.train_idx]
        assert c.n_examples >= cfg.min_examples_per_client
    assert fed.global_test == [rt_pool.examples[i] for i in fed.global_test_idx]


def test_iid_split_is_even_and_client_test_fraction_holds(rt_pool):
    fed = partition(rt_pool, DataConfig(num_clients=7, client_test_fraction=0.25), seed=3)
    sizes = [c.n_examples for c in fed.clients]
    assert max(sizes) - min(sizes) <= 1
    for c in fed.clients:
        assert abs(len(c.test) - 0.25 * c.n_examples) <= 1


def test_zero_client_test_fraction_gives_empty_client_tests():
    fed = partition(make_pool(), DataConfig(num_clients=4, client_test_fraction=0.0, global_test_size=20), 0)
    assert all(len(c.test) == 0 for c in fed.clients)
    assert sum(len(c.train) for c in fed.clients) == 380


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "pathological", "natural"])
def test_same_seed_same_partition_other_seed_differs(rt_pool, scheme):
    cfg = DataConfig(partition=scheme, classes_per_client=1, max_examples=3000)
    a, b, c = partition(rt_pool, cfg, 7), partition(rt_pool, cfg, 7), partition(rt_pool, cfg, 8)
    for x, y in zip(a.clients, b.clients):
        assert np.array_equal(x.train_idx, y.train_idx) and np.array_equal(x.test_idx, y.test_idx)
    assert np.array_equal(a.global_test_idx, b.global_test_idx)
    assert not np.array_equal(a.global_test_idx, c.global_test_idx)
    assert any(not np.array_equal(x.train_idx, y.train_idx) for x, y in zip(a.clients, c.clients))


def test_global_test_depends_only_on_seed(rt_pool):
    iid = partition(rt_pool, DataConfig(), 5)
    nat = partition(rt_pool, DataConfig(partition="natural", num_clients=20), 5)
    assert np.array_equal(iid.global_test_idx, nat.global_test_idx)


def test_max_examples_caps_client_data(rt_pool):
    fed = partition(rt_pool, DataConfig(max_examples=1000, global_test_size=100), 0)
    assert sum(c.n_examples for c in fed.clients) == 1000 and len(fed.global_test) == 100
    other = partition(rt_pool, DataConfig(max_examples=1000, global_test_size=100), 1)
    assert set(np.concatenate(all_indices(fed))) != set(np.concatenate(all_indices(other)))


def test_heldout_split_feeds_the_global_test_and_whole_pool_goes_to_clients():
    pool = make_pool(n=200, heldout=30)
    fed = partition(pool, DataConfig(num_clients=4, global_test_size=500), 0)
    assert fed.global_test_source == "heldout" and len(fed.global_test) == 30
    assert sum(c.n_examples for c in fed.clients) == 200
    small = partition(pool, DataConfig(num_clients=4, global_test_size=10), 0)
    assert len(small.global_test) == 10 and all(e.text.startswith("h") for e in small.global_test)


# ---------------------------------------------------------------- Dirichlet label skew


@pytest.mark.filterwarnings("ignore::workers.partition.PartitionWarning")
def test_label_skew_grows_as_alpha_falls(rt_pool):
    def entropy(alpha):
        cfg = DataConfig(partition="dirichlet", alpha=alpha, num_clients=10)
        return np.mean([mean_client_entropy(partition(rt_pool, cfg, s)) for s in range(3)])

    h100, h1, h005 = entropy(100.0), entropy(1.0), entropy(0.05)
    assert h005 < h1 < h100
    assert h100 > 0.65  # close to the pool's own entropy (~0.68 nats)
    assert h005 < 0.35


def test_dirichlet_alpha_001_tops_up_with_warning_and_respects_minimum(rt_pool):
    cfg = DataConfig(partition="dirichlet", alpha=0.01, num_clients=10, min_examples_per_client=20)
    with pytest.warns(PartitionWarning, match=r"data\.alpha=0\.01.*topped up"):
        fed = partition(rt_pool, cfg, seed=0)
    assert all(c.n_examples >= 20 for c in fed.clients)
    assert fed.notes and "topped up" in fed.notes[0]
    assert sum(c.n_examples for c in fed.clients) + 500 == len(rt_pool)
    assert mean_client_entropy(fed) < 0.2  # still strongly skewed after the top-up


def test_dirichlet_moderate_alpha_needs_no_top_up(rt_pool):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartitionWarning)
        fed = partition(rt_pool, DataConfig(partition="dirichlet", alpha=1.0), 0)
    assert fed.notes == []


# ---------------------------------------------------------------- pathological and natural


def test_pathological_gives_each_client_exactly_k_classes():
    pool = make_pool(n=800, num_labels=5)
    fed = partition(pool, DataConfig(partition="pathological", classes_per_client=2, num_clients=10,
                                     global_test_size=50), 0)
    for c in fed.clients:
        assert len({e.label for e in c.train + c.test}) == 2
    held = {lab for c in fed.clients for lab in {e.label for e in c.train + c.test}}
    assert held == set(range(5))
    assert sum(c.n_examples for c in fed.clients) == 750


def test_natural_split_keeps_each_movie_in_one_client_and_balances(rt_pool):
    fed = partition(rt_pool, DataConfig(partition="natural", num_clients=10), 0)
    owner = {}
    for c in fed.clients:
        for e in c.train + c.test:
            assert owner.setdefault(e.group, c.client) == c.client
    assert len(owner) == 508
    sizes = [c.n_examples for c in fed.clients]
    assert max(sizes) - min(sizes) <= 40  # greedy balancing: within about one movie's worth


def test_natural_split_on_csv_groups():
    pool = make_pool(n=120, groups=6)
    fed = partition(pool, DataConfig(partition="natural", num_clients=3, global_test_size=0,
                                     dataset="csv", path="x.csv", group_column="g"), 1)
    assert sorted(len({e.group for e in c.train + c.test}) for c in fed.clients) == [2, 2, 2]


# ---------------------------------------------------------------- errors


def test_more_clients_than_examples_is_an_error():
    pool = make_pool(n=30)
    with pytest.raises(ValueError, match=r"data\.num_clients=40 is more than the 30 examples"):
        partition(pool, DataConfig(num_clients=40, global_test_size=0), 0)
    with pytest.raises(ValueError, match=r"data\.num_clients=5 needs at least 40 examples"):
        partition(pool, DataConfig(num_clients=5, global_test_size=0), 0)


def test_classes_per_client_above_num_classes_is_an_error():
    with pytest.raises(ValueError, match=r"data\.classes_per_client=5 exceeds the number of classes \(4"):
        partition(make_pool(), DataConfig(partition="pathological", classes_per_client=5), 0)


@pytest.mark.parametrize("scheme", ["dirichlet", "pathological"])
def test_label_partition_on_unlabelled_pool_is_an_error(scheme):
    pool = make_pool(labelled=False)
    with pytest.raises(ValueError, match=rf"data\.partition='{scheme}' needs labelled examples"):
        partition(pool, DataConfig(partition=scheme, classes_per_client=1, global_test_size=10), 0)


def test_natural_split_without_groups_is_an_error():
    with pytest.raises(ValueError, match=r"data\.partition='natural' needs a group per example; set "
                                         r"data\.group_column"):
        partition(make_pool(), DataConfig(partition="natural", global_test_size=10), 0)
    with pytest.raises(ValueError, match=r"data\.num_clients=10 exceeds the 3 groups"):
        partition(make_pool(groups=3), DataConfig(partition="natural", global_test_size=10), 0)


def test_global_test_larger_than_pool_and_bad_seed_are_errors():
    with pytest.raises(ValueError, match=r"data\.global_test_size=500 leaves no examples"):
        partition(make_pool(n=400), DataConfig(), 0)
    with pytest.raises(ValueError, match=r"seed=-1 must be an integer >= 0"):
        partition(make_pool(), DataConfig(global_test_size=10), -1)


# ---------------------------------------------------------------- summary


def test_partition_summary_counts_train_labels():
    pool = make_pool(n=200, num_labels=3)
    fed = partition(pool, DataConfig(num_clients=4, global_test_size=20), 0)
    df = partition_summary(fed)
    assert list(df.columns) == ["client", "n_train", "n_test", "c0", "c1", "c2"]
    assert df["client"].tolist() == [0, 1, 2, 3]
    for row, c in zip(df.itertuples(index=False), fed.clients):
        assert row.n_train == len(c.train) and row.n_test == len(c.test)
        assert [row.c0, row.c1, row.c2] == [sum(e.label == k for e in c.train) for k in range(3)]
    assert df[["c0", "c1", "c2"]].to_numpy().sum() == df["n_train"].sum()
    unlabelled = partition(make_pool(n=200, labelled=False), DataConfig(num_clients=4, global_test_size=20), 0)
    assert list(partition_summary(unlabelled).columns) == ["client", "n_train", "n_test"]


def test_load_federated_on_a_csv_file_with_natural_groups():
    from pathlib import Path

    from workers.partition import load_federated

    path = Path(__file__).parent / "fixtures" / "reviews.csv"
    cfg = DataConfig(dataset="csv", path=str(path), text_column="review", label_column="sentiment",
                     group_column="movie", partition="natural", num_clients=3, global_test_size=6,
                     min_examples_per_client=4)
    fed = load_federated(cfg, seed=0)
    assert fed.label_names == ["negative", "positive"] and fed.num_labels == 2
    assert sum(c.n_examples for c in fed.clients) == 42
    movies = [{e.group for e in c.train + c.test} for c in fed.clients]
    assert sum(len(m) for m in movies) == len(set().union(*movies)) == 6
