"""Ray for the tests that need it: one fresh local instance per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator


def local_ray(num_cpus: int = 2, **options) -> Iterator[None]:
    """Start a local Ray instance for a module's tests (a generator for a module-scoped fixture), then stop it.

    ``address="local"`` always starts a new instance: a plain ``ray.init()`` would join a ``ray start``
    cluster running on the same machine and refuse ``num_cpus``.
    """
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    if ray.is_initialized():  # another module's instance: this module gets the resources it asks for
        ray.shutdown()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False, **options)
    yield
    ray.shutdown()
