"""Fault injection for tests: make one client's job fail inside its real worker, by an environment variable.

``HETFEDLORA_FAIL_CLIENT="<client>:<round>"`` (``round`` 1-based, as the logs count rounds) makes
:meth:`workers.actor.ClientWorker.train` raise :class:`InjectedFault` for that client in that round, before
any training. Everything after it is the real failure path (the worker's exception, the pool's
``ClientJobError``, the Driver actor, the trial), which is what the tests of error propagation check. Worker
processes read the variable from their environment (set it before Ray starts, or through the actors'
``runtime_env``). Unset (the normal case), it costs one dictionary lookup per job.
"""

from __future__ import annotations

import os

ENV = "HETFEDLORA_FAIL_CLIENT"


class InjectedFault(RuntimeError):
    """The failure asked for by ``HETFEDLORA_FAIL_CLIENT``."""


def check_injected_fault(client_id: int, round_idx: int) -> None:
    """Raise :class:`InjectedFault` when ``HETFEDLORA_FAIL_CLIENT`` names this client and 0-based round."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    client, _, round_text = spec.partition(":")
    if int(client) == client_id and int(round_text) == round_idx + 1:
        raise InjectedFault(f"injected fault ({ENV}={spec}): client {client_id} fails in round {round_idx + 1}")
