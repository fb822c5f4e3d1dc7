"""Results of remote calls with the project's own exceptions, not Ray's wrappers around them.

A method of the Driver actor that raises (e.g. :class:`orchestrator.pool.ClientJobError`, "client 3 in round 2
failed: ...") reaches the caller as a ``RayTaskError`` whose text is a remote stack dump. :func:`get`
re-raises the original exception (every project exception survives pickling, ``tests/test_errors.py``),
chained to Ray's error so ``--debug`` still shows the remote traceback. An actor that died
(``ActorDiedError``: killed, out of memory, its node lost, or its ``__init__`` raised) becomes
:class:`RemoteActorDied`, whose message is one line: the root cause where Ray's text names one.
"""

from __future__ import annotations

import re
from typing import Any


class RemoteActorDied(RuntimeError):
    """An actor of the run (the Driver) died: the root cause in one line, when Ray's message names one."""


def get(refs: Any) -> Any:
    """``ray.get(refs)``, re-raising a remote exception as itself and a dead actor as :class:`RemoteActorDied`."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return ray.get(refs)
    except RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException) and not isinstance(cause, RayTaskError):
            raise cause from err
        raise
    except RayActorError as err:
        raise RemoteActorDied(root_cause(err)) from err


def root_cause(err: BaseException) -> str:
    """``Type: message`` of the last exception line of a Ray error text (its root cause), else its first line.

    Ray's text of a failed remote call holds the remote traceback; its last ``SomeError: message`` line is
    the exception that started it.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b[^:\s]*: ", ln)]
    if causes:
        name, _, message = causes[-1].partition(": ")
        return f"{name.rsplit('.', 1)[-1]}: {message}"
    return lines[0] if lines else type(err).__name__
