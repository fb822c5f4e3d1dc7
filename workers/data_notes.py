"""What a run's data looks like beyond its sizes, as counts and short text (no examples leave the worker).

- label counts of the global test set (the majority / minority-class baselines of a classification run);
- truncation by ``data.max_length``: per split, how many examples are longer and by how many tokens
  (:func:`truncation_stats`), and one sentence for the user when any is cut (:func:`truncation_note`);
- the notes the split raised (``FederatedData.notes``, e.g. a Dirichlet top-up) and any other
  ``UserWarning`` that this package raises while loading and splitting (:func:`collect_notes`).

The worker reports them in its ``data_info``; the run prints the notes once and writes them to
``summary.json`` (``data_notes``).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parent


def label_counts(examples: Sequence[Any], num_labels: int) -> list[int]:
    """Examples per class id ``0 .. num_labels - 1`` (examples without a label are not counted)."""
    counts = [0] * int(num_labels)
    for ex in examples:
        if ex.label is not None and 0 <= int(ex.label) < len(counts):
            counts[int(ex.label)] += 1
    return counts


def truncation_stats(lengths: Sequence[int], max_length: int) -> dict[str, Any]:
    """``examples``, ``cut`` (how many are longer than ``max_length``), ``max_cut`` and ``median_cut`` (tokens cut).

    The maximum and median run over the cut examples (0 when none is cut).
    """
    cuts = [n - max_length for n in lengths if n > max_length]
    return {"examples": len(lengths), "cut": len(cuts), "max_cut": max(cuts) if cuts else 0,
            "median_cut": float(statistics.median(cuts)) if cuts else 0.0}


def truncation_note(stats: dict[str, dict[str, Any]], max_length: int) -> str | None:
    """``data.max_length=48 cuts 37 of 1200 train examples (by up to 52 tokens, median 6); ...`` or ``None``."""
    parts = [f"{s['cut']} of {s['examples']} {split} examples (by up to {s['max_cut']} tokens, median "
             f"{s['median_cut']:g})" for split, s in stats.items() if s["cut"]]
    if not parts:
        return None
    return f"data.max_length={max_length} truncates " + ", ".join(parts)


def collect_notes(build: Callable[[], T]) -> tuple[T, list[str]]:
    """``build()``'s result and the messages of the ``UserWarning``s this package raised in it (each once).

    Those are kept instead of printed (every worker splits the same data, so each would print the same
    warning); any other warning (another category, or raised by a library) is re-emitted unchanged.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build()
    notes: list[str] = []
    for w in caught:
        if issubclass(w.category, UserWarning) and Path(w.filename).resolve().parent == PACKAGE_DIR:
            if str(w.message) not in notes:
                notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, notes
