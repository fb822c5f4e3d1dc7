"""What every benchmark records about the machine it ran on (the benchmark scripts import this file)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**extra: Any) -> dict[str, Any]:
    """Platform, CPU, cores, memory, UTC date and load average at start, plus ``extra`` fields."""
    import psutil

    return {"platform": platform.platform(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "loadavg_start": load_average(), "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
            **extra}


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, rounded (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
