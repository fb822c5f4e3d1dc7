"""Shared test setup: offline hub, no Ray auth, the repo importable from Ray worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")  # keep builtins.print (see orchestrator.run.init_ray)
# Ray worker processes import workers.* / orchestrator.*: they inherit PYTHONPATH from this process.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module's tests: tiny models gain nothing from more, and on a shared 2-core
    machine a second spinning thread makes every op several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def example_factory():
    """``make(n, task)``: ``n`` small deterministic Example objects (labels alternate 0/1)."""
    from workers.data import Example

    words = ["good", "bad", "fine", "awful", "great", "dull", "warm", "cold"]

    def make(n: int, task: str = "classification", offset: int = 0):
        out = []
        for i in range(offset, offset + n):
            text = f"review {i}: {words[i % len(words)]} film, {words[(3 * i) % len(words)]} acting"
            label = i % 2
            out.append(Example(text=text, label=label, target=" fresh" if label else " rotten"))
        return out

    return make
