"""Where a benchmark writes its result: ``NAME.json`` and its Markdown rendering ``NAME.md`` side by side.

A full run writes ``benchmarks/results/NAME.{json,md}`` unless ``--out`` says otherwise. A ``--quick`` run (a
smoke test, also run by CI) writes to a fresh temporary folder unless ``--out`` names one, and never under
``benchmarks/results/``: a smoke run cannot overwrite a recorded result.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def result_path(out: str | None, name: str, quick: bool) -> Path:
    """The JSON path of this run: ``--out`` (relative to the repository root), else the default above."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix=f"bench_{name}_quick_")) / f"{name}.json" if quick else RESULTS / f"{name}.json"
    path = Path(out) if os.path.isabs(out) else ROOT / out
    if quick and path.resolve().is_relative_to(RESULTS.resolve()):
        raise SystemExit(f"--quick never writes under {RESULTS.relative_to(ROOT)}/ (got --out {out}): the recorded "
                         "results come from full runs")
    return path


def write_result(path: Path, result: dict, markdown: str, md_path: Path | None = None) -> Path:
    """Write ``result`` as JSON to ``path`` and ``markdown`` next to it (or to ``md_path``); returns the .md path."""
    md_path = md_path or path.with_suffix(".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown)
    print(f"wrote {path} and {md_path}")
    return md_path


def read_result(path: str | Path) -> dict:
    """A recorded result (for ``--render``)."""
    return json.loads(Path(path).read_text())


def rerender(path: str | Path, markdown) -> dict:
    """``--render JSON``: rewrite the Markdown next to a recorded result from it (``markdown(result)``); returns it."""
    result = read_result(path)
    Path(path).with_suffix(".md").write_text(markdown(result))
    return result
