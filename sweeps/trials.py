"""A parsed sweep expanded into its trials: each trial's validated run config, stable id and columns.

Trials = variants x settings x grid x seeds, in that nesting order (seeds innermost). A trial's config is
the base with its variant's, setting's, grid values, seed and then the command line's ``--set`` overrides
applied. Every trial's full :class:`RunConfig` is built (and its method constructed on a probe module by
:func:`orchestrator.preflight.probe_method`, which catches e.g. FedIT with heterogeneous ranks) before any
trial starts; all problems are reported at once, each with its trial. Parsing the sweep YAML is :mod:`sweeps.spec`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from core.naming import slug
from orchestrator.config import RunConfig, apply_overrides, build
from orchestrator.preflight import probe_method
from sweeps.spec import SweepSpec, SweepSpecError, join_errors, key_errors, method_errors


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its stable id, labels, the grid values it takes and its validated run config."""

    index: int
    trial_id: str
    label: str
    setting: str
    seed: int
    axes: dict[str, Any]
    config: RunConfig
    headline: str | None = None

    @property
    def metric(self) -> str:
        """The sweep's ``metric``, else the task's own (accuracy, mcc for CoLA, rouge_l)."""
        from workers.task_metrics import metric_names_for

        return self.headline or metric_names_for(self.config.data)[-1]

    def describe(self) -> str:
        """``Fed-PLoRA | IID | train.lr=0.001 | seed 0``."""
        parts = [self.label] + ([self.setting] if self.setting != "default" else [])
        parts += [f"{k}={v}" for k, v in self.axes.items()] + [f"seed {self.seed}"]
        return " | ".join(parts)


def expand(spec: SweepSpec, overrides: dict[str, Any] | None = None) -> list[TrialSpec]:
    """Every trial of ``spec`` with ``overrides`` (``--set``) applied last; raises listing every bad trial."""
    overrides = dict(overrides or {})
    errors = key_errors(overrides)
    axis_keys = {k for b in spec.variants + spec.settings for k in b.overrides} | set(spec.grid)
    errors += [f"--set {k}: the sweep's axes set {k} per trial; change the axes instead" for k in overrides
               if k in axis_keys or (k == "seed" and spec.seeds is not None)]
    if "method.name" in overrides:
        errors += method_errors([overrides["method.name"]], "--set")
    if errors:
        raise SweepSpecError(join_errors("the sweep cannot run", errors))
    variants = spec.variants or (None,)
    settings = spec.settings or (None,)
    grid_points = [dict(zip(spec.grid, values)) for values in itertools.product(*spec.grid.values())]
    seeds = spec.seeds if spec.seeds is not None else (None,)
    trials: list[TrialSpec] = []
    bad: dict[str, list[str]] = {}
    for index, (variant, setting, point, seed) in enumerate(itertools.product(variants, settings, grid_points,
                                                                              seeds)):
        layers: dict[str, Any] = {}
        for part in (variant.overrides if variant else {}, setting.overrides if setting else {}, point):
            layers.update(part)
        if seed is not None:
            layers["seed"] = seed
        layers.update(overrides)
        label = variant.label if variant else None
        setting_label = setting.label if setting else "default"
        try:
            cfg = build(RunConfig, apply_overrides(spec.base, layers))
            probe_method(cfg)
        except (ValueError, TypeError) as err:
            bad.setdefault(str(err), []).append(_where(index, label, setting_label, point, seed))
            continue
        label = label or cfg.method.name
        trials.append(TrialSpec(index=index, trial_id=trial_id(index, label, setting_label, point, cfg.seed),
                                label=label, setting=setting_label, seed=cfg.seed, axes=dict(point), config=cfg,
                                headline=spec.metric))
    if bad:
        total = len(trials) + sum(len(w) for w in bad.values())
        errors = [f"{message}  <- {_which(where, total)}" for message, where in bad.items()]
        raise SweepSpecError(join_errors("invalid trials (nothing was started)", errors))
    if not trials:
        raise SweepSpecError("the sweep has zero trials")
    return trials


def _where(index: int, label: str | None, setting: str, point: dict[str, Any], seed: int | None) -> str:
    parts = [p for p in (label, setting if setting != "default" else None) if p]
    parts += [f"{k}={v}" for k, v in point.items()]
    if seed is not None:
        parts.append(f"seed {seed}")
    return f"trial {index} ({' | '.join(parts) or 'base'})"


def _which(where: list[str], total: int) -> str:
    if len(where) == total and total > 1:
        return f"all {total} trials"
    shown = "; ".join(where[:3])
    return shown + (f"; and {len(where) - 3} more trials" if len(where) > 3 else "")


def trial_id(index: int, label: str, setting: str, point: dict[str, Any], seed: int) -> str:
    """Stable, readable id: ``003-fedit-r-2-non-iid-dir-0.5-lr=0.001-s0`` (the index keeps it unique)."""
    parts = [f"{index:03d}", slug(label)]
    if setting != "default":
        parts.append(slug(setting))
    parts += [slug(f"{k.rsplit('.', 1)[-1]}={v}") for k, v in point.items()]
    parts.append(f"s{seed}")
    tid = "-".join(parts)
    return tid if len(tid) <= 96 else tid[:88].rstrip("-") + "-" + hashlib.sha1(tid.encode()).hexdigest()[:7]


def sweep_fingerprint(trials: list[TrialSpec]) -> str:
    """Hash of every trial's id and full config except ``resources`` (the same sweep on another cluster).

    ``resources.clients_per_worker`` other than 1 counts (:meth:`orchestrator.config.RunConfig.fingerprint`).
    """
    items = [(t.trial_id, t.label, t.setting, json.dumps(t.axes, sort_keys=True, default=str),
              t.config.fingerprint(exclude=("resources",))) for t in trials]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def columns_of(trial: TrialSpec) -> dict[str, Any]:
    """The identifying columns of a trial in the result tables (grid axes by dotted key + key config)."""
    cfg = trial.config.to_dict()
    out: dict[str, Any] = {"trial_id": trial.trial_id, "label": trial.label, "setting": trial.setting,
                           "seed": trial.seed}
    for key in ("method.name", "ranks.distribution", "data.partition", *trial.axes):
        section, _, leaf = key.rpartition(".")
        node = cfg
        for part in section.split(".") if section else ():
            node = node[part]
        value = node[leaf]
        out[key] = json.dumps(value) if isinstance(value, list | dict) else value
    return out
