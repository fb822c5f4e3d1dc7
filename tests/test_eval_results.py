"""Evaluation shards: whole batches, nothing lost or repeated; the combination is exact."""

import pytest

from workers.eval_results import EXAMPLE_COLUMNS, EvalPartial, combine, example_rows, shard_ranges


@pytest.mark.parametrize("n,batch,shards,expected", [
    (500, 64, 2, [(0, 256), (256, 500)]),           # 8 batches: 4 + 4
    (200, 64, 4, [(0, 64), (64, 128), (128, 192), (192, 200)]),
    (10, 64, 4, [(0, 10)]),                          # one batch: one shard
    (7, 2, 3, [(0, 2), (2, 4), (4, 7)]),             # 4 batches: 1 + 1 + 2
])
def test_shard_ranges_are_whole_batches_covering_every_example_once(n, batch, shards, expected):
    assert shard_ranges(n, batch, shards) == expected


def test_shard_ranges_reject_nonpositive_sizes():
    with pytest.raises(ValueError, match="positive sizes"):
        shard_ranges(0, 4, 2)


def test_combine_hand_case():
    a = EvalPartial("classification", [0.5, 1.5], [1, 1], preds=[1, 0], labels=[1, 1])
    b = EvalPartial("classification", [1.0], [1], preds=[0], labels=[0])
    out = combine([a, b])
    assert out == {"accuracy": 2 / 3, "mcc": 0.5, "loss": 1.0, "n_examples": 3.0}
    c = EvalPartial("causal_lm", [3.0, 1.0], [2, 2], rouge=[1.0, 0.0])
    d = EvalPartial("causal_lm", [2.0], [4], rouge=[0.5])
    assert combine([c, d]) == {"rouge_l": 0.5, "loss": 6.0 / 8, "n_examples": 3.0}
    with pytest.raises(ValueError, match="different tasks"):
        combine([a, c])
    with pytest.raises(ValueError, match="at least one"):
        combine([])


def test_example_rows_hand_case():
    a = EvalPartial("classification", [0.5, 1.5], [1, 1], preds=[1, 0], labels=[1, 1])
    b = EvalPartial("classification", [1.0], [1], preds=[0], labels=[0])
    c = EvalPartial("causal_lm", [3.0, 1.0], [2, 4], rouge=[1.0, 0.25])
    rows = example_rows([("global", -1, [a, b]), ("personal", 2, [a])], round_idx=3)
    assert rows == {"round": [3] * 5, "scope": ["global"] * 3 + ["personal"] * 2, "client": [-1, -1, -1, 2, 2],
                    "example": [0, 1, 2, 0, 1], "label": [1, 1, 0, 1, 1], "prediction": [1, 0, 0, 1, 0],
                    "score": [1.0, 0.0, 1.0, 1.0, 0.0], "loss": [0.5, 1.5, 1.0, 0.5, 1.5]}
    assert tuple(rows) == EXAMPLE_COLUMNS
    causal = example_rows([("global", -1, [c])], round_idx=0)
    assert causal["label"] == causal["prediction"] == [-1, -1]
    assert causal["score"] == [1.0, 0.25] and causal["loss"] == [1.5, 0.25]
    # the same rows whatever the shards
    assert example_rows([("global", -1, [a, b])], 1) == example_rows([("global", -1, [
        EvalPartial("classification", [0.5], [1], preds=[1], labels=[1]),
        EvalPartial("classification", [1.5, 1.0], [1, 1], preds=[0, 0], labels=[1, 0])])], 1)
