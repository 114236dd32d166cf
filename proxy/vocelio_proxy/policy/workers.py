"""Pure decisions of the worker supervisor (`lifecycle.supervisor`): how many
workers `workers: auto` means (from the affinity mask and the cgroup CPU limit,
read by the caller), when a worker that exited is started again (exponential
backoff per worker, reset after a stable run) and when the supervisor gives up
(too many consecutive start failures), and the pod's readiness from each
worker's. No I/O: the supervisor reads files, clocks and processes and hands
the facts in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

#: First restart delay of a worker that died, doubled per consecutive crash up to the maximum.
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
#: A worker that ran this long before dying starts again from the minimum delay.
STABLE_AFTER_S = 60.0
#: Consecutive start failures (a replacement worker that exits before it is ready), over all
#: workers, after which the supervisor stops the pod: a crash loop Kubernetes can see.
MAX_START_FAILURES = 5


def cgroup_cpu_limit(cpu_max: str | None, cfs_quota_us: str | None = None,
                     cfs_period_us: str | None = None) -> float | None:
    """The CPU limit of a cgroup in CPUs, or None for no limit: cgroup v2 `cpu.max`
    ("max 100000" or "200000 100000"), else cgroup v1 `cpu.cfs_quota_us` and
    `cpu.cfs_period_us` (a quota of -1 is no limit). Text that does not parse is no limit."""
    if cpu_max is not None:
        parts = cpu_max.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    if cfs_quota_us is not None and cfs_period_us is not None:
        try:
            quota, period = int(cfs_quota_us.strip()), int(cfs_period_us.strip())
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def cpus_available(affinity: int, limit: float | None) -> int:
    """CPUs a process may use: the CPUs of its affinity mask, capped by the cgroup limit
    rounded up (1.5 CPUs of quota keep two workers busy at three quarters), at least 1."""
    count = max(1, affinity)
    if limit is not None:
        count = min(count, max(1, math.ceil(limit - 1e-9)))
    return count


def resolve_workers(setting: int | str, cpus: int) -> int:
    """The worker count of the `workers` setting: a number as it is, `auto` the CPUs available."""
    return max(1, cpus) if setting == "auto" else int(setting)


@dataclass
class RestartPolicy:
    """Per-worker restart backoff and the pod-wide start-failure bound. The supervisor
    calls `exited` when a worker process ends outside a shutdown and sleeps the delay it
    returns; `started` when a worker reports it is ready; `start_failed` when one exits
    before that (True: give up)."""

    min_s: float = RESTART_MIN_S
    max_s: float = RESTART_MAX_S
    stable_after_s: float = STABLE_AFTER_S
    max_start_failures: int = MAX_START_FAILURES
    _delays: dict[int, float] = field(default_factory=dict)
    consecutive_start_failures: int = 0

    def exited(self, worker: int, ran_for_s: float) -> float:
        """The delay before `worker` starts again after it ran for `ran_for_s` seconds."""
        delay = self._delays.get(worker, self.min_s)
        if ran_for_s >= self.stable_after_s:
            delay = self.min_s
        self._delays[worker] = min(delay * 2, self.max_s)
        return delay

    def started(self, worker: int) -> None:
        self.consecutive_start_failures = 0

    def start_failed(self, worker: int) -> bool:
        self.consecutive_start_failures += 1
        return self.consecutive_start_failures >= self.max_start_failures


@dataclass(frozen=True, slots=True)
class WorkerReadiness:
    """One worker as the supervisor sees it for `/readyz`: whether its process runs and
    what its own `/readyz` said (None: it did not answer)."""

    index: int
    running: bool
    ready: bool | None
    reason: str


def pod_readiness(draining: bool, workers: Sequence[WorkerReadiness]) -> tuple[bool, str]:
    """Ready only when the supervisor is not draining and every worker runs and is ready;
    the reason names the first worker that is not."""
    if draining:
        return False, "draining"
    for worker in sorted(workers, key=lambda w: w.index):
        if not worker.running:
            return False, f"worker {worker.index} is not running ({worker.reason})"
        if worker.ready is None:
            return False, f"worker {worker.index} does not answer ({worker.reason})"
        if not worker.ready:
            return False, f"worker {worker.index}: {worker.reason}"
    return True, "ready"
