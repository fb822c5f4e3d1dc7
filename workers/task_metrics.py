"""Task metrics as pure functions of predictions and references, and which metrics a task reports.

- classification: ``accuracy``; GLUE CoLA also reports ``mcc`` (Matthews correlation, its GLUE metric).
- causal LM: ``rouge_l`` (ROUGE-L F-measure, the Super-NaturalInstructions convention: ``rouge_score``
  with the Porter stemmer, the best score over a prediction's references, averaged over examples).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from workers.data_config import DataConfig


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to their label."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def matthews_corrcoef(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient, binary or multiclass.

    Gorodkin (2004)'s R_K, as in scikit-learn:
    ``(c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))`` with ``c`` correct, ``s``
    total, ``p_k`` / ``t_k`` predicted / true counts of class k; for two classes this is
    ``(TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``. Returns 0.0 when the denominator is 0
    (all predictions or all labels one class).
    """
    p, y = _pair(preds, labels)
    classes, inverse = np.unique(np.concatenate([p, y]), return_inverse=True)
    p_counts = np.bincount(inverse[: len(p)], minlength=len(classes)).astype(np.float64)
    t_counts = np.bincount(inverse[len(p):], minlength=len(classes)).astype(np.float64)
    s, c = float(len(p)), float(np.sum(p == y))
    cov_py = c * s - float(p_counts @ t_counts)
    cov_pp = s * s - float(p_counts @ p_counts)
    cov_yy = s * s - float(t_counts @ t_counts)
    if cov_pp == 0 or cov_yy == 0:
        return 0.0
    return cov_py / float(np.sqrt(cov_pp * cov_yy))


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Mean ROUGE-L F-measure in [0, 1]; a reference may be a list of acceptable answers (best one counts).

    Uses ``rouge_score``'s default tokenizer (lower-cased, non-ASCII-alphanumeric characters dropped), so
    a non-ASCII-only text scores 0.
    """
    if not predictions and not references:
        raise ValueError("rouge_l of no predictions is undefined")
    return float(np.mean(rouge_l_scores(predictions, references)))


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[float]:
    """Per-example ROUGE-L F-measure (the best over each prediction's references); see :func:`rouge_l`."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = _rouge_scorer()
    scores = []
    for pred, refs in zip(predictions, references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        scores.append(max(scorer.score(ref, pred)["rougeL"].fmeasure for ref in refs) if refs else 0.0)
    return scores


METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "mcc": matthews_corrcoef,
    "rouge_l": rouge_l,
}


def metric_names_for(cfg: DataConfig) -> tuple[str, ...]:
    """The metrics a task reports: classification -> accuracy (+ mcc for GLUE CoLA); causal LM -> rouge_l."""
    if cfg.task == "causal_lm":
        return ("rouge_l",)
    if cfg.dataset == "glue" and cfg.glue_task == "cola":
        return ("accuracy", "mcc")
    return ("accuracy",)


def compute_metrics(names: Sequence[str], predictions: Sequence, references: Sequence) -> dict[str, float]:
    """``{name: METRICS[name](predictions, references)}`` for each name."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS)}")
    return {n: METRICS[n](predictions, references) for n in names}


def _pair(preds: Sequence[int], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(preds).reshape(-1), np.asarray(labels).reshape(-1)
    if len(p) != len(y):
        raise ValueError(f"{len(p)} predictions but {len(y)} labels")
    if len(p) == 0:
        raise ValueError("a metric of no predictions is undefined")
    return p, y
