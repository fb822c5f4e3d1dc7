"""The README's examples run as written."""

import re
from pathlib import Path

from method_helpers import make, run_rounds

from orchestrator.methods import available_methods, registry

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_add_a_method_example_registers_and_runs():
    text = README.read_text()
    code = re.search(r"```python\n(from orchestrator.methods.base import FactoredMethod.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    try:
        assert "mymethod" in available_methods()
        method = make("mymethod", [1, 2, 4], R=4)
        state, _ = run_rounds(method, [[0, 1, 2], [1, 2]])
        assert all(d.dense().abs().sum() > 0 for d in method.global_delta(state).values())
    finally:
        registry._METHODS.pop("mymethod", None)


def test_readme_quickstart_has_exactly_two_commands():
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert [c.split("#")[0].strip() for c in commands] == ["bash quickstart.sh sweep", "bash quickstart.sh test"]
