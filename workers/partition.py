"""Splitting a ``LabelledPool`` into a shared global test set and per-client train/test sets.

Order of operations, each step with its own random stream derived from the caller's seed (so the global
test set does not change with the partition scheme or the number of clients):

1. global test: ``global_test_size`` examples held out of the pool (or drawn from the source's official
   evaluation split, ``pool.heldout``, where it has one);
2. ``max_examples``: seeded subsample of what is left, for fast runs;
3. the partitioner gives each client a disjoint set of examples:
   - ``iid``: shuffle, split evenly (sizes differ by at most one);
   - ``dirichlet``: label skew (Hsu et al. 2019): for each class, proportions ``p ~ Dir(alpha * 1_N)``
     over the N clients; redrawn until every client has ``min_examples_per_client`` examples, at most
     ``MAX_DIRICHLET_DRAWS`` times, then the best draw is topped up (examples moved at random from the
     largest to the smallest clients) with a ``PartitionWarning``;
   - ``pathological``: each client holds exactly ``classes_per_client`` distinct classes (McMahan et al.
     2017); classes go round-robin over a seeded permutation, each class split evenly among its holders;
   - ``natural``: whole groups (movie, task, ...) go to clients, largest first to the least-loaded client
     (greedy balancing by size), so no group is split;
4. per client: a seeded ``client_test_fraction`` of its examples form its personal test set (at least one
   example when the fraction is > 0, and always at least one train example).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workers.data import Example, LabelledPool, load_examples
from workers.data_config import DataConfig

MAX_DIRICHLET_DRAWS = 100
# Stream ids of the seeded random generators (one per step, see the module docstring).
_GLOBAL_TEST, _SUBSAMPLE, _PARTITION, _CLIENT_SPLIT = range(4)


class PartitionWarning(UserWarning):
    """The partition had to deviate from its pure definition (e.g. a Dirichlet top-up)."""


@dataclass
class ClientData:
    """One client's examples; ``train_idx`` / ``test_idx`` index ``pool.examples``."""

    client: int
    train: list[Example]
    test: list[Example]
    train_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def n_examples(self) -> int:
        """Train plus test examples."""
        return len(self.train) + len(self.test)


@dataclass
class FederatedData:
    """The federated view of a data set: a shared global test set and per-client train/test sets.

    ``global_test_idx`` indexes ``pool.examples``, or ``pool.heldout`` when ``global_test_source`` is
    ``"heldout"``. ``notes`` records any deviation from the pure partition (also raised as a warning).
    """

    clients: list[ClientData]
    global_test: list[Example]
    global_test_idx: np.ndarray
    global_test_source: str
    num_labels: int
    label_names: list[str]
    task: str
    notes: list[str] = field(default_factory=list)

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.clients)

    def client_train_sizes(self) -> list[int]:
        """Number of train examples of each client (the usual aggregation weights)."""
        return [len(c.train) for c in self.clients]


def load_federated(cfg: DataConfig, seed: int) -> FederatedData:
    """``partition(load_examples(cfg), cfg, seed)``."""
    return partition(load_examples(cfg), cfg, seed)


def partition(pool: LabelledPool, cfg: DataConfig, seed: int) -> FederatedData:
    """Split ``pool`` into a global test set and ``cfg.num_clients`` disjoint clients.

    Deterministic from ``seed`` (an int >= 0); see the module docstring for the steps and the partitioners.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0")
    _check_pool(pool, cfg)
    rng = {s: np.random.default_rng([int(seed), s]) for s in (_GLOBAL_TEST, _SUBSAMPLE, _PARTITION,
                                                               _CLIENT_SPLIT)}
    n = len(pool.examples)
    if pool.heldout:
        source = "heldout"
        size = min(cfg.global_test_size, len(pool.heldout))
        test_idx = np.sort(rng[_GLOBAL_TEST].choice(len(pool.heldout), size=size, replace=False))
        global_test = [pool.heldout[i] for i in test_idx]
        rest = np.arange(n)
    else:
        source = "pool"
        if cfg.global_test_size >= n:
            raise ValueError(f"data.global_test_size={cfg.global_test_size} leaves no examples for the "
                             f"clients (the pool has {n})")
        perm = rng[_GLOBAL_TEST].permutation(n)
        test_idx, rest = np.sort(perm[:cfg.global_test_size]), np.sort(perm[cfg.global_test_size:])
        global_test = [pool.examples[i] for i in test_idx]
    if cfg.max_examples is not None and len(rest) > cfg.max_examples:
        rest = np.sort(rng[_SUBSAMPLE].choice(rest, size=cfg.max_examples, replace=False))
    needed = cfg.num_clients * cfg.min_examples_per_client
    if len(rest) < needed:
        raise ValueError(f"data.num_clients={cfg.num_clients} needs at least {needed} examples "
                         f"(data.min_examples_per_client={cfg.min_examples_per_client} each) but only "
                         f"{len(rest)} remain after the global test set and data.max_examples")
    notes: list[str] = []
    parts = _PARTITIONERS[cfg.partition](pool, rest, cfg, rng[_PARTITION], notes)
    for note in notes:
        warnings.warn(note, PartitionWarning, stacklevel=2)
    clients = [_client_split(pool, k, idx, cfg.client_test_fraction, rng[_CLIENT_SPLIT])
               for k, idx in enumerate(parts)]
    return FederatedData(clients, global_test, test_idx, source, pool.num_labels, list(pool.label_names),
                         pool.task, notes)


def partition_summary(fed: FederatedData) -> pd.DataFrame:
    """One row per client: ``client``, ``n_train``, ``n_test`` and, per label name, the train count."""
    rows = []
    for c in fed.clients:
        row = {"client": c.client, "n_train": len(c.train), "n_test": len(c.test)}
        if fed.num_labels:
            counts = np.bincount([e.label for e in c.train if e.label is not None], minlength=fed.num_labels)
            row.update({name: int(counts[i]) for i, name in enumerate(fed.label_names)})
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- checks and helpers


def _check_pool(pool: LabelledPool, cfg: DataConfig) -> None:
    if cfg.partition in ("dirichlet", "pathological") and not pool.has_labels:
        raise ValueError(f"data.partition={cfg.partition!r} needs labelled examples, but "
                         f"data.dataset={cfg.dataset!r} (task {pool.task}) has none; use 'iid' or 'natural'")
    if cfg.partition == "pathological" and cfg.classes_per_client > pool.num_labels:
        raise ValueError(f"data.classes_per_client={cfg.classes_per_client} exceeds the number of classes "
                         f"({pool.num_labels}: {pool.label_names})")
    if cfg.partition == "natural" and any(e.group is None for e in pool.examples):
        raise ValueError(f"data.partition='natural' needs a group per example; set data.group_column "
                         f"(data.dataset={cfg.dataset!r} has examples without one)")
    if cfg.num_clients > len(pool.examples):
        raise ValueError(f"data.num_clients={cfg.num_clients} is more than the {len(pool.examples)} "
                         "examples of the pool")


def _labels(pool: LabelledPool, idx: np.ndarray) -> np.ndarray:
    return np.array([pool.examples[i].label for i in idx], dtype=np.int64)


def _check_minimum(parts: list[np.ndarray], cfg: DataConfig) -> None:
    sizes = [len(p) for p in parts]
    k = int(np.argmin(sizes))
    if sizes[k] < cfg.min_examples_per_client:
        raise ValueError(f"data.partition={cfg.partition!r} gives client {k} only {sizes[k]} examples "
                         f"(< data.min_examples_per_client={cfg.min_examples_per_client}); use fewer "
                         "data.num_clients or more data")


def _client_split(pool: LabelledPool, client: int, idx: np.ndarray, fraction: float,
                  rng: np.random.Generator) -> ClientData:
    perm = rng.permutation(idx)
    n_test = 0
    if fraction > 0 and len(perm) >= 2:
        n_test = min(max(1, int(round(fraction * len(perm)))), len(perm) - 1)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return ClientData(client, [pool.examples[i] for i in train_idx], [pool.examples[i] for i in test_idx],
                      train_idx, test_idx)


# ---------------------------------------------------------------- partitioners
# Each takes (pool, idx, cfg, rng, notes) and returns one array of pool indices per client.


def _iid(pool: LabelledPool, idx: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
         notes: list[str]) -> list[np.ndarray]:
    return [np.sort(p) for p in np.array_split(rng.permutation(idx), cfg.num_clients)]


def _dirichlet_draw(idx: np.ndarray, labels: np.ndarray, n_clients: int, alpha: float,
                    rng: np.random.Generator) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in np.unique(labels):
        members = rng.permutation(idx[labels == c])
        p = rng.dirichlet(np.full(n_clients, alpha))
        if not np.all(np.isfinite(p)) or p.sum() <= 0:  # underflow at tiny alpha: all mass on one client
            p = np.eye(n_clients)[rng.integers(n_clients)]
        cuts = np.clip(np.round(np.cumsum(p / p.sum())[:-1] * len(members)).astype(int), 0, len(members))
        for k, chunk in enumerate(np.split(members, cuts)):
            chunks[k].append(chunk)
    return [np.concatenate(c) for c in chunks]


def _dirichlet(pool: LabelledPool, idx: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
               notes: list[str]) -> list[np.ndarray]:
    labels = _labels(pool, idx)
    best, best_min = None, -1
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts = _dirichlet_draw(idx, labels, cfg.num_clients, cfg.alpha, rng)
        smallest = min(len(p) for p in parts)
        if smallest >= cfg.min_examples_per_client:
            return [np.sort(p) for p in parts]
        if smallest > best_min:
            best, best_min = parts, smallest
    parts, moved, topped = _top_up(best, cfg.min_examples_per_client, rng)
    notes.append(f"data.partition='dirichlet' with data.alpha={cfg.alpha}: no draw in {MAX_DIRICHLET_DRAWS} "
                 f"gave every client >= data.min_examples_per_client={cfg.min_examples_per_client} examples "
                 f"(best draw: smallest client {best_min}); topped up {topped} clients with {moved} examples "
                 "moved at random from the largest clients, so the label skew is slightly below a pure "
                 "Dir(alpha) draw")
    return [np.sort(p) for p in parts]


def _top_up(parts: list[np.ndarray], minimum: int,
            rng: np.random.Generator) -> tuple[list[np.ndarray], int, int]:
    """Move random examples from the largest to the smallest client until all have ``minimum``.

    The caller guarantees ``sum(sizes) >= minimum * len(parts)``, so this ends.
    """
    parts = [np.asarray(p) for p in parts]
    moved, topped = 0, set()
    while True:
        sizes = [len(p) for p in parts]
        small, large = int(np.argmin(sizes)), int(np.argmax(sizes))
        need = minimum - sizes[small]
        if need <= 0:
            return parts, moved, len(topped)
        take = min(need, sizes[large] - minimum)
        pick = rng.choice(len(parts[large]), size=take, replace=False)
        keep = np.ones(len(parts[large]), dtype=bool)
        keep[pick] = False
        parts[small] = np.concatenate([parts[small], parts[large][pick]])
        parts[large] = parts[large][keep]
        moved += take
        topped.add(small)


def _pathological(pool: LabelledPool, idx: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
                  notes: list[str]) -> list[np.ndarray]:
    labels = _labels(pool, idx)
    classes = np.unique(labels)
    k = cfg.classes_per_client
    if k > len(classes):
        raise ValueError(f"data.classes_per_client={k} exceeds the {len(classes)} classes present after the "
                         "global test set and data.max_examples")
    order = rng.permutation(classes)
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(cfg.num_clients):
        for j in range(k):
            holders[int(order[(client * k + j) % len(classes)])].append(client)
    chunks: list[list[np.ndarray]] = [[] for _ in range(cfg.num_clients)]
    dropped = []
    for c, owners in holders.items():
        members = rng.permutation(idx[labels == c])
        if not owners:
            dropped.append(c)
            continue
        for owner, chunk in zip(owners, np.array_split(members, len(owners))):
            chunks[owner].append(chunk)
    if dropped:
        notes.append(f"data.partition='pathological': data.num_clients * data.classes_per_client < "
                     f"{len(classes)} classes, so classes {dropped} are held by no client and left out")
    parts = [np.sort(np.concatenate(c)) for c in chunks]
    _check_minimum(parts, cfg)
    return parts


def _natural(pool: LabelledPool, idx: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
             notes: list[str]) -> list[np.ndarray]:
    groups = np.array([pool.examples[i].group for i in idx], dtype=object)
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    if len(names) < cfg.num_clients:
        raise ValueError(f"data.num_clients={cfg.num_clients} exceeds the {len(names)} groups of the natural "
                         "split (data.group_column)")
    sizes = np.bincount(inverse)
    order = rng.permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, seeded tie-break
    loads = np.zeros(cfg.num_clients, dtype=np.int64)
    owner = np.empty(len(names), dtype=np.int64)
    for g in order:
        k = int(np.argmin(loads))
        owner[g] = k
        loads[k] += sizes[g]
    parts = [np.sort(idx[owner[inverse] == k]) for k in range(cfg.num_clients)]
    _check_minimum(parts, cfg)
    return parts


_PARTITIONERS = {"iid": _iid, "dirichlet": _dirichlet, "pathological": _pathological, "natural": _natural}
