"""Output files get the user's umask (``0o666 & ~umask``), not ``mkstemp``'s 0o600."""

import os
import stat

import pytest
import torch

from core.files import atomic_write_bytes, atomic_write_text
from orchestrator.checkpoint import save_checkpoint, state_file
from orchestrator.outputs import write_config
from orchestrator.state import GlobalState


@pytest.fixture(params=[0o022, 0o027, 0o077])
def user_umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, user_umask):
    atomic_write_text(tmp_path / "a.csv", "x\n")
    atomic_write_bytes(tmp_path / "b.parquet", b"\x00")
    write_config(tmp_path, {"rounds": 1}, "abc")
    expected = 0o666 & ~user_umask
    assert mode(tmp_path / "a.csv") == mode(tmp_path / "b.parquet") == mode(tmp_path / "config.yaml") == expected
    with open(tmp_path / "plain", "w") as f:  # the same as a plain open()
        f.write("x")
    assert mode(tmp_path / "plain") == expected
    assert os.umask(user_umask) == user_umask  # unchanged by the writes


def test_checkpoint_files_follow_the_umask(tmp_path, user_umask):
    folder = tmp_path / "checkpoint"
    save_checkpoint(folder, GlobalState({"m/B": torch.ones(2, 1)}, {}), {"round": 1})
    assert mode(state_file(folder)) == mode(folder / "state.json") == 0o666 & ~user_umask
