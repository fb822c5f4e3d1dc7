"""Checkpoints of a federated run: the method state as safetensors + JSON, written atomically.

Layout of ``DIR/checkpoint/``:

- ``state-<round>.safetensors``: every state tensor by name, in its own dtype (the server optimizer's
  moments included, so a resumed run continues exactly);
- ``state.json``: the commit point: method metadata, the completed round, the config fingerprint and
  the name of the state file of that round. Written to a temporary name and renamed (atomic), after the
  state file, and the older state files are deleted only after it; a run killed at any moment leaves
  the previous checkpoint whole;
- ``records.jsonl``: one JSON line per completed round (the round's metrics record), appended and
  fsynced every round, after a first line for round 0 (the untrained model's evaluation, written
  before round 1); a checkpoint of round ``k`` uses the round-0 line and the next ``k`` lines (lines after
  them belong to rounds that were never checkpointed and are dropped on resume; with no checkpoint yet
  only the round-0 line is kept). Appending keeps the cost of a round's bookkeeping constant however many
  rounds were run;
- ``examples/round-<round>.parquet``: the per-example rows of each evaluated round
  (:class:`orchestrator.outputs.ExampleFiles`), written before the round's record; on resume the files
  of rounds after the checkpoint are deleted.

Random streams need no saving: every draw derives from (seed, round, client, module).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from core.files import atomic_write_text, umask
from orchestrator.state import GlobalState

META_FILE = "state.json"
RECORDS_FILE = "records.jsonl"


def save_checkpoint(folder: Path, state: GlobalState, info: dict[str, Any]) -> None:
    """Write the state tensors of round ``info["round"]``, then the JSON that names them (the commit point)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"state-{int(info['round']):06d}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.tensors.items()}, tmp)
        os.chmod(tmp, 0o666 & ~umask())  # safetensors writes its own file: give it the user's umask after
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(folder / META_FILE, json.dumps({"meta": state.meta, **info, "state_file": name}, indent=1))
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(folder: Path) -> tuple[GlobalState, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: the state and the JSON's other fields."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no checkpoint in {str(folder)!r} (expected {META_FILE})")
    info = json.loads(meta_path.read_text())
    state_path = folder / info.pop("state_file", "")
    if not state_path.is_file():
        raise FileNotFoundError(f"the checkpoint in {str(folder)!r} names {state_path.name!r}, which is missing")
    return GlobalState(load_file(str(state_path)), info.pop("meta")), info


def state_file(folder: Path) -> Path:
    """The state file of the checkpoint in ``folder``."""
    return folder / json.loads((folder / META_FILE).read_text())["state_file"]


def append_record(folder: Path, record: dict[str, Any]) -> None:
    """Append one round's record to ``records.jsonl`` (flushed and fsynced before returning)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / RECORDS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(folder: Path, count: int) -> list[dict[str, Any]]:
    """The round-0 record (when present) and the records of rounds ``1..count`` of ``records.jsonl``.

    Rewrites the file to hold exactly those (the lines after them belong to rounds that were never
    checkpointed, or were cut short by a kill).
    """
    path = folder / RECORDS_FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.is_file() else []
    head = 1 if lines and _round_of(lines[0]) == 0 else 0
    if len(lines) - head < count:
        raise FileNotFoundError(f"{path} holds {len(lines) - head} complete rounds but the checkpoint is of round "
                                f"{count}")
    keep = lines[: head + count]
    records = [json.loads(line) for line in keep]
    if len(lines) > len(keep):
        atomic_write_text(path, "".join(keep))
    return records


def write_records(folder: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``records.jsonl`` by ``records``, one line each (atomic)."""
    atomic_write_text(folder / RECORDS_FILE, "".join(json.dumps(r) + "\n" for r in records))


def _round_of(line: str) -> int | None:
    """The ``round`` of a complete JSON line; ``None`` for a line cut short by a kill."""
    try:
        return int(json.loads(line)["round"]) if line.endswith("\n") else None
    except (ValueError, KeyError, TypeError):
        return None
