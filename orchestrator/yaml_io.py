"""The one YAML reader of run configs, sweep files and ``--set`` values.

- ``1e-3`` (no dot) is a float, as people write learning rates (YAML 1.1, PyYAML's default, reads it as a
  string);
- a syntax error names the file and the line and column (1-based);
- a key given twice in one mapping is legal YAML (the last value wins) but almost always a mistake: it is
  reported as an :class:`InputWarning` naming the key and both lines. Callers that collect warnings for
  the console and ``summary.json`` catch them with ``warnings.catch_warnings(record=True)``.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import yaml


class InputWarning(UserWarning):
    """Input that is legal but probably not what the user meant (a duplicate key, a one-class data set ...)."""


class YamlSyntaxError(ValueError):
    """A YAML file or value that does not parse: names the source, the line and what is wrong."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and reports duplicate keys (see the module docstring)."""

    source = "<yaml>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first:
                warnings.warn(f"{self.source}: key {key!r} appears twice in one mapping (lines {first[key]} and "
                              f"{line}); the value of line {line} is used", InputWarning, stacklevel=2)
            else:
                first[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
                    |[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse ``text`` (``source`` names it in errors and warnings); see the module docstring."""
    loader_cls = type("_SourceLoader", (_Loader,), {"source": source})
    try:
        return yaml.load(text, Loader=loader_cls)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(p for p in (err.context, err.problem) if p)
        raise YamlSyntaxError(f"{source}: YAML syntax error{where}: {what}") from None
    except yaml.YAMLError as err:
        raise YamlSyntaxError(f"{source}: YAML syntax error: {err}") from None
