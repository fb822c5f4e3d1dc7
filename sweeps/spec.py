"""Sweep specifications: the sweep YAML (a base run config and the axes that vary it) parsed and checked.

A sweep YAML::

    name: my_sweep
    plugins: [my_method.py]                     # optional files (relative to this YAML) or modules that
                                                # @register methods; merged into base.plugins
    base_config: configs/minilm_fedplora.yaml   # optional file (relative to this YAML, else to the cwd)
    base:                                       # optional inline run config, merged over base_config
      rounds: 20
      data: {dataset: rotten_tomatoes}
    metric: accuracy                            # optional headline metric (default: the task's own)
    focus: Fed-PLoRA                            # optional: the variant the report compares the others with
    axes:
      variants:                                 # optional named bundles of overrides (methods, ranks)
        - {label: Fed-PLoRA, set: {method.name: fedplora}}
        - {label: FedIT (R/2), set: {method.name: fedit, ranks.distribution: homogeneous, ranks.rank: 4}}
      settings:                                 # optional named bundles of overrides (data splits)
        - {label: IID, set: {data.partition: iid}}
        - {label: non-IID (Dir 0.5), set: {data.partition: dirichlet, data.alpha: 0.5}}
      grid:                                     # optional: dotted RunConfig key -> values
        train.lr: [0.001, 0.0005]
      seeds: [0, 1, 2]                          # default: the base config's seed
    logging: {trackers: [mlflow]}               # optional trackers (sweeps.tracking), also --log NAME

Every key is checked against :func:`orchestrator.config.all_keys` and every method name against the method
registry (after the plugins are imported); all problems are reported at once. Expanding a spec into its
trials (and checking every trial's values) is :mod:`sweeps.trials`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.plugins import check_plugins, load_plugins, resolve_plugin
from orchestrator.config import all_keys, apply_overrides, build, unknown_key_message
from orchestrator.trackers import LoggingConfig
from orchestrator.yaml_io import load_yaml as _load_yaml

PRESET_DIR = Path(__file__).resolve().parent / "presets"
TOP_KEYS = ("name", "description", "plugins", "base", "base_config", "metric", "focus", "axes", "logging")
AXES_KEYS = ("variants", "settings", "grid", "seeds")
BUNDLE_KEYS = ("label", "set")
METRICS = ("accuracy", "mcc", "rouge_l", "personal_accuracy", "personal_mcc", "personal_rouge_l")
MAX_ERRORS_SHOWN = 20


class SweepSpecError(ValueError):
    """A sweep file or request that cannot run; the message lists every problem found."""


@dataclass(frozen=True)
class Bundle:
    """A named set of dotted overrides (one variant or one setting)."""

    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: the merged base config (nested dict) and the axes. See the module docstring."""

    name: str
    base: dict[str, Any]
    variants: tuple[Bundle, ...] = ()
    settings: tuple[Bundle, ...] = ()
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    metric: str | None = None
    description: str = ""
    focus: str | None = None
    logging: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as it would be written (``base`` already merged with ``base_config``)."""
        axes: dict[str, Any] = {}
        if self.variants:
            axes["variants"] = [{"label": b.label, "set": dict(b.overrides)} for b in self.variants]
        if self.settings:
            axes["settings"] = [{"label": b.label, "set": dict(b.overrides)} for b in self.settings]
        if self.grid:
            axes["grid"] = {k: list(v) for k, v in self.grid.items()}
        if self.seeds is not None:
            axes["seeds"] = list(self.seeds)
        out: dict[str, Any] = {"name": self.name, "description": self.description, "base": self.base,
                               "axes": axes}
        if self.metric:
            out["metric"] = self.metric
        if self.focus:
            out["focus"] = self.focus
        if self.logging:
            out["logging"] = dict(self.logging)
        return out

    def logging_config(self, extra: list[str] | None = None) -> LoggingConfig:
        """The sweep's trackers: its ``logging:`` section (over the base config's) plus ``--log`` names."""
        return build(LoggingConfig, self.logging, "logging.").with_trackers(extra)


# ------------------------------------------------------------------------------------------------ YAML
def load_yaml(text: str, source: str = "sweep YAML") -> Any:
    """Parse sweep YAML (``1e-3`` is a float; duplicate keys warn): :func:`orchestrator.yaml_io.load_yaml`."""
    return _load_yaml(text, source)


def _read_yaml_file(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise SweepSpecError(f"{what} {str(path)!r} does not exist")
    data = load_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise SweepSpecError(f"{what} {str(path)!r} must hold a mapping")
    return data


# --------------------------------------------------------------------------------------------- presets
def available_presets() -> list[str]:
    """Names of the built-in sweep presets (``sweeps/presets/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; an unknown name lists the presets."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, available_presets(), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SweepSpecError(f"unknown preset {name!r}{hint} Available presets: {available_presets()}")
    return path


def load_preset(name: str) -> SweepSpec:
    """Parse preset ``name``."""
    return load_spec_file(preset_path(name))


# ----------------------------------------------------------------------------------------------- parse
def load_spec_file(path: str | Path) -> SweepSpec:
    """Parse a sweep YAML file; ``base_config`` is resolved relative to the file, then to the cwd."""
    path = Path(path)
    return parse_spec(_read_yaml_file(path, "sweep file"), source_dir=path.resolve().parent,
                      default_name=path.stem)


def parse_spec(data: dict[str, Any], source_dir: Path | None = None, default_name: str = "sweep") -> SweepSpec:
    """Check the structure and keys of a sweep mapping (values: per trial, by ``sweeps.trials.expand``)."""
    if not isinstance(data, dict):
        raise SweepSpecError(f"a sweep must be a mapping with keys {list(TOP_KEYS)}; got {type(data).__name__}")
    errors: list[str] = []
    for key in data:
        if key not in TOP_KEYS:
            errors.append(_unknown("sweep key", key, TOP_KEYS))
    base = _base(data, source_dir, errors)
    _plugins(base, data.get("plugins"), source_dir, errors)
    axes = data.get("axes") or {}
    if not isinstance(axes, dict):
        errors.append(f"axes must be a mapping with keys {list(AXES_KEYS)}; got {axes!r}")
        axes = {}
    for key in axes:
        if key not in AXES_KEYS:
            errors.append(_unknown("axes key", key, AXES_KEYS))
    variants = _bundles(axes, "variants", errors)
    settings = _bundles(axes, "settings", errors)
    grid = _grid(axes, errors)
    seeds = _seeds(axes, errors)
    _check_overlaps(variants, settings, grid, seeds, errors)
    metric = data.get("metric")
    if metric is not None and metric not in METRICS:
        errors.append(_unknown("metric", metric, METRICS))
    focus = data.get("focus")
    labels = [b.label for b in variants]
    if focus is not None and focus not in labels:
        errors.append(f"focus={focus!r} must be the label of one of axes.variants: {labels}")
    logging = _logging(data, base, errors)
    if errors:
        raise SweepSpecError(join_errors("the sweep is invalid", errors))
    return SweepSpec(name=str(data.get("name") or default_name), base=base, variants=variants, settings=settings,
                     grid=grid, seeds=seeds, metric=metric, description=str(data.get("description") or ""),
                     focus=focus, logging=logging)


def _logging(data: dict[str, Any], base: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """The sweep's ``logging:`` section merged over its base config's (checked as a LoggingConfig)."""
    own, inherited = data.get("logging") or {}, base.get("logging") or {}
    if not isinstance(own, dict) or not isinstance(inherited, dict):
        errors.append(f"logging must be a mapping with keys {[f.name for f in fields(LoggingConfig)]}")
        return {}
    merged = {**inherited, **own}
    try:
        build(LoggingConfig, merged, "logging.")
    except ValueError as err:
        errors.append(str(err))
        return {}
    return merged


def _base(data: dict[str, Any], source_dir: Path | None, errors: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    if data.get("base_config") is not None:
        path = _resolve_file(str(data["base_config"]), source_dir)
        if path is None:
            errors.append(f"base_config {data['base_config']!r} does not exist (looked next to the sweep file "
                          "and in the current directory)")
        else:
            merged = _read_yaml_file(path, "base_config")
    inline = data.get("base") or {}
    if not isinstance(inline, dict):
        errors.append(f"base must be a mapping of run-config options; got {inline!r}")
        inline = {}
    flat = {**_flatten_set(merged), **_flatten_set(inline)}
    errors.extend(f"base: {m}" for m in key_errors(flat))
    return apply_overrides({}, {k: v for k, v in flat.items() if k in set(all_keys())})


def _plugins(base: dict[str, Any], top: Any, source_dir: Path | None, errors: list[str]) -> None:
    """Merge the top-level ``plugins`` (relative to the sweep file) into ``base`` and import them all.

    Imported here, before the axes are checked, so a method they register is a valid ``method.name``.
    """
    try:
        extra = [resolve_plugin(p, source_dir) for p in check_plugins(top)] if top is not None else []
        merged = [*check_plugins(base.get("plugins", []), "base.plugins"), *extra]
        load_plugins(merged)
    except (ValueError, FileNotFoundError) as err:
        errors.append(str(err))
        return
    if merged:
        base["plugins"] = list(dict.fromkeys(resolve_plugin(p) for p in merged))


def with_plugins(spec: SweepSpec, plugins: list[str]) -> SweepSpec:
    """``spec`` with the command line's ``--plugin`` files added to its base (imported already by the caller)."""
    if not plugins:
        return spec
    merged = list(dict.fromkeys([*spec.base.get("plugins", []), *(resolve_plugin(p) for p in plugins)]))
    return dataclasses.replace(spec, base={**spec.base, "plugins": merged})


def _resolve_file(name: str, source_dir: Path | None) -> Path | None:
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [c for c in ((source_dir / p) if source_dir else None, p) if c]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    return None


def _bundles(axes: dict[str, Any], key: str, errors: list[str]) -> tuple[Bundle, ...]:
    raw = axes.get(key)
    if key not in axes:
        return ()
    if not isinstance(raw, list) or not raw:
        errors.append(f"axes.{key} must be a non-empty list of {{label: ..., set: {{key: value}}}}; got {raw!r}")
        return ()
    out, seen = [], set()
    for i, item in enumerate(raw):
        where = f"axes.{key}[{i}]"
        if not isinstance(item, dict) or "label" not in item:
            errors.append(f"{where} must be a mapping {{label: ..., set: {{key: value}}}}; got {item!r}")
            continue
        extra = [k for k in item if k not in BUNDLE_KEYS]
        errors.extend(f"{where}: {_unknown('key', k, BUNDLE_KEYS)}" for k in extra)
        label = str(item["label"])
        if label in seen:
            errors.append(f"{where}: label {label!r} is used twice in axes.{key}")
        seen.add(label)
        overrides = item.get("set") or {}
        if not isinstance(overrides, dict):
            errors.append(f"{where} ({label!r}): set must be a mapping of dotted keys; got {overrides!r}")
            continue
        overrides = _flatten_set(overrides)
        errors.extend(f"{where} ({label!r}): {m}" for m in key_errors(overrides))
        out.append(Bundle(label, overrides))
    return tuple(out)


def _grid(axes: dict[str, Any], errors: list[str]) -> dict[str, list[Any]]:
    if "grid" not in axes:
        return {}
    raw = axes["grid"]
    if not isinstance(raw, dict) or not raw:
        errors.append(f"axes.grid is empty ({raw!r}): give at least one dotted config key with a list of values, "
                      "e.g. grid: {train.lr: [0.001, 0.0005]}, or leave grid out")
        return {}
    grid: dict[str, list[Any]] = {}
    for key, values in raw.items():
        key = str(key)
        if key == "seed":
            errors.append("axes.grid: use axes.seeds: [...] for seeds, not a grid axis 'seed'")
            continue
        errors.extend(f"axes.grid: {m}" for m in key_errors({key: None}))
        if not isinstance(values, list):
            errors.append(f"axes.grid.{key} must be a list of values; got {values!r}")
            continue
        if not values:
            errors.append(f"axes.grid.{key} has no values: the grid would have zero trials")
            continue
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            errors.append(f"axes.grid.{key} lists a value twice: {values}")
        if key == "method.name":
            errors.extend(method_errors(values, f"axes.grid.{key}"))
        grid[key] = values
    return grid


def _seeds(axes: dict[str, Any], errors: list[str]) -> tuple[int, ...] | None:
    if "seeds" not in axes:
        return None
    raw = axes["seeds"]
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        errors.append(f"axes.seeds must be a non-empty list of integers >= 0; got {raw!r}")
        return None
    bad = [s for s in raw if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        errors.append(f"axes.seeds must be integers >= 0; bad: {bad}")
    if len(set(raw)) != len(raw):
        errors.append(f"axes.seeds lists a seed twice: {raw}")
    return tuple(raw)


def _check_overlaps(variants, settings, grid, seeds, errors: list[str]) -> None:
    owners: dict[str, str] = {}
    groups = [("axes.variants", {k for b in variants for k in b.overrides}),
              ("axes.settings", {k for b in settings for k in b.overrides}),
              ("axes.grid", set(grid)), ("axes.seeds", {"seed"} if seeds is not None else set())]
    for name, keys in groups:
        for key in sorted(keys):
            if key in owners:
                errors.append(f"{key} is set by both {owners[key]} and {name}: a trial's value would be ambiguous")
            owners.setdefault(key, name)
    for where, bundles in (("axes.variants", variants), ("axes.settings", settings)):
        for b in bundles:
            if "method.name" in b.overrides:
                errors.extend(method_errors([b.overrides["method.name"]], f"{where} ({b.label!r})"))


def method_errors(names: list[Any], where: str) -> list[str]:
    """One message per unknown method name in ``names``, each prefixed with ``where``."""
    from orchestrator.methods import check_method_name

    errors = []
    for name in names:
        try:
            check_method_name(name)
        except ValueError as err:
            errors.append(f"{where}: {err}")
    return errors


def _flatten_set(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{method: {name: x}}`` and ``{method.name: x}`` both become ``{"method.name": x}``."""
    sections = {k.rsplit(".", 1)[0] for k in all_keys() if "." in k}
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        key = str(key)
        if key in sections and isinstance(value, dict):
            for sub, v in _flatten_set({f"{key}.{k}": v for k, v in value.items()}).items():
                out[sub] = v
        else:
            out[key] = value
    return out


def key_errors(overrides: dict[str, Any]) -> list[str]:
    """One message per key of ``overrides`` that is not a run-config key (with the closest valid key)."""
    valid = all_keys()
    return [unknown_key_message(k, valid) for k in overrides if k not in set(valid)]


def _unknown(what: str, key: Any, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {key!r}{hint} Valid: {list(valid)}"


def join_errors(head: str, errors: list[str]) -> str:
    """``head (N problems):`` and the first :data:`MAX_ERRORS_SHOWN` messages, one per line."""
    shown = errors[:MAX_ERRORS_SHOWN]
    more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    return f"{head} ({len(errors)} problem{'s' if len(errors) != 1 else ''}):\n  " + "\n  ".join(shown) + more


# ------------------------------------------------------------------------------------------- --set
def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (values parsed as YAML) -> ``{key: value}``; keys are checked."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SweepSpecError(f"--set expects key=value; got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = load_yaml(raw, f"--set {item}") if raw.strip() else None
    errors = key_errors(out)
    if errors:
        raise SweepSpecError(join_errors("--set", errors))
    return out


