"""Uncertainty and significance for comparison tables: pure functions over numpy arrays (scipy.stats inside).

Every number a table compares carries an interval, every claimed difference a paired test:

- a cell over 2+ seeds: the 95% t-interval of the seeds' values (:func:`t_interval`);
- one trial: a percentile bootstrap interval over its test examples (:func:`bootstrap_interval`,
  ``scipy.stats.bootstrap``, fixed seed), which covers test-set sampling only, not seed variance;
- two methods on the same test examples and seeds: a two-stage paired bootstrap of the difference
  (:func:`paired_bootstrap`: seeds resampled, then examples within each seed), or McNemar's exact test
  on the discordant pairs for the accuracy of one seed (:func:`mcnemar_exact`); without per-example
  records, a paired t-test over seeds (:func:`paired_t`);
- "above a baseline" (the untrained model, the majority-class predictor) is the same paired test,
  one-sided (``alternative="greater"``);
- all the tests a report makes are corrected together with Holm's step-down method (:func:`holm`);
- a gap that is not significant gets the number of test examples or seeds that would resolve it
  (:func:`n_to_resolve`).

A sample is a dict of equal-length arrays over test examples (``score``, ``weight``, ``label``,
``prediction``, ``loss``); a statistic maps a dict of arrays with the examples on the last axis to the
metric (:data:`STATISTICS`), so one definition serves the point value, the resamples and the pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # every interval is a 95% interval
ALPHA = 0.05  # every test is at 5%, after Holm's correction over the report's tests
POWER = 0.8  # sample-size estimates are for 80% power
N_RESAMPLES = 2000
SEED = 0  # bootstrap draws come from this fixed seed: reports are deterministic
_MAX_CELLS = 4_000_000  # resampled values held at once (rows x examples) in the two-stage bootstrap

Sample = dict[str, np.ndarray]
Statistic = Callable[[Sample], np.ndarray]


# ------------------------------------------------------------------------------------------ statistics
def mean_score(s: Sample) -> np.ndarray:
    """Mean of ``score`` over the last axis (accuracy from 0/1 correctness, mean per-example ROUGE-L)."""
    return np.mean(s["score"], axis=-1)


def weighted_score(s: Sample) -> np.ndarray:
    """``sum(w * score) / sum(w)`` over the last axis (personalized metrics: w = 1 / (clients * n_client))."""
    return np.sum(s["weight"] * s["score"], axis=-1) / np.sum(s["weight"], axis=-1)


def mean_loss(s: Sample) -> np.ndarray:
    """Mean of the per-example ``loss`` over the last axis (cross-entropy of a classifier)."""
    return np.mean(s["loss"], axis=-1)


def mcc(s: Sample) -> np.ndarray:
    """Matthews correlation of ``label`` and ``prediction`` over the last axis, binary or multiclass.

    Gorodkin's R_K (as scikit-learn and ``workers.task_metrics``): with ``c`` correct, ``n`` examples,
    ``t_k`` / ``p_k`` the true / predicted count of class k,
    ``(c n - sum_k p_k t_k) / sqrt((n^2 - sum_k p_k^2)(n^2 - sum_k t_k^2))``; 0 where a factor is 0
    (a constant predictor).
    """
    y, p = np.asarray(s["label"]), np.asarray(s["prediction"])
    classes = np.unique(np.concatenate([y.ravel(), p.ravel()]))
    n = float(y.shape[-1])
    t, q = _class_counts(y, classes), _class_counts(p, classes)  # (..., K)
    c = (y == p).sum(axis=-1).astype(np.float64)
    cov_yp = c * n - np.sum(t * q, axis=-1)
    denom = (n * n - np.sum(q * q, axis=-1)) * (n * n - np.sum(t * t, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, cov_yp / np.sqrt(np.where(denom > 0, denom, 1.0)), 0.0)


def _class_counts(x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per row (all axes but the last), how often each of ``classes`` occurs: shape (..., K)."""
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    codes = np.searchsorted(classes, x).reshape(rows, -1) + (np.arange(rows) * len(classes))[:, None]
    counts = np.bincount(codes.ravel(), minlength=rows * len(classes))
    return counts.reshape(*x.shape[:-1], len(classes)).astype(np.float64)


STATISTICS: dict[str, Statistic] = {"mean": mean_score, "weighted": weighted_score, "loss": mean_loss, "mcc": mcc}


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Interval:
    """A point value with its interval: ``kind`` says over what (``seeds``, ``examples``, or ``none``)."""

    value: float
    lo: float
    hi: float
    n: int
    kind: str


@dataclass(frozen=True)
class Test:
    """A paired test of ``a - b`` (signed so that positive favours ``a``).

    ``diff``: the observed difference with its percentile interval ``lo, hi`` (NaN for exact tests without
    resampling); ``p``: the p-value (uncorrected); ``test``: its name; ``n_seeds`` / ``n_examples``: the
    seeds paired and the test examples per seed; ``sd_examples``: sample sd of the per-example differences
    (centred per seed); ``sd_seeds``: sample sd of the per-seed differences (NaN for one seed).
    """

    diff: float
    lo: float
    hi: float
    p: float
    test: str
    n_seeds: int
    n_examples: int
    sd_examples: float = math.nan
    sd_seeds: float = math.nan


# ------------------------------------------------------------------------------------------ intervals
def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` (the seeds of a cell) with its t-interval: ``mean +- t_{n-1, (1+level)/2} s / sqrt(n)``.

    ``s`` is the sample standard deviation (ddof 1). Fewer than 2 values: NaN bounds (``kind="none"``);
    all values equal: a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    mean = float(np.mean(x))
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, 1, "none")
    se = float(np.std(x, ddof=1)) / math.sqrt(len(x))
    if se == 0:
        return Interval(mean, mean, mean, len(x), "seeds")
    lo, hi = sps.t.interval(level, len(x) - 1, loc=mean, scale=se)
    return Interval(mean, float(lo), float(hi), len(x), "seeds")


def bootstrap_interval(sample: Sample, statistic: Statistic = mean_score, level: float = LEVEL,
                       n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """``statistic`` of one trial's test examples with its percentile bootstrap interval over the examples.

    ``scipy.stats.bootstrap`` resamples the examples (all arrays of ``sample`` with the same indices,
    ``paired=True``) ``n_resamples`` times from ``numpy.random.default_rng(seed)``; the interval is the
    ``(1 -+ level) / 2`` percentiles of the resampled statistic (the percentile method: it stays defined
    when every resample gives the same value, e.g. 100% accuracy). It covers test-set sampling only.
    """
    keys = sorted(sample)
    arrays = [np.asarray(sample[k]) for k in keys]
    n = len(arrays[0])
    value = float(statistic(sample))
    if n < 2:
        return Interval(value, math.nan, math.nan, n, "none")

    def stat(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic({k: np.moveaxis(a, axis, -1) for k, a in zip(keys, resampled)})

    res = sps.bootstrap(arrays, stat, paired=True, vectorized=True, n_resamples=n_resamples,
                        confidence_level=level, method="percentile", rng=np.random.default_rng(seed),
                        batch=max(1, _MAX_CELLS // n))
    lo, hi = res.confidence_interval
    return Interval(value, float(lo), float(hi), n, "examples")


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The ``(1 -+ level) / 2`` quantiles of a bootstrap distribution (``numpy.quantile``, linear)."""
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------------ paired tests
def mcnemar_exact(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> tuple[float, int, int]:
    """McNemar's exact test of two classifiers' 0/1 correctness on the same examples: ``(p, n_ab, n_ba)``.

    ``n_ab``: examples ``a`` gets right and ``b`` wrong, ``n_ba`` the reverse. Under H0 (equal accuracy)
    each discordant pair is a fair coin: ``p = binomtest(n_ab, n_ab + n_ba, 1/2)`` (``scipy.stats``),
    two-sided, or one-sided ``"greater"`` (``a`` more accurate). No discordant pair: p = 1.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"mcnemar_exact needs paired scores, got shapes {x.shape} and {y.shape}")
    n_ab, n_ba = int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1)))
    if n_ab + n_ba == 0:
        return 1.0, 0, 0
    return float(sps.binomtest(n_ab, n_ab + n_ba, 0.5, alternative=alternative).pvalue), n_ab, n_ba


def is_binary(sample: Sample) -> bool:
    """Whether ``score`` holds only 0 and 1 (classification correctness)."""
    score = np.asarray(sample["score"])
    return bool(np.isin(score, (0.0, 1.0)).all())


def paired_bootstrap(pairs: Sequence[tuple[Sample, Sample | None]], statistic: Statistic = mean_score,
                     alternative: str = "two-sided", level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                     seed: int = SEED) -> tuple[Test, np.ndarray]:
    """Two-stage paired bootstrap of ``D = mean_s [T(a_s) - T(b_s)]`` over seeds ``s``; ``(test, distribution)``.

    ``pairs``: one ``(a_s, b_s)`` per seed, the two methods' samples on the same test examples, aligned
    (``b_s = None``: ``T(b_s) = 0``, which bootstraps ``mean_s T(a_s)`` itself, e.g. an average over settings).
    Each resample draws ``S`` seeds with replacement and, for each drawn seed, its ``n_s`` examples with
    replacement (the same indices for ``a`` and ``b``: paired), so the spread covers both seed variance
    and test-set sampling (``scipy.stats.bootstrap`` has no hierarchical resampling; draws come from
    ``numpy.random.default_rng(seed)`` in a fixed order, so the result is deterministic). With one seed
    this is the ordinary paired bootstrap over examples.

    Interval: percentiles of the resampled ``D*``. p-value: normal approximation with the bootstrap
    standard error ``se = sd(D*)``, ``z = D / se``, two-sided ``2 (1 - Phi(|z|))`` or ``"greater"``
    ``1 - Phi(z)``; it has no floor at ``1 / n_resamples``, so it survives Holm over hundreds of tests.
    ``se = 0`` (e.g. identical methods): p = 1 when ``D`` is 0 (or below 0 for ``"greater"``), else 0.
    """
    if not pairs:
        raise ValueError("paired_bootstrap needs at least one seed")
    rng = np.random.default_rng(seed)
    per_seed = np.array([float(statistic(a)) - _stat_or_zero(statistic, b) for a, b in pairs])
    diff = float(np.mean(per_seed))
    n_seeds = len(pairs)
    picks = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    dist = np.zeros(n_resamples)
    for slot in range(n_seeds):
        for s, (a, b) in enumerate(pairs):
            rows = np.flatnonzero(picks[:, slot] == s)
            n = len(next(iter(a.values())))
            for start in range(0, len(rows), max(1, _MAX_CELLS // n)):
                chunk = rows[start:start + max(1, _MAX_CELLS // n)]
                idx = rng.integers(0, n, size=(len(chunk), n))
                dist[chunk] += statistic(_take(a, idx)) - (0.0 if b is None else statistic(_take(b, idx)))
    dist /= n_seeds
    lo, hi = percentile_interval(dist, level)
    sd_examples = _within_seed_sd(pairs, statistic)
    test = Test(diff=diff, lo=lo, hi=hi, p=normal_p(diff, float(np.std(dist, ddof=1)), alternative),
                test="paired bootstrap", n_seeds=n_seeds, n_examples=int(np.mean([len(_first(a)) for a, _ in pairs])),
                sd_examples=sd_examples, sd_seeds=float(np.std(per_seed, ddof=1)) if n_seeds > 1 else math.nan)
    return test, dist


def combine_bootstraps(results: Sequence[tuple[Test, np.ndarray]], alternative: str = "two-sided",
                       level: float = LEVEL) -> tuple[Test, np.ndarray]:
    """The mean of several bootstrapped differences (a table's "Avg" column over its settings).

    The settings' distributions are averaged resample by resample (they were drawn from the same seed,
    i.e. the same seeds and example indices in each setting: settings that share the global test set are
    resampled jointly); interval and p-value as in :func:`paired_bootstrap`.
    """
    diff = float(np.mean([t.diff for t, _ in results]))
    dist = np.mean([d for _, d in results], axis=0)
    lo, hi = percentile_interval(dist, level)
    first = results[0][0]
    sd_seeds = [t.sd_seeds for t, _ in results]
    return Test(diff=diff, lo=lo, hi=hi, p=normal_p(diff, float(np.std(dist, ddof=1)), alternative),
                test="paired bootstrap", n_seeds=first.n_seeds, n_examples=first.n_examples,
                sd_examples=float(np.mean([t.sd_examples for t, _ in results])),
                sd_seeds=float(np.mean(sd_seeds))), dist


def paired_t(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> Test:
    """Paired t-test over seeds of per-seed values ``a_s - b_s`` (``scipy.stats.ttest_1samp`` of the differences).

    For tables without per-example records. Fewer than 2 seeds: p = NaN (no test). All differences equal
    (no spread): p = 0 when they favour the alternative, else 1. The interval is the t-interval of the mean
    difference.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    ci = t_interval(d)
    if len(d) < 2:
        return Test(ci.value, math.nan, math.nan, math.nan, "none", len(d), 0)
    if np.allclose(d, d[0], rtol=1e-9, atol=1e-12):  # no spread: the difference is certain (as in normal_p)
        p = normal_p(float(d[0]) if abs(d[0]) > 1e-12 else 0.0, 0.0, alternative)
    else:
        p = float(sps.ttest_1samp(d, 0.0, alternative=alternative).pvalue)
    return Test(ci.value, ci.lo, ci.hi, p, "paired t (seeds)", len(d), 0, sd_seeds=float(np.std(d, ddof=1)))


def normal_p(estimate: float, se: float, alternative: str = "two-sided") -> float:
    """p-value of ``estimate`` with standard error ``se`` under H0 = 0 (normal approximation).

    ``"two-sided"``: ``2 (1 - Phi(|z|))``; ``"greater"``: ``1 - Phi(z)``, ``z = estimate / se``. For ``se = 0``
    the estimate is certain: p = 0 when it lies in the alternative's direction, else 1.
    """
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"alternative={alternative!r} must be 'two-sided' or 'greater'")
    if math.isnan(estimate):
        return math.nan
    if not se > 0:
        hit = estimate != 0 if alternative == "two-sided" else estimate > 0
        return 0.0 if hit else 1.0
    z = estimate / se
    return float(2 * sps.norm.sf(abs(z)) if alternative == "two-sided" else sps.norm.sf(z))


# ------------------------------------------------------------------------------------------ corrections
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), NaNs left out of the family.

    Sorted ascending ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; a test
    is significant at level alpha when ``adj < alpha``. (``scipy.stats.false_discovery_control`` does only
    the false-discovery-rate methods.)
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if not m:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def n_to_resolve(sd: float, gap: float, alpha: float = ALPHA, power: float = POWER, t: bool = False) -> float:
    """Units (test examples per seed, or seeds) for a two-sided level-``alpha`` test to detect ``gap`` with ``power``.

    Normal approximation for a paired mean difference: ``n = ((z_{1-alpha/2} + z_{power}) sd / |gap|)^2``,
    ``sd`` the standard deviation of one unit's difference (per example, or per seed). ``t=True`` (few
    units, e.g. seeds) replaces the z quantiles with t quantiles on ``n - 1`` degrees of freedom, the
    smallest ``n >= 2`` that satisfies the equation. The multiple-comparison correction is not included
    (it raises ``n``). ``gap = 0``: infinite; ``sd = 0``: 1 (2 with ``t``).
    """
    if math.isnan(sd) or math.isnan(gap):
        return math.nan
    if gap == 0:
        return math.inf
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = max(1, math.ceil((z * sd / abs(gap)) ** 2))
    while t and (n < 2 or (sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(power, n - 1)) * sd / abs(gap) > math.sqrt(n)):
        n += 1
    return float(n)


# ------------------------------------------------------------------------------------------ helpers
def _first(sample: Sample) -> np.ndarray:
    return next(iter(sample.values()))


def _take(sample: Sample, idx: np.ndarray) -> Sample:
    return {k: np.asarray(v)[idx] for k, v in sample.items()}


def _stat_or_zero(statistic: Statistic, sample: Sample | None) -> float:
    return 0.0 if sample is None else float(statistic(sample))


def _within_seed_sd(pairs: Sequence[tuple[Sample, Sample | None]], statistic: Statistic) -> float:
    """Sample sd of the per-example terms of ``T(a) - T(b)``, centred per seed (NaN for non-mean statistics)."""
    if statistic not in (mean_score, mean_loss):
        return math.nan
    key = "loss" if statistic is mean_loss else "score"
    parts = [np.asarray(a[key], dtype=np.float64) - (0.0 if b is None else np.asarray(b[key], dtype=np.float64))
             for a, b in pairs]
    centred = np.concatenate([d - d.mean() for d in parts])
    dof = len(centred) - len(parts)
    return float(np.sqrt(np.sum(centred ** 2) / dof)) if dof > 0 else math.nan
