"""The import graph of the project's packages: one direction of dependency, no cycles.

Layers, bottom to top: ``core`` (torch and the standard library only) < ``workers`` < ``orchestrator`` <
``analysis`` < ``sweeps``. A package may import its own modules and any package below it, never one above.
Every import counts, including the ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["core", "workers", "orchestrator", "analysis", "sweeps"]
CORE_THIRD_PARTY = {"torch"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules (and top-level third-party names) that ``path`` imports anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import submodule`` depends on the submodule; any other name, on ``pkg`` itself
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) for name, path in modules.items()}


def test_every_package_imports_only_itself_and_the_layers_below():
    graph = _graph()
    wrong = []
    for module, targets in graph.items():
        layer = LAYERS.index(module.split(".")[0])
        for target in targets:
            top = target.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > layer:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_core_imports_only_the_standard_library_and_torch():
    import sys

    graph = _graph()
    outside = sorted(f"{m} imports {t}" for m, targets in graph.items() if m.startswith("core")
                     for t in targets if t.split(".")[0] not in sys.stdlib_module_names
                     and t.split(".")[0] not in CORE_THIRD_PARTY | {"core"})
    assert not outside, "\n".join(outside)


def test_no_import_cycle_between_modules():
    graph = _graph()
    edges = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_reader_sees_lazy_imports_and_would_flag_an_upward_one(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from orchestrator.driver import Driver\n    import workers.actor\n")
    assert {"orchestrator.driver", "workers.actor"} <= _imports(source, set(_modules()))
    graph = _graph()
    assert "orchestrator.driver" in graph["orchestrator.run"]  # imported inside a function
    assert "core.wire" in graph["workers.actor"] and "workers.actor" in graph["orchestrator.driver"]
