"""Evaluation split into shards of whole batches, and the exact combination of the shards' results.

The global test set is evaluated by several workers at once: shard ``i`` of ``k`` takes batches
``[i*B/k, (i+1)*B/k)`` of the ``B = ceil(n / eval_batch_size)`` batches of the unsharded order, so every
batch holds the same examples (and is padded the same) whatever ``k`` is, and its per-example numbers are
the same. Each shard returns per-example numbers (:class:`EvalPartial`); :func:`combine` concatenates them
in example order and reduces with ``math.fsum`` (correctly rounded, so the sum does not depend on how
it was split). Hence the metrics are identical for any number of shards, i.e. of workers.

- classification: ``accuracy`` and ``mcc`` over the predictions, ``loss`` = mean per-example cross-entropy;
- causal LM: ``rouge_l`` = mean per-example ROUGE-L, ``loss`` = (sum of target-token cross-entropies) /
  (number of target tokens).

Only predictions, labels and per-example scores leave a worker: no text, no token ids.

:func:`example_rows` turns the shards of one evaluation into per-example records (columns
:data:`EXAMPLE_COLUMNS`), the raw material of paired statistics; like the metrics they are identical for
any number of shards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from workers.task_metrics import accuracy, matthews_corrcoef

EXAMPLE_COLUMNS = ("round", "scope", "client", "example", "label", "prediction", "score", "loss")


@dataclass
class EvalPartial:
    """Per-example results of one shard.

    ``loss_sums[i]`` / ``loss_counts[i]``: example i's summed loss and the number of terms in it (1 for
    classification, its target tokens for a causal LM).
    """

    task: str
    loss_sums: list[float] = field(default_factory=list)
    loss_counts: list[int] = field(default_factory=list)
    preds: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    rouge: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.loss_sums)


def shard_ranges(n_examples: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` example ranges made of whole batches; at most ``shards``, none empty."""
    if n_examples < 1 or batch_size < 1 or shards < 1:
        raise ValueError(f"shard_ranges needs positive sizes, got n={n_examples}, batch={batch_size}, "
                         f"shards={shards}")
    n_batches = math.ceil(n_examples / batch_size)
    k = min(shards, n_batches)
    bounds = [min(n_examples, (i * n_batches // k) * batch_size) for i in range(k + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def combine(partials: Sequence[EvalPartial]) -> dict[str, float]:
    """The metrics of the concatenated shards (in the given order); see the module docstring."""
    if not partials or not sum(len(p) for p in partials):
        raise ValueError("combine needs at least one evaluated example")
    tasks = {p.task for p in partials}
    if len(tasks) != 1:
        raise ValueError(f"cannot combine shards of different tasks {sorted(tasks)}")
    loss = math.fsum(x for p in partials for x in p.loss_sums) / max(1, sum(c for p in partials
                                                                           for c in p.loss_counts))
    n = float(sum(len(p) for p in partials))
    if tasks == {"classification"}:
        preds = [x for p in partials for x in p.preds]
        labels = [y for p in partials for y in p.labels]
        return {"accuracy": accuracy(preds, labels), "mcc": matthews_corrcoef(preds, labels), "loss": loss,
                "n_examples": n}
    rouge = [x for p in partials for x in p.rouge]
    return {"rouge_l": math.fsum(rouge) / len(rouge), "loss": loss, "n_examples": n}


def example_rows(blocks: Sequence[tuple[str, int, Sequence[EvalPartial]]], round_idx: int) -> dict[str, list]:
    """Per-example records of one evaluation, as columns (:data:`EXAMPLE_COLUMNS`) of equal length.

    ``blocks``: ``(scope, client, partials)`` per evaluated model, e.g. ``("global", -1, shards)`` for the
    global model on the global test set and ``("personal", c, [partial])`` for client ``c``'s personalized
    model on its own test split; a block's shards are concatenated in order, so ``example`` is the index in
    that test set. ``label`` / ``prediction`` are class ids (-1 for a causal LM); ``score`` is the
    correctness (1.0 / 0.0) for classification and the example's ROUGE-L for a causal LM; ``loss`` is the
    example's mean loss (its summed loss over its number of terms).
    """
    cols: dict[str, list] = {c: [] for c in EXAMPLE_COLUMNS}
    for scope, client, partials in blocks:
        n = sum(len(p) for p in partials)
        cols["round"] += [int(round_idx)] * n
        cols["scope"] += [scope] * n
        cols["client"] += [int(client)] * n
        cols["example"] += list(range(n))
        if all(p.task == "classification" for p in partials):
            preds = [int(x) for p in partials for x in p.preds]
            labels = [int(y) for p in partials for y in p.labels]
            cols["label"] += labels
            cols["prediction"] += preds
            cols["score"] += [1.0 if x == y else 0.0 for x, y in zip(preds, labels)]
        else:
            cols["label"] += [-1] * n
            cols["prediction"] += [-1] * n
            cols["score"] += [float(x) for p in partials for x in p.rouge]
        cols["loss"] += [s / c if c else math.nan for p in partials for s, c in zip(p.loss_sums, p.loss_counts)]
    return cols
