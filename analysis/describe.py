"""The report's account of what ran: the options that applied, the test set, the data warnings.

An option is listed only for the trials it applies to (``data.alpha`` on Dirichlet splits,
``data.classes_per_client`` on pathological ones, ``ranks.rank`` on homogeneous ranks, ...; see
:data:`APPLIES`), so an IID trial's unused default never makes ``data.alpha`` look "varied". Options that
are set (not null) among :data:`SETUP_KEYS` are listed as fixed when every trial has the same value.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.load import NON_AXIS_COLUMNS, is_missing
from analysis.values import column_order_key, row_order_key
from workers.resources import PLACEMENT_KEYS

SETUP_KEYS = ("model.name", "data.dataset", "data.path", "data.glue_task", "data.num_clients", "data.partition",
              "data.alpha", "data.classes_per_client", "data.group_column", "data.global_test_size",
              "data.max_examples", "data.max_length", "participation", "rounds", "eval_every", "method.name",
              "ranks.distribution", "ranks.max_rank", "ranks.mid_rank", "ranks.rank", "ranks.ranks", "train.optimizer",
              "train.lr", "train.local_steps", "train.batch_size")
IGNORED_KEYS = ("fingerprint", "checkpoint_every", *(f"resources.{k}" for k in PLACEMENT_KEYS))
_RANK_FAMILIES = ("uniform", "heavy_tail_light", "heavy_tail_strong", "normal")
_HETLORA = ("method.hetlora_gamma", "method.hetlora_lambda", "method.hetlora_prune", "method.hetlora_min_rank")
# the key that decides -> {its value: the options that apply only with that value}
APPLIES_WHEN = {
    "data.partition": {"dirichlet": ("data.alpha",), "pathological": ("data.classes_per_client",),
                       "natural": ("data.group_column",)},
    "data.dataset": {"glue": ("data.glue_task",)},
    "ranks.distribution": {"homogeneous": ("ranks.rank",), "groups": ("ranks.mid_rank",), "list": ("ranks.ranks",),
                           **{family: ("ranks.choices",) for family in _RANK_FAMILIES}},
    "method.name": {"fedplora": ("method.selection", "method.unselected"), "hetlora": _HETLORA,
                    "pfedlora": ("method.pfedlora_shared_rank", "method.pfedlora_private_fraction")},
}
# option -> (the key that decides whether it applies, the values for which it does)
APPLIES = {option: (key, tuple(v for v, options in values.items() if option in options))
           for key, values in APPLIES_WHEN.items() for options in values.values() for option in options}


def fmt_value(value: Any) -> str:
    """A config value as the report prints it (floats with ``:g``, lists in brackets)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def applies(configs: pd.DataFrame, key: str) -> pd.Series:
    """Which trials (rows of ``configs``) option ``key`` applies to (all, unless :data:`APPLIES` says otherwise)."""
    if key not in APPLIES or APPLIES[key][0] not in configs.columns:
        return pd.Series(True, index=configs.index)
    by, values = APPLIES[key]
    return configs[by].isin(values)


def option_lines(configs: pd.DataFrame) -> list[str]:
    """``- Fixed: ...`` and ``- Varied: ...`` over the trials each option applies to."""
    keys = [c for c in configs.columns if c not in NON_AXIS_COLUMNS and not c.startswith(IGNORED_KEYS)
            and not c.startswith(("final_", "best_", "untrained_")) and c != "trial_id"]
    fixed, varied = [], []
    for key in keys:
        where = applies(configs, key)
        values = [v for v in configs.loc[where, key].tolist() if not is_missing(v)]
        unique = list(dict.fromkeys(fmt_value(v) for v in values))
        scope = "" if where.all() else f" ({_scope(key)})"
        if len(unique) > 1:
            varied.append(f"`{key}`: {', '.join(unique[:8])}{', ...' if len(unique) > 8 else ''}{scope}")
        elif len(unique) == 1 and key in SETUP_KEYS:
            fixed.append(f"`{key}` = {unique[0]}{scope}")
    return (["- Fixed: " + "; ".join(fixed) + "."] if fixed else []) + (
        ["- Varied: " + "; ".join(varied) + "."] if varied else [])


def _scope(key: str) -> str:
    by, values = APPLIES[key]
    return f"{by} {' / '.join(values)} only"


def trial_lines(kind: str, trials: pd.DataFrame) -> list[str]:
    """Counts of trials by status, the methods and settings (sweep) or the run's method and status."""
    if kind != "sweep":
        row = trials.iloc[0]
        return [f"- Method: {row['label']}; setting: {row['setting']}; status: {row['status']}."]
    counts = trials["status"].fillna("UNKNOWN").value_counts() if "status" in trials else pd.Series(dtype=int)
    status = ", ".join(f"{int(v)} {k}" for k, v in counts.items())
    labels = sorted(trials["label"].dropna().unique(), key=row_order_key)
    return [f"- {len(trials)} trial{'s' if len(trials) != 1 else ''} ({status}).",
            f"- Methods: {', '.join(labels)}.",
            f"- Settings: {', '.join(map(str, sorted(trials['setting'].dropna().unique(), key=column_order_key)))}."]


def test_set_line(cells: pd.DataFrame, baselines: pd.DataFrame) -> str | None:
    """``- Test set: 200 examples ...`` from the cells' record counts, else the trials' summaries."""
    sizes = cells["test_examples"].dropna() if "test_examples" in cells else pd.Series(dtype=float)
    if not len(sizes) and "test_examples" in baselines:
        sizes = baselines["test_examples"].dropna()
    if not len(sizes):
        return None
    low, high = int(sizes.min()), int(sizes.max())
    size = f"{low:,}" if low == high else f"{low:,} to {high:,}"
    return (f"- Test set: {size} examples per trial (the global test set; one seed's interval covers the "
            "sampling of these examples only).")


def data_note_lines(baselines: pd.DataFrame) -> list[str]:
    """The warnings from splitting and truncation (summary.json ``data_notes``), each with its trial count."""
    if "data_notes" not in baselines.columns:
        return []
    counts: dict[str, int] = {}
    for notes in baselines["data_notes"]:
        for note in notes if isinstance(notes, tuple | list) else ():
            counts[note] = counts.get(note, 0) + 1
    total = len(baselines)
    return [f"- {note}" + (f" ({n} of {total} trials)" if total > 1 else "") for note, n in counts.items()]
