"""Host resource checks for `/health` (memory, cpu, disk) from psutil. Called by
the health endpoint; thresholds are fixed here and documented in the README."""

from __future__ import annotations

from typing import Any

import psutil

_WARN = 90.0


def resource_checks(disk_path: str = "/") -> dict[str, dict[str, Any]]:
    memory = psutil.virtual_memory().percent
    cpu = psutil.cpu_percent(interval=None)
    disk = psutil.disk_usage(disk_path).percent

    def status(value: float) -> str:
        return "healthy" if value < _WARN else "degraded"

    return {
        "memory": {"status": status(memory), "usage_percent": round(memory, 1)},
        "cpu": {"status": status(cpu), "usage_percent": round(cpu, 1)},
        "disk": {"status": status(disk), "usage_percent": round(disk, 1)},
    }


def human_duration(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    if days:
        return f"{days} day{'s' if days != 1 else ''}, {clock}"
    return clock
