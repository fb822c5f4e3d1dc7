"""analysis.stats: intervals, paired tests, Holm and sample sizes against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats
from workers.task_metrics import matthews_corrcoef


def correctness(n: int, wrong: range | list[int]) -> dict[str, np.ndarray]:
    """A 0/1 score sample of ``n`` examples, wrong on the given indices."""
    score = np.ones(n)
    score[list(wrong)] = 0.0
    return {"score": score}


# ------------------------------------------------------------------------------------------ intervals
def test_t_interval_of_three_known_values():
    # mean 2, s = 1, se = 1/sqrt(3); for 2 degrees of freedom t_q = (2q - 1) / sqrt(2 q (1 - q)): 4.3026527...
    iv = stats.t_interval([1.0, 2.0, 3.0])
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3)
    assert (iv.value, iv.n, iv.kind) == (2.0, 3, "seeds")
    assert iv.lo == pytest.approx(2 - half, abs=1e-12) and iv.hi == pytest.approx(2 + half, abs=1e-12)
    one = stats.t_interval([0.7])
    assert one.value == 0.7 and math.isnan(one.lo) and one.kind == "none"
    flat = stats.t_interval([0.5, 0.5])
    assert (flat.lo, flat.hi) == (0.5, 0.5)


def test_bootstrap_interval_of_one_trial_is_deterministic_and_binomial_sized():
    # 400 examples at 80% accuracy: the normal interval is +-1.96 sqrt(0.16 / 400) = +-0.0392
    rng = np.random.default_rng(3)
    sample = {"score": (np.arange(400) % 5 != 0).astype(float)[rng.permutation(400)]}
    first, second = stats.bootstrap_interval(sample), stats.bootstrap_interval(sample)
    assert first == second and first.kind == "examples" and first.value == pytest.approx(0.8)
    assert first.lo < 0.8 < first.hi
    assert first.hi - first.lo == pytest.approx(2 * 0.0392, abs=0.008)


def test_mcc_statistic_matches_the_task_metric_and_vectorizes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    preds = np.where(rng.random(60) < 0.6, labels, rng.integers(0, 3, 60))
    sample = {"label": labels, "prediction": preds}
    assert stats.mcc(sample) == pytest.approx(matthews_corrcoef(preds, labels), abs=1e-12)
    batch = {"label": np.stack([labels, labels]), "prediction": np.stack([preds, np.zeros(60, int)])}
    assert stats.mcc(batch) == pytest.approx([matthews_corrcoef(preds, labels), 0.0], abs=1e-12)


# ------------------------------------------------------------------------------------------ paired tests
def test_mcnemar_exact_by_hand():
    # a right / b wrong on 9 examples, the reverse on 1, 10 agree: two-sided p = 2 P(X >= 9 | 10, 1/2) = 22/1024
    a = np.array([1] * 9 + [0] + [1] * 5 + [0] * 5, dtype=float)
    b = np.array([0] * 9 + [1] + [1] * 5 + [0] * 5, dtype=float)
    p, n_ab, n_ba = stats.mcnemar_exact(a, b)
    assert (n_ab, n_ba) == (9, 1) and p == pytest.approx(22 / 1024, abs=1e-15)
    assert stats.mcnemar_exact(a, b, "greater")[0] == pytest.approx(11 / 1024, abs=1e-15)
    assert stats.mcnemar_exact(a, a) == (1.0, 0, 0)


def test_holm_on_a_known_list():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    adjusted = stats.holm([0.5, math.nan, 0.4])
    assert adjusted[0] == pytest.approx(0.8) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.8)
    assert stats.holm([0.9, 0.3]).tolist() == [0.9, 0.6] and stats.holm([]).size == 0


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_two_identical_methods_are_never_significant(n_seeds):
    rng = np.random.default_rng(n_seeds)
    for _ in range(5):
        pairs = []
        for _seed in range(n_seeds):
            a = {"score": (rng.random(150) < 0.7).astype(float)}
            pairs.append((a, {"score": a["score"].copy()}))
        test, dist = stats.paired_bootstrap(pairs)
        assert test.diff == 0 and test.p == 1.0 and (test.lo, test.hi) == (0.0, 0.0) and not dist.any()
        assert stats.mcnemar_exact(pairs[0][0]["score"], pairs[0][1]["score"])[0] == 1.0
        greater, _ = stats.paired_bootstrap(pairs, alternative="greater")
        assert greater.p == 1.0
    values = [0.81, 0.79, 0.83]
    assert stats.paired_t(values, values).p == 1.0


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_methods_that_differ_by_construction_are_always_significant(n_seeds):
    # b is a with 25 of a's correct answers turned wrong: a is better on every resample
    rng = np.random.default_rng(10 + n_seeds)
    pairs = []
    for _seed in range(n_seeds):
        a = {"score": (rng.random(200) < 0.75).astype(float)}
        b = {"score": a["score"].copy()}
        b["score"][np.flatnonzero(a["score"])[:25]] = 0.0
        pairs.append((a, b))
    test, _ = stats.paired_bootstrap(pairs)
    assert test.diff == pytest.approx(25 / 200) and test.p < 1e-6 and test.lo > 0
    assert stats.paired_bootstrap(pairs, alternative="greater")[0].p < 1e-6
    assert stats.mcnemar_exact(pairs[0][0]["score"], pairs[0][1]["score"])[0] == pytest.approx(2 * 0.5 ** 25)
    assert stats.paired_t([0.80, 0.82, 0.85], [0.70, 0.73, 0.74], "greater").p < 0.01


def test_paired_bootstrap_is_deterministic_and_its_seed_stage_widens_the_interval():
    rng = np.random.default_rng(5)
    # three seeds whose differences disagree (+0.15, 0, -0.05): seed variance the example stage alone misses
    pairs = []
    for shift in (30, 0, -10):
        a = {"score": (rng.random(200) < 0.7).astype(float)}
        b = {"score": np.roll(a["score"], 1)}
        if shift > 0:
            b["score"][np.flatnonzero(a["score"] == 1)[:shift]] = 0.0
        elif shift < 0:
            b["score"][np.flatnonzero(b["score"] == 0)[:-shift]] = 1.0
        pairs.append((a, b))
    first, dist = stats.paired_bootstrap(pairs)
    again, dist_again = stats.paired_bootstrap(pairs)
    assert first == again and np.array_equal(dist, dist_again)
    per_seed = [stats.mean_score(a) - stats.mean_score(b) for a, b in pairs]
    assert first.diff == pytest.approx(np.mean(per_seed)) and first.sd_seeds == pytest.approx(np.std(per_seed, ddof=1))
    within = [stats.paired_bootstrap([pair])[0] for pair in pairs]
    pooled_se = math.sqrt(sum((t.hi - t.lo) ** 2 for t in within)) / 3  # the three settings as if independent
    assert first.hi - first.lo > pooled_se
    cell, _ = stats.paired_bootstrap([(pairs[0][0], None)])  # b = None: the statistic itself
    assert cell.diff == pytest.approx(stats.mean_score(pairs[0][0]))


def test_normal_p_and_sample_sizes_by_hand():
    assert stats.normal_p(1.959963984540054, 1.0) == pytest.approx(0.05, abs=1e-12)
    assert stats.normal_p(1.6448536269514722, 1.0, "greater") == pytest.approx(0.05, abs=1e-12)
    assert stats.normal_p(0.0, 0.0) == 1.0 and stats.normal_p(0.1, 0.0) == 0.0
    assert stats.normal_p(-0.1, 0.0, "greater") == 1.0
    # ((1.959964 + 0.841621) * 1 / 0.1)^2 = 784.89 -> 785
    assert stats.n_to_resolve(1.0, 0.1) == 785 and stats.n_to_resolve(1.0, -0.1) == 785
    assert stats.n_to_resolve(1.0, 0.0) == math.inf and math.isnan(stats.n_to_resolve(math.nan, 0.1))
    # with t quantiles (seeds): the smallest n with (t_{.975,n-1} + t_{.8,n-1}) sd / gap <= sqrt(n)
    n = stats.n_to_resolve(0.02, 0.03, t=True)
    z = lambda k: (sps.t.ppf(0.975, k - 1) + sps.t.ppf(0.8, k - 1)) * 0.02 / 0.03  # noqa: E731
    assert z(n) <= math.sqrt(n) and z(n - 1) > math.sqrt(n - 1) and n > stats.n_to_resolve(0.02, 0.03)


def test_paired_t_matches_scipy():
    a, b = [0.80, 0.84, 0.79], [0.70, 0.78, 0.75]
    test = stats.paired_t(a, b)
    assert test.p == pytest.approx(sps.ttest_rel(a, b).pvalue, abs=1e-12) and test.test == "paired t (seeds)"
    assert math.isnan(stats.paired_t([0.8], [0.7]).p)
