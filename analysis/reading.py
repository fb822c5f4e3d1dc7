"""The report's "Reading" section: sentences that claim only what the table's tests support.

For a sweep, per column of the table (settings, then Avg):

- which cells are not results (not significantly above the untrained model or the majority-class rate);
- the best mean among the others, and which methods are not distinguishable from it (a tie is never
  announced as a lead);
- the focus method (a parameter: default the sweep's ``focus`` key, else its first variant) against each
  other method of its group: a difference is stated only where it is significant at 5% after Holm's
  correction; otherwise the pair is "not distinguishable at this budget", with the number of test
  examples (per seed) or seeds that would resolve the observed gap (:func:`analysis.stats.n_to_resolve`).

For one run: the final and best values, the untrained model and the majority rate, communication, noise.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.evidence import Evidence
from analysis.values import AVG, MAJORITY, UNTRAINED, higher_is_better, is_percent


def focus_method(sweep_config: dict[str, Any], labels: list[str], requested: str | None = None) -> str | None:
    """The method the Reading compares against the others.

    ``requested`` (``--focus``) first, then the sweep's ``focus`` key, then its first variant's label, else the
    first of ``labels`` (the trials in sweep order). None when there is nothing to compare.
    """
    spec = sweep_config.get("spec") if isinstance(sweep_config.get("spec"), dict) else sweep_config
    variants = (spec.get("axes") or {}).get("variants") or []
    for candidate in (requested, spec.get("focus"), variants[0].get("label") if variants else None):
        if candidate:
            return str(candidate)
    return labels[0] if labels else None


def sweep_reading(ev: Evidence, focus: str | None) -> list[str]:
    """Bullet lines for a sweep's table (see the module docstring)."""
    cells = ev.cells
    if not len(cells) or not (cells["kind"] == "method").any():
        return ["- Nothing to compare yet."]
    fmt = _Numbers(ev.metric)
    lines = []
    for col in ev.column_values:
        here = cells[(cells["column"] == col) & (cells["kind"] == "method") & cells["mean"].notna()]
        where = "On average over the settings" if col == AVG else f"In {col}"
        lines.append(f"- {where}: {_leaders(ev, here, col, fmt)}")
        lines += [f"  - {text}" for text in _not_results(here, fmt)]
        if focus is not None:
            lines += [f"  - {text}" for text in _focus_lines(ev, here, col, focus, fmt)]
    if focus is not None and not (cells["method"] == focus).any():
        lines.append(f"- The focus method {focus!r} is not in the table; rows: "
                     f"{', '.join(dict.fromkeys(cells.loc[cells['kind'] == 'method', 'row']))}.")
    if ev.excluded:
        states = pd.Series(list(ev.excluded.values())).value_counts()
        counts = ", ".join(f"{v} {k}" for k, v in states.items())
        lines.append(f"- Not in the table: {len(ev.excluded)} trials ({counts}).")
    return lines


def _leaders(ev: Evidence, here: pd.DataFrame, col: Any, fmt: _Numbers) -> str:
    ranked = here[here["ranked"].astype(bool)]
    if len(here) < 2:
        return (f"one method ({here['row'].iloc[0]}, {fmt.cell(here.iloc[0])}); nothing to rank." if len(here)
                else "no values.")
    if not len(ranked):
        return "no method is significantly above the baselines, so none is ranked."
    best = ranked[ranked["mark"] == "best"]
    ties = ranked[ranked["mark"] == "tie"]
    head = f"{_join(best['row'])} {'share' if len(best) > 1 else 'has'} the best mean ({fmt.cell(best.iloc[0])})"
    if len(ranked) == len(best):
        return head + (", the only method significantly above the baselines." if len(best) == 1 else ".")
    if len(ties):
        return (head + f"; {_join(ties['row'])} {'is' if len(ties) == 1 else 'are'} not distinguishable from it at "
                "this budget (†), so no single method leads.")
    return head + ", significantly ahead of every other ranked method (Holm-corrected, 5%)."


def _not_results(here: pd.DataFrame, fmt: _Numbers) -> list[str]:
    out = []
    for _, cell in here[~here["ranked"].astype(bool)].iterrows():
        status = str(cell["status"])
        why = ("could not be tested against its baselines (one seed and no per-example records)"
               if status.startswith("untested") else f"is not significantly above {_baseline_words(status)}")
        out.append(f"{cell['row']} ({fmt.cell(cell)}) {why}: not a result.")
    return out


def _focus_lines(ev: Evidence, here: pd.DataFrame, col: Any, focus: str, fmt: _Numbers) -> list[str]:
    mine = here[here["method"] == focus]
    out = []
    for _, f in mine.iterrows():
        others = here[(here["group"] == f["group"]) & (here["row"] != f["row"])]
        if not f["ranked"]:
            if len(others):
                out.append(f"{f['row']} is not compared with the other methods here: it is not a result.")
            continue
        for _, o in others[others["ranked"].astype(bool)].iterrows():
            out.append(_pair_sentence(ev, col, f["row"], o["row"], fmt))
    return out


def _pair_sentence(ev: Evidence, col: Any, a: str, b: str, fmt: _Numbers) -> str:
    t = ev.pair(col, a, b)
    if t is None or math.isnan(t["p"]):
        return f"{a} vs {b}: no paired test was possible (one seed and no per-example records)."
    gap = fmt.diff(t["diff"], t["lo"], t["hi"])
    p = f"{format_p(t['p_holm'])} after Holm, {t['test']}"
    if t["significant"]:
        better = (t["diff"] > 0) == higher_is_better(ev.metric)
        return f"{a} is {'better' if better else 'worse'} than {b}: {gap} ({p})."
    return f"{a} and {b} are not distinguishable at this budget: {gap} ({p}){_needed(t)}."


def _needed(t: dict[str, Any]) -> str:
    """How many test examples (per seed) or seeds would resolve the observed gap (5%, 80% power)."""
    parts = []
    if not math.isnan(t["examples_needed"]) and math.isfinite(t["examples_needed"]):
        parts.append(f"about {int(t['examples_needed']):,} test examples per seed (now {int(t['n_examples']):,})")
    if not math.isnan(t["seeds_needed"]) and math.isfinite(t["seeds_needed"]):
        parts.append(f"about {int(t['seeds_needed'])} seeds (now {int(t['n_seeds'])})")
    if not parts:
        return "; no gap to resolve" if t["diff"] == 0 else ""
    return "; resolving a gap this size (5%, 80% power) would take " + " or ".join(parts)


def format_p(p: float) -> str:
    """``p = 0.012`` (3 significant digits), ``p < 0.001`` below that."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def _baseline_words(status: str) -> str:
    words = {"≈ untrained": "the untrained model", "≈ majority": "the majority-class rate"}
    names = [words[s.strip()] for s in status.split(",") if s.strip() in words]
    if names:
        return " or ".join(names)
    count = status.removeprefix("≈ baseline in ").split("/")  # an Avg cell: "≈ baseline in 1/2"
    return f"its baselines in {count[0]} of {count[1]} settings" if len(count) == 2 else "its baselines"


def _join(names: Any) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class _Numbers:
    """Numbers as the table shows them (percent points for fraction metrics)."""

    def __init__(self, metric: str) -> None:
        self.scale = 100.0 if is_percent(metric) else 1.0
        self.unit = " points" if self.scale == 100.0 else ""

    def cell(self, cell: pd.Series) -> str:
        text = f"{cell['mean'] * self.scale:.2f}"
        if not (math.isnan(cell["lo"]) or math.isnan(cell["hi"])):
            text += f" [{cell['lo'] * self.scale:.2f}, {cell['hi'] * self.scale:.2f}]"
        return text

    def diff(self, d: float, lo: float, hi: float) -> str:
        text = f"{self.signed(d)}{self.unit}"
        if not (math.isnan(lo) or math.isnan(hi)):
            text += f", 95% CI [{self.signed(lo)}, {self.signed(hi)}]"
        return text

    def signed(self, value: float) -> str:
        """``+1.25`` / ``-0.50`` / ``+0.00`` (never ``-0.00``)."""
        return f"{round(value * self.scale, 2) + 0.0:+.2f}"


# ------------------------------------------------------------------------------------------ one run
def run_reading(ev: Evidence, rounds: pd.DataFrame) -> list[str]:
    """Bullet lines for one run: final and best (after round 0), the baselines, communication, noise."""
    metric = ev.metric
    fmt = _Numbers(metric)
    evaluated = rounds.dropna(subset=[metric]).sort_values("round") if metric in rounds else rounds.iloc[0:0]
    trained = evaluated[evaluated["round"] > 0]
    if not len(trained):
        return ["- No evaluated round after training yet."]
    last = trained.iloc[-1]
    best = trained.loc[trained[metric].idxmax() if higher_is_better(metric) else trained[metric].idxmin()]
    method = ev.cells[ev.cells["kind"] == "method"]
    interval = fmt.cell(method.iloc[0]).partition(" ")[2] if len(method) else ""
    interval = f" {interval}" if interval else ""
    lines = [f"- Final {metric} {last[metric] * fmt.scale:.2f}{interval} at round {int(last['round'])}; best "
             f"{best[metric] * fmt.scale:.2f} at round {int(best['round'])} ({len(trained)} evaluated rounds "
             "after training)."]
    for row, words in ((UNTRAINED, "the untrained model (round 0)"), (MAJORITY, "the majority-class rate")):
        base = ev.cells[ev.cells["row"] == row]
        if len(base):
            lines.append(f"- Against {words}: {fmt.cell(base.iloc[0])}.")
    if len(method) and method.iloc[0]["status"]:
        lines.append(f"- The final value is not significantly above {_baseline_words(method.iloc[0]['status'])}: "
                     "not a result.")
    if "bytes_down" in rounds and "bytes_up" in rounds:
        lines.append(f"- Communication: {format_bytes(rounds['bytes_down'].sum())} down, "
                     f"{format_bytes(rounds['bytes_up'].sum())} up in total.")
    for col in ("init_noise_param", "agg_noise"):
        if col in rounds and rounds[col].notna().any():
            lines.append(f"- Mean `{col}` per round: {rounds[col].mean():.4g}.")
    return lines


def format_bytes(value: Any) -> str:
    """``1.23 MB``-style size (``?`` when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    value = float(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"
