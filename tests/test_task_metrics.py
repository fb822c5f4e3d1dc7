import math

import numpy as np
import pytest

from workers.data_config import DataConfig
from workers.task_metrics import accuracy, compute_metrics, matthews_corrcoef, metric_names_for, rouge_l


def test_accuracy_hand_case():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy([2, 2, 0], [2, 2, 0]) == 1.0
    assert accuracy(np.array([0]), np.array([1])) == 0.0


def test_metrics_reject_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="no predictions"):
        matthews_corrcoef([], [])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])


def test_mcc_binary_hand_case():
    # TP=2 FP=1 TN=2 FN=0: (2*2 - 1*0) / sqrt(3 * 2 * 3 * 2) = 4 / 6
    assert matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 0, 1]) == pytest.approx(2 / 3)
    # TP=1 FP=1 TN=1 FN=1: 0
    assert matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 1]) == pytest.approx(0.0)
    assert matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_mcc_multiclass_hand_cases():
    # c=3 s=6 p=t=(2,2,2): (18 - 12) / sqrt(24 * 24) = 0.25
    assert matthews_corrcoef([0, 1, 2, 0, 1, 2], [0, 1, 2, 1, 2, 0]) == pytest.approx(0.25)
    # c=3 s=4 p=(2,1,1) t=(1,2,1): (12 - 5) / sqrt(10 * 10) = 0.7
    assert matthews_corrcoef([0, 0, 1, 2], [0, 1, 1, 2]) == pytest.approx(0.7)


def test_mcc_multiclass_formula_matches_binary_formula():
    rng = np.random.default_rng(0)
    y, p = rng.integers(2, size=50), rng.integers(2, size=50)
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(p, y) == pytest.approx(expected)


def test_mcc_degenerate_is_zero():
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # one predicted class
    assert matthews_corrcoef([1, 0, 1, 0], [1, 1, 1, 1]) == 0.0  # one true class
    assert matthews_corrcoef([3, 3], [3, 3]) == 0.0


def test_rouge_l_hand_cases():
    assert rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert rouge_l(["dog"], ["the cat sat"]) == 0.0
    # LCS 3: P = 3/3, R = 3/4, F = 2PR / (P + R) = 6/7
    assert rouge_l(["the cat sat"], ["the cat was sat"]) == pytest.approx(6 / 7)
    # mean over examples
    assert rouge_l(["the cat sat", "dog"], ["the cat sat", "cat"]) == pytest.approx(0.5)
    # Porter stemmer (Super-NaturalInstructions convention): "cats" matches "cat"
    assert rouge_l(["Cats!"], ["cat"]) == pytest.approx(1.0)


def test_rouge_l_best_reference_counts_and_non_ascii_scores_zero():
    assert rouge_l(["Tokio"], [["Tokyo", "Tokio"]]) == pytest.approx(1.0)
    assert rouge_l(["Tokio"], [["Tokyo"]]) == 0.0
    assert rouge_l(["東京"], ["東京"]) == 0.0
    assert 0.0 <= rouge_l(["a fine film", "bad"], ["a film", "very bad indeed"]) <= 1.0


def test_metric_names_for_each_task():
    assert metric_names_for(DataConfig()) == ("accuracy",)
    assert metric_names_for(DataConfig(dataset="glue", glue_task="cola")) == ("accuracy", "mcc")
    assert metric_names_for(DataConfig(dataset="glue", glue_task="sst2")) == ("accuracy",)
    assert metric_names_for(DataConfig(dataset="dolly")) == ("rouge_l",)
    assert metric_names_for(DataConfig(dataset="rotten_tomatoes_instruct")) == ("rouge_l",)


def test_compute_metrics_dispatches_by_name():
    out = compute_metrics(("accuracy", "mcc"), [1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert out == {"accuracy": pytest.approx(0.8), "mcc": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(("bleu",), ["a"], ["a"])
