"""Typed, validated options of the data layer: which data set, how it is split among clients.

One flat frozen dataclass, so a sweep can grid any key. Every error names the field as the sweep YAML
spells it (``data.<field>``) and, for a choice, the allowed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from core.validation import check_choice, check_int

DATASETS = ("rotten_tomatoes", "csv", "jsonl", "glue", "natural_instructions", "dolly",
            "rotten_tomatoes_instruct", "hub")
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "qnli", "rte")
TASKS = ("classification", "causal_lm")
PARTITIONS = ("iid", "dirichlet", "pathological", "natural")

# The task each data set supports (``csv``/``jsonl`` support both; classification by default).
DATASET_TASKS: dict[str, tuple[str, ...]] = {
    "rotten_tomatoes": ("classification",),
    "glue": ("classification",),
    "csv": ("classification", "causal_lm"),
    "jsonl": ("classification", "causal_lm"),
    "natural_instructions": ("causal_lm",),
    "dolly": ("causal_lm",),
    "rotten_tomatoes_instruct": ("causal_lm",),
    "hub": ("classification", "causal_lm"),
}
# Data sets whose examples carry a group (the natural split) without a ``group_column``.
BUILTIN_GROUPS = {"rotten_tomatoes": "movie", "rotten_tomatoes_instruct": "movie",
                  "natural_instructions": "task", "dolly": "category"}
# Data sets that must be given a local ``path`` (no hub id exists for them).
NEEDS_PATH = ("csv", "jsonl", "natural_instructions")
# Options of ``dataset: hub`` only (any hub data set, or a local copy of one: workers/hub_data.py).
HUB_FIELDS = ("hub_id", "hub_config", "hub_revision", "train_split", "test_split")


@dataclass(frozen=True)
class DataConfig:
    """Options of the data set and of its federated split.

    ``task`` left as ``None`` is resolved from ``dataset`` in ``__post_init__`` (so ``cfg.task`` is always
    concrete). ``global_test_size`` examples are held out before partitioning (or drawn from the source's
    official evaluation split where it has one, e.g. GLUE validation); ``max_examples`` then caps the
    number of examples shared among the clients (seeded subsample). ``dataset: hub`` reads any hub data set
    (``hub_id``, ``hub_config``, ``hub_revision``) or a local copy of one (``path``), taking the clients'
    examples from ``train_split`` and, when given, the global test set from ``test_split``.
    ``min_examples_per_client`` counts a client's train and test examples together; ``client_test_fraction``
    of them form its personal test set.
    """

    dataset: Literal["rotten_tomatoes", "csv", "jsonl", "glue", "natural_instructions", "dolly",
                     "rotten_tomatoes_instruct", "hub"] = "rotten_tomatoes"
    path: str | None = None
    glue_task: Literal["cola", "sst2", "mrpc", "qqp", "qnli", "rte"] | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    hub_revision: str | None = None
    train_split: str | None = None
    test_split: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    target_column: str | None = None
    group_column: str | None = None
    task: Literal["classification", "causal_lm"] | None = None
    num_clients: int = 10
    partition: Literal["iid", "dirichlet", "pathological", "natural"] = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    min_examples_per_client: int = 8
    client_test_fraction: float = 0.2
    global_test_size: int = 500
    max_examples: int | None = None
    max_length: int = 64

    def __post_init__(self) -> None:
        check_choice("data.dataset", self.dataset, DATASETS)
        allowed_tasks = DATASET_TASKS[self.dataset]
        if self.task is None:
            object.__setattr__(self, "task", allowed_tasks[0])
        check_choice("data.task", self.task, TASKS)
        if self.task not in allowed_tasks:
            raise ValueError(f"data.task={self.task!r} is not allowed for data.dataset={self.dataset!r}; "
                             f"choose one of {list(allowed_tasks)}")
        if self.dataset in NEEDS_PATH and not self.path:
            raise ValueError(f"data.path is required for data.dataset={self.dataset!r}")
        if self.dataset == "glue":
            check_choice("data.glue_task", self.glue_task, GLUE_TASKS)
        elif self.glue_task is not None:
            raise ValueError(f"data.glue_task={self.glue_task!r} is only allowed with data.dataset='glue'")
        self._check_hub()
        check_choice("data.partition", self.partition, PARTITIONS)
        if self.partition == "natural" and self.group_column is None and self.dataset not in BUILTIN_GROUPS:
            raise ValueError(f"data.partition='natural' needs data.group_column for "
                             f"data.dataset={self.dataset!r} (built-in groups exist only for "
                             f"{sorted(BUILTIN_GROUPS)})")
        self._check_numbers()

    def _check_numbers(self) -> None:
        check_int("data.num_clients", self.num_clients, 1)
        if not (isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"data.alpha={self.alpha!r} must be a finite number > 0")
        check_int("data.classes_per_client", self.classes_per_client, 1)
        check_int("data.min_examples_per_client", self.min_examples_per_client, 1)
        if not (isinstance(self.client_test_fraction, int | float) and 0.0 <= self.client_test_fraction < 1.0):
            raise ValueError(f"data.client_test_fraction={self.client_test_fraction!r} must be in [0, 1)")
        check_int("data.global_test_size", self.global_test_size, 0)
        if self.max_examples is not None:
            check_int("data.max_examples", self.max_examples, 1)
        check_int("data.max_length", self.max_length, 1)

    def _check_hub(self) -> None:
        for name in HUB_FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"data.{name}={value!r} must be a non-empty string")
            if value is not None and self.dataset != "hub":
                raise ValueError(f"data.{name}={value!r} is only allowed with data.dataset='hub'")
        if self.dataset == "hub" and not (self.hub_id or self.path):
            raise ValueError("data.dataset='hub' needs data.hub_id (a hub data set id, e.g. 'stanfordnlp/imdb') "
                             "or data.path (a local copy: a folder written by save_to_disk, a Parquet file or "
                             "a glob of Parquet files)")
        if self.test_split is not None and self.test_split == (self.train_split or "train"):
            raise ValueError(f"data.test_split={self.test_split!r} must differ from data.train_split: the global "
                             "test set would overlap the clients' examples")
