"""The run configuration: nested typed dataclasses built from YAML, with dotted ``--set`` overrides.

Every option has a default; an unknown key fails before any work and suggests the closest valid key.
The sections are owned by the code that uses them (``method``, ``ranks`` here; ``model``, ``data``,
``train``, ``resources`` in ``workers/``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.plugins import check_plugins, load_plugins, resolve_plugin
from core.validation import check_int
from orchestrator.method_config import MethodConfig
from orchestrator.methods.registry import check_method_name
from orchestrator.ranks import RankConfig
from orchestrator.system_model import SystemConfig
from orchestrator.trackers import LoggingConfig
from orchestrator.yaml_io import load_yaml
from workers.data_config import DataConfig
from workers.models import ModelConfig
from workers.resources import ResourceConfig
from workers.train_config import TrainConfig


@dataclass(frozen=True)
class MetricsConfig:
    """Optional per-round measurements (DESIGN.md section 4)."""

    noise: bool = True
    similarity_module: str | None = ""  # "" = the first target module; None = off

    def __post_init__(self) -> None:
        if not isinstance(self.noise, bool):
            raise ValueError(f"metrics.noise={self.noise!r} must be true or false")


@dataclass(frozen=True)
class RunConfig:
    """One federated experiment.

    ``participation``: fraction of clients sampled uniformly without replacement each round
    (``floor(participation * num_clients)`` clients, seeded per round). ``eval_every``: evaluate the
    global model every this many rounds (the final round always). ``plugins``: Python files (relative to
    the cwd, stored resolved) or module names imported before ``method.name`` is checked, so that methods
    they ``@register`` can run (:mod:`core.plugins`). ``system``: client availability, speed, round
    deadline and over-selection (:mod:`orchestrator.system_model`).
    """

    seed: int = 0
    rounds: int = 20
    participation: float = 0.1
    eval_every: int = 1
    eval_personal: bool = True
    checkpoint_every: int = 1
    plugins: tuple[str, ...] = ()
    method: MethodConfig = field(default_factory=MethodConfig)
    ranks: RankConfig = field(default_factory=RankConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def __post_init__(self) -> None:
        check_int("seed", self.seed, 0)
        check_int("rounds", self.rounds, 1)
        check_int("eval_every", self.eval_every, 1)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        plugins = dict.fromkeys(resolve_plugin(p) for p in check_plugins(self.plugins))  # ordered, once each
        object.__setattr__(self, "plugins", tuple(plugins))
        load_plugins(self.plugins)
        check_method_name(self.method.name)
        if self.data.global_test_size < 1:
            raise ValueError(f"data.global_test_size={self.data.global_test_size} must be >= 1: a run evaluates "
                             "the global model on the global test set")
        if isinstance(self.participation, bool) or not isinstance(self.participation, int | float) or not (
                0.0 < self.participation <= 1.0):
            raise ValueError(f"participation={self.participation!r} must be in (0, 1]")
        per_round = self.clients_per_round
        if per_round < 1:
            need = 1.0 / self.data.num_clients
            raise ValueError(f"participation={self.participation} of data.num_clients={self.data.num_clients} "
                             f"samples 0 clients per round; use participation >= {need:.4g}")
        self.system.check_clients(self.data.num_clients)

    def checkpoint_due(self, completed_round: int) -> bool:
        """Whether a checkpoint follows 1-based round ``completed_round``: every ``checkpoint_every``, and the last."""
        return completed_round % self.checkpoint_every == 0 or completed_round == self.rounds

    @property
    def clients_per_round(self) -> int:
        """``floor(participation * num_clients)`` (with a tolerance for float error)."""
        return int(self.participation * self.data.num_clients + 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): what ``config.yaml`` holds."""
        return _plain(dataclasses.asdict(self))

    def fingerprint(self, exclude: tuple[str, ...] = ("rounds", "resources", "eval_every",
                                                      "checkpoint_every")) -> str:
        """Hash of everything that changes the result (not the round budget, workers, eval cadence, trackers).

        ``plugins`` never counts: a method is known by its ``method.name``, wherever its file lives.
        ``resources.clients_per_worker`` counts when it is not 1, also with ``resources`` excluded (packed
        training changes results at float rounding); at 1 it is left out, so older runs keep their hash.
        ``resources.metrics_threads`` never counts.
        """
        d = {k: v for k, v in self.to_dict().items() if k not in (*exclude, "plugins", "logging")}
        if not self.system.active:  # the section at its defaults changes nothing: older runs keep their hash
            d.pop("system", None)
        if "resources" in d:  # the driver's metric threads never change what a run trains
            d["resources"].pop("metrics_threads")
        packing = self.resources.clients_per_worker
        if "resources" in d and packing == 1:
            d["resources"].pop("clients_per_worker")
        elif packing != 1:
            d.setdefault("resources", {})["clients_per_worker"] = packing
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def build(cls: type, data: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise with the closest valid key."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(unknown_key_message(prefix + key, [prefix + k for k in fields]))
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping of its options; got {value!r}")
        return build(hint, value, name + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name) if len(inner) == 1 else value
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def unknown_key_message(key: str, valid: list[str]) -> str:
    """``unknown config key 'x'; did you mean 'y'?`` plus the valid keys at that level."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {key!r}{hint} Valid keys here: {sorted(valid)}"


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the configuration (for error messages and sweep axes)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(all_keys(hints[f.name], prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict; checks the keys."""
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    valid = set(all_keys())
    out = json.loads(json.dumps(data or {}))
    for key, value in items:
        if key not in valid:
            raise ValueError(unknown_key_message(key, sorted(valid)))
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"--set expects key=value; got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), load_yaml(raw, f"--set {text}") if raw.strip() else None


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                plugins: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run config (or the defaults), apply overrides, validate.

    ``plugins`` (the command line's ``--plugin``) are appended to the config's own ``plugins``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {str(p)!r} does not exist")
        data = load_yaml(p.read_text(), f"config file {str(p)!r}") or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(p)!r} must hold a mapping of options")
        data.pop("fingerprint", None)  # a run's saved config.yaml carries its fingerprint
    data = apply_overrides(data, overrides or [])
    if plugins and isinstance(data.get("plugins") or [], list | tuple):
        data["plugins"] = [*(data.get("plugins") or []), *plugins]
    return build(RunConfig, data)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
