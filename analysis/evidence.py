"""What a comparison table may claim: per-cell intervals, tests against the baselines, paired comparisons.

Notebook use::

    from analysis import load_sweep, assess

    sweep = load_sweep("results/quick")
    ev = assess(sweep, metric="accuracy")     # or assess(results, examples=..., baselines=...)
    ev.cells    # one row per (row, column): mean, lo, hi, n (seeds), interval, status, rank, mark, ...
    ev.tests    # every test the table makes: kind, column, a, b, diff, lo, hi, p, p_holm, significant, ...

The rules (numbers from :mod:`analysis.stats`):

- A cell is the mean over its trials (seeds) of each trial's ``final`` or ``best`` value (after round 0).
  Its 95% interval is the t-interval over the seeds when there are 2 or more (cut to the metric's range:
  [0, 1] for accuracy, [-1, 1] for MCC); for one trial, the percentile bootstrap over its test examples
  (test-set sampling only, not seed variance); without per-example records and with one seed, none.
  "Avg" (several columns) is the mean of the row's column means; its interval comes from the per-seed
  averages (2+ seeds) or the settings' bootstraps averaged (one seed).
- Baseline rows: "Untrained" (each trial's round 0, the model before training; mean over seeds) and, for
  accuracy and MCC, "Majority class" (the test set's majority-class rate; the constant predictor's MCC is 0).
- Tests: each method cell against each baseline it has (one-sided "better than", paired on the trial's own
  test examples: its round-0 records, and the majority-class predictor's 0/1 correctness), and every
  pair of method rows in each column, Avg included (two-sided). The test is McNemar's exact test for the
  accuracy of one seed, the two-stage paired bootstrap over seeds and examples where per-example records
  exist, a paired t-test over seeds without records (2+ seeds), none otherwise. Holm's correction runs
  over all the table's tests; significant means ``p_holm < 0.05``.
- A method cell not significantly better than a baseline has ``status`` "≈ untrained" / "≈ majority"
  ("untested" when no test was possible) and is never ranked. Among the ranked cells of a column the best
  mean gets ``mark`` "best"; a ranked cell not significantly worse than it gets "tie" (a dagger in tables).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis import stats
from analysis.load import is_missing
from analysis.values import (
    AVG,
    BASELINE_ROWS,
    MAJORITY,
    UNTRAINED,
    clip_to_range,
    column_order_key,
    higher_is_better,
    row_order_key,
    table_frame,
    trial_values,
    untrained_values,
)

# metric -> (scope of the example records, statistic, the record columns it reads)
SOURCES = {"accuracy": ("global", "mean", ("score",)), "rouge_l": ("global", "mean", ("score",)),
           "mcc": ("global", "mcc", ("label", "prediction")), "eval_loss": ("global", "loss", ("loss",)),
           "personal_accuracy": ("personal", "weighted", ("score", "weight")),
           "personal_rouge_l": ("personal", "weighted", ("score", "weight"))}
MAJORITY_METRICS = ("accuracy", "mcc")
CELL_COLUMNS = ("row", "column", "method", "group", "kind", "mean", "lo", "hi", "std", "min", "max", "n", "interval",
                "test_examples", "status", "ranked", "mark", "p_untrained", "p_majority", "final", "best")
TEST_COLUMNS = ("kind", "column", "a", "b", "diff", "lo", "hi", "p", "p_holm", "significant", "test", "n_seeds",
                "n_examples", "examples_needed", "seeds_needed")


@dataclass
class Evidence:
    """The cells and tests of one table (see the module docstring); ``notes``: caveats to print with it."""

    metric: str
    stat: str
    rows: str
    columns: str
    cells: pd.DataFrame
    tests: pd.DataFrame
    excluded: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_trials: int = 0

    @property
    def column_values(self) -> list:
        """The table's columns in display order (Avg last)."""
        return list(dict.fromkeys(self.cells["column"])) if len(self.cells) else []

    def pair(self, column: Any, a: str, b: str) -> dict[str, Any] | None:
        """The test of rows ``a`` and ``b`` in ``column``, oriented as ``a - b`` (None if not made)."""
        t = self.tests
        if not len(t):
            return None
        hit = t[(t["kind"] == "pair") & (t["column"] == column) & (((t["a"] == a) & (t["b"] == b))
                                                                   | ((t["a"] == b) & (t["b"] == a)))]
        if not len(hit):
            return None
        row = hit.iloc[0].to_dict()
        if row["a"] != a:
            row.update(a=a, b=b, diff=-row["diff"], lo=-row["hi"], hi=-row["lo"])
        return row


@dataclass
class _Record:
    """One trial's per-example records at one round (sorted by client, example)."""

    keys: np.ndarray
    labels: np.ndarray
    sample: stats.Sample

    def aligned(self, other: _Record | None) -> bool:
        """Whether ``other`` holds the same test examples with the same labels (a paired comparison)."""
        if other is None:
            return False
        return np.array_equal(self.keys, other.keys) and np.array_equal(self.labels, other.labels)


@dataclass
class _Trial:
    trial_id: str
    row: str
    column: Any
    method: str
    group: str
    seed: Any
    value: float
    record: _Record | None = None
    base: dict[str, tuple[float, _Record | None]] = field(default_factory=dict)  # baseline -> (value, record)


# ------------------------------------------------------------------------------------------ entry point
def assess(data: Any, metric: str = "accuracy", stat: str = "final", rows: str | list[str] = "label",
           columns: str | list[str] = "setting", include_running: bool = False, examples: pd.DataFrame | None = None,
           baselines: pd.DataFrame | None = None, tests: bool = True, n_resamples: int = stats.N_RESAMPLES,
           seed: int = stats.SEED) -> Evidence:
    """The :class:`Evidence` of a table of ``metric`` (rows x columns; see :func:`analysis.comparison_table`).

    ``data``: a results frame (one row per trial x round), or a loaded sweep / run, whose per-example
    records (only the rounds needed are read) and baselines are used unless ``examples`` / ``baselines``
    are given. ``tests=False``: intervals only (no tests, statuses or marks). Bootstraps draw
    ``n_resamples`` resamples from ``seed``.
    """
    results = data.results if hasattr(data, "results") else data.as_results() if hasattr(data, "as_results") else data
    frame, rows, columns, excluded = table_frame(results, rows, columns, include_running)
    vals = trial_values(frame, metric, stat, by=(rows, columns, "method", "group"))
    if baselines is None and hasattr(data, "baselines"):
        baselines = data.baselines
    baselines = baselines if baselines is not None and len(baselines) else pd.DataFrame({"trial_id": []})
    if examples is None and hasattr(data, "load_examples"):
        examples = data.load_examples(needed_rounds(results, [metric]))
    elif examples is None and hasattr(data, "examples"):  # one run: its trial id is its folder's name
        examples = data.examples.assign(trial_id=data.path.name)
    builder = _Builder(metric, n_resamples, seed, tests)
    trials = builder.trials(vals, frame, (rows, columns), examples, baselines)
    cells, tests = builder.table(trials, sorted(vals[columns].dropna().unique(), key=column_order_key))
    cells, tests = _finish(cells, tests, metric, frame, rows, columns, builder.tests)
    return Evidence(metric=metric, stat=stat, rows=rows, columns=columns, cells=cells, tests=tests,
                    excluded=excluded, notes=builder.notes, n_trials=int(vals["trial_id"].nunique()))


def needed_rounds(results: pd.DataFrame, metrics: list[str]) -> dict[str, set[int]]:
    """``{trial_id: rounds}`` whose example records the tables of ``metrics`` read: 0, final and best."""
    out: dict[str, set[int]] = {}
    for metric in metrics:
        if metric not in results.columns:
            continue
        for stat in ("final", "best"):
            vals = trial_values(results, metric, stat, by=())
            for trial_id, rnd in zip(vals["trial_id"], vals["round"]):
                out.setdefault(str(trial_id), {0}).add(int(rnd))
    return out


# ------------------------------------------------------------------------------------------ building
class _Builder:
    """Collects the trials' values and records, then the cells and the tests of one table."""

    def __init__(self, metric: str, n_resamples: int, seed: int, tests: bool = True) -> None:
        self.metric, self.tests = metric, tests
        self.higher = higher_is_better(metric)
        scope, name, self.fields = SOURCES.get(metric, (None, None, ()))
        self.scope = scope
        self.statistic = stats.STATISTICS[name] if name else None
        self.boot = {"n_resamples": n_resamples, "seed": seed}
        self.notes: list[str] = []
        self.boots: dict[tuple, tuple[stats.Test, np.ndarray]] = {}  # (column, a, b) -> bootstrap of a - b

    # ------------------------------------------------------------------ inputs
    def trials(self, vals: pd.DataFrame, frame: pd.DataFrame, keys: tuple[str, str], examples: pd.DataFrame | None,
               baselines: pd.DataFrame) -> list[_Trial]:
        """One :class:`_Trial` per row of ``vals`` (``keys``: its row and column names) with records and baselines."""
        records = self._records(examples)
        untrained = untrained_values(frame, self.metric)
        base = baselines.set_index("trial_id") if "trial_id" in baselines.columns else pd.DataFrame()
        out = []
        rows, columns = keys
        for r in vals.to_dict("records"):
            tid = str(r["trial_id"])
            seed = r.get("seed")
            seed = f"trial {tid}" if is_missing(seed) else seed  # without seeds, trials pair with nothing
            t = _Trial(tid, str(r[rows]), r[columns], str(r["method"]), str(r["group"] or ""), seed,
                       float(r["value"]), records.get((tid, int(r["round"]))))
            value0 = untrained.get(tid, _base_value(base, tid, f"untrained_{self.metric}"))
            rec0 = records.get((tid, 0))
            if not math.isnan(value0) or rec0 is not None:
                t.base[UNTRAINED] = (value0 if not math.isnan(value0) else float(self.statistic(rec0.sample)), rec0)
            majority = self._majority(base, tid, t.record)
            if majority is not None:
                t.base[MAJORITY] = majority
            out.append(t)
        if examples is not None and len(examples) and self.statistic is None:
            self.notes.append(f"`{self.metric}` has no per-example statistic: intervals and tests use seeds only.")
        return out

    def _records(self, examples: pd.DataFrame | None) -> dict[tuple[str, int], _Record]:
        if examples is None or not len(examples) or self.statistic is None:
            return {}
        ex = examples[examples["scope"] == self.scope] if "scope" in examples.columns else examples
        out = {}
        for (tid, rnd), g in ex.groupby(["trial_id", "round"], sort=False):
            g = g.sort_values(["client", "example"])
            if self.metric == "eval_loss" and (g["prediction"] < 0).all():
                continue  # a causal LM's eval_loss is token-weighted: not a mean of per-example losses
            sample = {k: g[k].to_numpy(dtype=np.float64) for k in self.fields if k != "weight"}
            if "weight" in self.fields:
                sizes = g.groupby("client")["example"].transform("size").to_numpy(dtype=np.float64)
                sample["weight"] = 1.0 / (sizes * g["client"].nunique())
            keys = g["client"].to_numpy(dtype=np.int64) * (1 << 32) + g["example"].to_numpy(dtype=np.int64)
            out[(str(tid), int(rnd))] = _Record(keys, g["label"].to_numpy(dtype=np.int64), sample)
        return out

    def _majority(self, base: pd.DataFrame, tid: str, record: _Record | None) -> tuple[float, _Record | None] | None:
        if self.metric not in MAJORITY_METRICS:
            return None
        rate, cls = _base_value(base, tid, "majority_rate"), _base_value(base, tid, "majority_class")
        if math.isnan(rate):
            return None
        value = rate if self.metric == "accuracy" else 0.0
        if record is None or math.isnan(cls):
            return value, None
        labels = record.labels
        sample = {"score": (labels == int(cls)).astype(np.float64), "label": labels.astype(np.float64),
                  "prediction": np.full(len(labels), float(cls))}
        return value, _Record(record.keys, labels, {k: sample[k] for k in self.fields})

    # ------------------------------------------------------------------ cells and tests
    def table(self, trials: list[_Trial], columns: list) -> tuple[list[dict], list[dict]]:
        cells, tests = [], []
        methods = sorted({(t.row, t.method, t.group) for t in trials}, key=lambda x: row_order_key(x[0]))
        for col in columns:
            here = [t for t in trials if t.column == col]
            for kind in BASELINE_ROWS:
                cell = self._baseline_cell(kind, col, here)
                if cell is not None:
                    cells.append(cell)
            for row, method, group in methods:
                mine = [t for t in here if t.row == row]
                if mine:
                    cells.append(self._cell(row, col, method, group, mine))
                    tests += [self._vs_baseline(row, col, mine, kind) for kind in BASELINE_ROWS
                              if any(kind in t.base for t in mine) and self.tests]
            present = [m for m in methods if any(t.row == m[0] for t in here)] if self.tests else []
            for i, (a, *_) in enumerate(present):
                for b, *_ in present[i + 1:]:
                    tests.append(self._pair(col, a, b, [t for t in here if t.row == a],
                                            [t for t in here if t.row == b]))
        if len(columns) > 1:
            cells += self._average_cells(cells, trials, columns, methods)
            present = [m[0] for m in methods] if self.tests else []
            tests += [self._average_pair(a, b, trials, columns) for i, a in enumerate(present) for b in present[i + 1:]]
        return cells, [t for t in tests if t is not None]

    def _cell(self, row: str, col: Any, method: str, group: str, mine: list[_Trial]) -> dict[str, Any]:
        values = [t.value for t in mine]
        record = mine[0].record if len(mine) == 1 else None
        return {"row": row, "column": col, "method": method, "group": group, "kind": "method",
                **self._interval(values, record), **_spread(values), "test_examples": _size(mine[0].record)}

    def _interval(self, values: list[float], record: _Record | None) -> dict[str, Any]:
        if len(values) >= 2 or record is None:
            iv = stats.t_interval(values)
        else:
            iv = replace(stats.bootstrap_interval(record.sample, self.statistic, **self.boot), value=values[0])
        return {"mean": float(np.mean(values)), **self._clip(iv.lo, iv.hi), "n": len(values), "interval": iv.kind}

    def _clip(self, lo: float, hi: float) -> dict[str, float]:
        """A t-interval of a bounded metric is cut to its range (accuracy [0, 1], MCC [-1, 1])."""
        return {"lo": float(clip_to_range(self.metric, lo)), "hi": float(clip_to_range(self.metric, hi))}

    def _baseline_cell(self, kind: str, col: Any, here: list[_Trial]) -> dict[str, Any] | None:
        by_seed: dict[Any, list[tuple[float, _Record | None]]] = {}
        for t in here:
            if kind in t.base:
                by_seed.setdefault(t.seed, []).append(t.base[kind])
        if not by_seed:
            return None
        values = [float(np.mean([v for v, _ in pairs])) for pairs in by_seed.values()]
        if kind == UNTRAINED and any(len({round(v, 12) for v, _ in p}) > 1 for p in by_seed.values()):
            self._note(f"The untrained models of one seed differ across methods in {col}: the Untrained row "
                       "is their mean; each method is tested against its own round 0.")
        first = next(iter(by_seed.values()))[0][1]
        cell = {"row": kind, "column": col, "method": kind, "group": "", "kind": "baseline", **_spread(values),
                "test_examples": _size(first)}
        if kind == MAJORITY:
            return {**cell, "mean": float(np.mean(values)), "lo": math.nan, "hi": math.nan, "n": len(values),
                    "interval": "reference"}
        return {**cell, **self._interval(values, first if len(values) == 1 else None)}

    def _vs_baseline(self, row: str, col: Any, mine: list[_Trial], kind: str) -> dict[str, Any]:
        """One-sided test that the cell beats baseline ``kind`` (each trial against its own baseline)."""
        have = [t for t in mine if kind in t.base]
        pairs = [(t.record, t.base[kind][1]) for t in have]
        values = [(t.value, t.base[kind][0]) for t in have]
        test = self._compare(pairs, values, "greater", orient=True)
        return {"kind": "baseline", "column": col, "a": row, "b": kind, **test}

    def _pair(self, col: Any, a: str, b: str, ta: list[_Trial], tb: list[_Trial]) -> dict[str, Any]:
        by_seed = {t.seed: t for t in tb}
        matched = [(x, by_seed[x.seed]) for x in ta if x.seed in by_seed]
        if len(matched) < max(len(ta), len(tb)):
            self._note(f"{a} and {b} in {col} do not share all seeds: they are compared on the shared ones.")
        pairs = [(x.record, y.record) for x, y in matched]
        test = self._compare(pairs, [(x.value, y.value) for x, y in matched], "two-sided", key=(col, a, b))
        return {"kind": "pair", "column": col, "a": a, "b": b, **test}

    def _compare(self, pairs: list[tuple[_Record | None, _Record | None]], values: list[tuple[float, float]],
                 alternative: str, orient: bool = False, key: tuple | None = None) -> dict[str, Any]:
        """The paired test of ``a - b`` (``orient``: signed so that positive is better, for losses too)."""
        sign = -1.0 if orient and not self.higher else 1.0
        if pairs and all(x is not None and x.aligned(y) for x, y in pairs):
            samples = [(x.sample, y.sample) if sign > 0 else (y.sample, x.sample) for x, y in pairs]
            test, dist = stats.paired_bootstrap(samples, self.statistic, alternative, **self.boot)
            if key is not None:
                self.boots[key] = (test, dist)
            if self.metric == "accuracy" and len(samples) == 1 and all(map(stats.is_binary, samples[0])):
                p, _, _ = stats.mcnemar_exact(samples[0][0]["score"], samples[0][1]["score"], alternative)
                test = replace(test, p=p, test="McNemar exact")
        else:
            va, vb = zip(*values) if values else ((), ())
            test = stats.paired_t(va, vb, alternative) if sign > 0 else stats.paired_t(vb, va, alternative)
        return _test_fields(test)

    # ------------------------------------------------------------------ the Avg column
    def _average_cells(self, cells: list[dict], trials: list[_Trial], columns: list, methods: list) -> list[dict]:
        frame = pd.DataFrame(cells)
        out = []
        for row in list(BASELINE_ROWS) + [m[0] for m in methods]:
            sub = frame[frame["row"] == row].set_index("column").reindex(columns)
            if sub["mean"].isna().all():
                continue
            first = sub.dropna(subset=["kind"]).iloc[0]
            cell = {"row": row, "column": AVG, "method": first["method"], "group": first["group"],
                    "kind": first["kind"], "mean": float(sub["mean"].mean(skipna=False)), "lo": math.nan,
                    "hi": math.nan, "n": 0, "interval": "none", "test_examples": math.nan}
            cell.update(self._average_interval(row, trials, columns, sub))
            out.append(cell)
        return out

    def _average_interval(self, row: str, trials: list[_Trial], columns: list, sub: pd.DataFrame) -> dict[str, Any]:
        if row == MAJORITY or sub["mean"].isna().any():
            return {"interval": "reference" if row == MAJORITY else "none"}
        per_seed = self._per_seed(row, trials, columns)
        if len(per_seed) >= 2:
            iv = stats.t_interval(list(per_seed.values()))
            return {**self._clip(iv.lo, iv.hi), "n": iv.n, "interval": iv.kind, **_spread(list(per_seed.values()))}
        records = [self._records_of(row, trials, col) for col in columns]
        if all(r is not None and len(r) == 1 for r in records):
            boots = [stats.paired_bootstrap([(r[0].sample, None)], self.statistic, **self.boot) for r in records]
            _, dist = stats.combine_bootstraps(boots)
            lo, hi = stats.percentile_interval(dist)
            return {"lo": lo, "hi": hi, "n": 1, "interval": "examples"}
        return {"n": len(per_seed)}

    def _average_pair(self, a: str, b: str, trials: list[_Trial], columns: list) -> dict[str, Any]:
        """``a - b`` averaged over the columns: the settings' bootstraps combined, else a t-test over seeds."""
        boots = [self.boots.get((col, a, b)) for col in columns]
        if all(x is not None for x in boots):
            test, _ = stats.combine_bootstraps(boots)
        else:
            sa, sb = self._per_seed(a, trials, columns), self._per_seed(b, trials, columns)
            common = [s for s in sa if s in sb]
            test = stats.paired_t([sa[s] for s in common], [sb[s] for s in common])
        return {"kind": "pair", "column": AVG, "a": a, "b": b, **_test_fields(test)}

    def _per_seed(self, row: str, trials: list[_Trial], columns: list) -> dict[Any, float]:
        """``{seed: mean over the columns}`` for the seeds ``row`` has in every column."""
        table: dict[Any, dict[Any, float]] = {}
        for t in trials:
            if t.row == row or (row in BASELINE_ROWS and row in t.base):
                value = t.value if t.row == row else t.base[row][0]
                table.setdefault(t.seed, {}).setdefault(t.column, value)
        return {s: float(np.mean([v[c] for c in columns])) for s, v in table.items() if all(c in v for c in columns)}

    def _records_of(self, row: str, trials: list[_Trial], col: Any) -> list[_Record] | None:
        mine = [t for t in trials if t.column == col and (t.row == row or row in t.base)]
        if row in BASELINE_ROWS:
            mine = list({t.seed: t for t in mine}.values())
            records = [t.base[row][1] for t in mine]
        else:
            records = [t.record for t in mine]
        return records if records and all(r is not None for r in records) else None

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# ------------------------------------------------------------------------------------------ statuses, marks
def _finish(cells: list[dict], tests: list[dict], metric: str, frame: pd.DataFrame, rows: str, columns: str,
            judged: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Holm over the tests, then each cell's status (vs baselines), rank mark, and final/best means."""
    test_frame = pd.DataFrame(tests)
    if len(test_frame):
        test_frame["p_holm"] = stats.holm(test_frame["p"].to_numpy(dtype=float))
        test_frame["significant"] = test_frame["p_holm"] < stats.ALPHA
        test_frame["examples_needed"] = [stats.n_to_resolve(sd, d) for sd, d in
                                         zip(test_frame["sd_examples"], test_frame["diff"])]
        test_frame["seeds_needed"] = [stats.n_to_resolve(sd, d, t=True) for sd, d in
                                      zip(test_frame["sd_seeds"], test_frame["diff"])]
    test_frame = test_frame.reindex(columns=list(TEST_COLUMNS))
    cell_frame = pd.DataFrame(cells).reindex(columns=list(CELL_COLUMNS))
    if len(cell_frame):
        cell_frame["status"] = cell_frame["kind"].map({"baseline": "baseline"}).fillna("")
        cell_frame["ranked"], cell_frame["mark"] = False, ""
        if judged:
            _statuses(cell_frame, test_frame)
            _marks(cell_frame, test_frame, higher_is_better(metric))
        _final_and_best(cell_frame, frame, metric, rows, columns)
        key = cell_frame.apply(lambda r: ((99,) if r["column"] == AVG else column_order_key(r["column"]),
                                          row_order_key(r["row"])), axis=1)
        cell_frame = cell_frame.iloc[sorted(range(len(cell_frame)), key=lambda i: key.iat[i])].reset_index(drop=True)
    return cell_frame, test_frame


def _statuses(cells: pd.DataFrame, tests: pd.DataFrame) -> None:
    """``status``, ``ranked``, ``p_untrained``, ``p_majority`` of every cell (in place)."""
    base = tests[tests["kind"] == "baseline"]
    for i, cell in cells.iterrows():
        if cell["kind"] != "method" or cell["column"] == AVG:
            continue
        failed = []
        for _, t in base[(base["a"] == cell["row"]) & (base["column"] == cell["column"])].iterrows():
            cells.at[i, "p_untrained" if t["b"] == UNTRAINED else "p_majority"] = t["p_holm"]
            if math.isnan(t["p"]):
                failed.append("untested")
            elif not t["significant"]:
                failed.append("≈ " + ("untrained" if t["b"] == UNTRAINED else "majority"))
        cells.at[i, "status"] = ", ".join(sorted(set(failed), key=lambda x: x.startswith("untested")))
        cells.at[i, "ranked"] = not failed
    settings = cells[(cells["column"] != AVG) & (cells["kind"] == "method")]
    n_columns = settings["column"].nunique()
    for i in cells.index[(cells["column"] == AVG) & (cells["kind"] == "method")]:
        mine = settings[settings["row"] == cells.at[i, "row"]]
        bad = int((~mine["ranked"].astype(bool)).sum()) + n_columns - len(mine)
        cells.at[i, "ranked"] = bad == 0
        cells.at[i, "status"] = "" if bad == 0 else f"≈ baseline in {bad}/{n_columns}"


def _marks(cells: pd.DataFrame, tests: pd.DataFrame, higher: bool) -> None:
    """``mark``: "best" (best mean among ranked cells), "tie" (ranked, not significantly worse than a best)."""
    cells["mark"] = ""
    for col in cells["column"].unique():
        here = cells[(cells["column"] == col) & (cells["kind"] == "method") & cells["mean"].notna()]
        ranked = here[here["ranked"].astype(bool)]
        if len(here) < 2 or not len(ranked):
            continue
        target = ranked["mean"].max() if higher else ranked["mean"].min()
        bests = ranked.index[np.isclose(ranked["mean"], target, rtol=0, atol=1e-12)]
        cells.loc[bests, "mark"] = "best"
        for i in ranked.index.difference(bests):
            found = [_find(tests, col, cells.at[i, "row"], cells.at[b, "row"]) for b in bests]
            if any(t is None or not bool(t["significant"]) for t in found):
                cells.at[i, "mark"] = "tie"


def _find(tests: pd.DataFrame, col: Any, a: str, b: str) -> pd.Series | None:
    hit = tests[(tests["kind"] == "pair") & (tests["column"] == col)
                & (((tests["a"] == a) & (tests["b"] == b)) | ((tests["a"] == b) & (tests["b"] == a)))]
    return hit.iloc[0] if len(hit) else None


def _final_and_best(cells: pd.DataFrame, frame: pd.DataFrame, metric: str, rows: str, columns: str) -> None:
    """Mean over seeds of each trial's final and best value (shown where they differ)."""
    for stat in ("final", "best"):
        means = trial_values(frame, metric, stat, by=(rows, columns)).groupby([rows, columns])["value"].mean()
        table = means.unstack(columns) if len(means) else pd.DataFrame()
        if AVG in set(cells["column"]) and len(table):
            table[AVG] = table.mean(axis=1, skipna=False)
        cells[stat] = [float(table.at[r, c]) if r in table.index and c in table.columns else math.nan
                       for r, c in zip(cells["row"], cells["column"])]


# ------------------------------------------------------------------------------------------ helpers
def _spread(values: list[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=np.float64)
    return {"std": float(np.std(x, ddof=1)) if len(x) > 1 else math.nan, "min": float(np.min(x)),
            "max": float(np.max(x))}


def _size(record: _Record | None) -> float:
    return float(len(record.keys)) if record is not None else math.nan


def _base_value(base: pd.DataFrame, trial_id: str, column: str) -> float:
    if column not in base.columns or trial_id not in base.index:
        return math.nan
    value = base.at[trial_id, column]
    return math.nan if is_missing(value) else float(value)


def _test_fields(test: stats.Test) -> dict[str, Any]:
    return {"diff": test.diff, "lo": test.lo, "hi": test.hi, "p": test.p, "test": test.test, "n_seeds": test.n_seeds,
            "n_examples": test.n_examples, "sd_examples": test.sd_examples, "sd_seeds": test.sd_seeds}
