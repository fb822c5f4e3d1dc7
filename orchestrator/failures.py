"""What the command line prints when a run stops early: a few lines, no traceback, and how to go on.

:func:`report_failure` turns any exception into ``error: <message>`` (the project's errors carry the field
and the allowed values; an ``OSError`` while writing the run folder says which file and why, e.g. a full
or read-only disk), and, when the run folder holds a checkpoint, the round it holds and the exact command
that resumes it. :func:`report_interrupt` does the same for Ctrl-C / SIGTERM. ``--debug`` adds the full
traceback (with the remote one of a Ray actor).
"""

from __future__ import annotations

import errno
import json
import shlex
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from orchestrator.checkpoint import META_FILE

PROJECT_PACKAGES = ("core", "workers", "orchestrator", "analysis", "sweeps")
DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
               errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exceeded",
               errno.EFBIG: "the file is larger than allowed", errno.ENOTDIR: "a part of the path is a file",
               errno.EISDIR: "it is a folder"}


def checkpoint_round(out: Path) -> int | None:
    """The round of the whole checkpoint in ``out/checkpoint`` (``None`` when there is none)."""
    try:
        return int(json.loads((out / "checkpoint" / META_FILE).read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_command(out: Path) -> str:
    """``python -m orchestrator.run --resume DIR`` (DIR quoted for the shell)."""
    return f"python -m orchestrator.run --resume {shlex.quote(str(out))}"


def describe(err: BaseException) -> str:
    """One message for the user: the exception's own text; a disk error says what could not be written and why."""
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        target = err.filename or "a file of the run"
        return f"could not write {str(target)!r}: {DISK_ERRNOS[err.errno]} ({err.strerror})"
    text = str(err)
    if isinstance(err, ValueError | FileNotFoundError) or type(err).__module__.split(".")[0] in PROJECT_PACKAGES:
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}"


def resume_lines(out: Path | None, command: Callable[[Path], str] = resume_command) -> list[str]:
    """Where the run stands on disk and how to continue it (nothing when no round was checkpointed)."""
    if out is None:
        return []
    done = checkpoint_round(out)
    if done is None:
        return []
    return [f"the last checkpoint (round {done}) in {out} is whole; resume with:", f"  {command(out)}"]


def report_failure(err: BaseException, hint: list[str] | None = None, debug: bool = False) -> None:
    """Print ``error: ...`` (then the ``hint`` lines, e.g. :func:`resume_lines`; the traceback with ``debug``)."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    print(f"error: {describe(err)}", file=sys.stderr)
    for line in hint or []:
        print(line, file=sys.stderr)
    if not debug and not _is_input_error(err):
        print("(run again with --debug for the full traceback)", file=sys.stderr)


def report_interrupt(err: BaseException, hint: list[str] | None = None) -> None:
    """Print that the run stopped (which signal) and how to resume it."""
    reason = str(err) or "stopped by Ctrl-C"
    print(f"\ninterrupted ({reason}); the Ray processes of this run were stopped", file=sys.stderr)
    for line in hint or ["no round was checkpointed yet; run the same command again to start over"]:
        print(line, file=sys.stderr)


def _is_input_error(err: BaseException) -> bool:
    """Errors whose message is the whole story (bad input named by field); no traceback hint for them."""
    return isinstance(err, ValueError | FileNotFoundError) or (isinstance(err, OSError) and err.errno in DISK_ERRNOS)


def run_guarded(start: Callable[[], None], body: Callable[[], None], hint: Callable[[], list[str]],
                debug: bool = False) -> int:
    """Run ``start()`` (Ray's start-up) then ``body()`` with Ctrl-C/SIGTERM handling; returns the exit code.

    ``body`` runs under :func:`orchestrator.signals.stop_on_signals` (installed after ``start``, because
    ``ray.init`` installs its own SIGTERM handler); a Ray session started here is shut down afterwards in
    every case, so a local instance leaves no process behind. An interrupt prints ``hint()`` (how to resume) and returns
    ``128 + signum``; an error prints :func:`report_failure` with the hint and returns 1.
    """
    import ray

    from orchestrator.signals import as_interrupt, exit_code, stop_on_signals

    owned = not ray.is_initialized()  # a Ray session of the caller's (a notebook, a test) is left running
    try:
        try:
            start()
            with stop_on_signals():
                try:
                    body()
                finally:
                    if owned:
                        ray.shutdown()
        finally:
            if owned and ray.is_initialized():  # interrupted before the signal handlers were installed
                ray.shutdown()
    except KeyboardInterrupt as err:
        interrupt = as_interrupt(err)
        report_interrupt(interrupt, hint())
        return exit_code(interrupt)
    except Exception as err:  # noqa: BLE001 - every error ends in a message, the traceback only with --debug
        report_failure(err, hint(), debug)
        return 1
    return 0
