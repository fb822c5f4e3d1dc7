"""Checkpoints of a federated run: the method state as safetensors + JSON, written atomically.

Layout of ``DIR/checkpoint/``: ``state.safetensors`` (every state tensor by name), ``state.json``
(method metadata, completed round, config fingerprint, the per-round records so far). Every file is
written to a temporary name in the same folder and renamed, so a run killed mid-write leaves the previous
checkpoint intact. Random streams need no saving: every draw derives from (seed, round, client, module).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from orchestrator.types import GlobalState

STATE_FILE = "state.safetensors"
META_FILE = "state.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + ``os.replace`` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def save_checkpoint(folder: Path, state: GlobalState, info: dict[str, Any]) -> None:
    """Write the state tensors, then the JSON that names them (the JSON is the commit point)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{STATE_FILE}.")
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.tensors.items()}
        save_file(tensors, tmp)
        os.replace(tmp, folder / STATE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(folder / META_FILE, json.dumps({"meta": state.meta, **info}, indent=1))


def load_checkpoint(folder: Path) -> tuple[GlobalState, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    meta_path, state_path = folder / META_FILE, folder / STATE_FILE
    if not meta_path.is_file() or not state_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {str(folder)!r} (expected {META_FILE} and {STATE_FILE})")
    info = json.loads(meta_path.read_text())
    tensors = {k: v.to(torch.float32) for k, v in load_file(str(state_path)).items()}
    return GlobalState(tensors, info.pop("meta")), info
