"""What the worker supervisor (`lifecycle.supervisor`) reads from the host and
how it writes the pod's metrics: `available_cpus` (affinity mask and cgroup CPU
limit, for `workers: auto`) and `merge_expositions`, which turns the Prometheus
text of every worker into one exposition for the pod.

The merge is the metrics contract of a multi-worker pod
(docs/operations/workers.md): every worker series keeps its name and labels and
gains `worker="<index>"`, so sums over a pod are sums over its workers; the one
exception is `vocelio_requests_in_flight`, the HPA's per-pod custom metric,
which is written once, without a `worker` label, as the sum over the workers
(each worker's own figure is `vocelio_worker_requests_in_flight{worker}`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from vocelio_proxy.policy.workers import cgroup_cpu_limit, cpus_available

IN_FLIGHT = "vocelio_requests_in_flight"  # the HPA's metric (README: HPA adapter rule)
WORKER_IN_FLIGHT = "vocelio_worker_requests_in_flight"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_limit(root: Path, proc_self_cgroup: Path) -> float | None:
    """The tightest CPU limit on this process's cgroup path (v2: every level up to the
    mount; v1: the cpu controller's directory), None when there is none."""
    text = _read(proc_self_cgroup) or ""
    limits: list[float] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2
            here = root / path.lstrip("/")
            while True:
                limit = cgroup_cpu_limit(_read(here / "cpu.max") or "max")
                if limit is not None:
                    limits.append(limit)
                if here == root or root not in here.parents:
                    break
                here = here.parent
        elif "cpu" in controllers.split(","):  # cgroup v1
            for base in (root / "cpu,cpuacct", root / "cpu"):
                for here in (base / path.lstrip("/"), base):
                    limit = cgroup_cpu_limit(None, _read(here / "cpu.cfs_quota_us"), _read(here / "cpu.cfs_period_us"))
                    if limit is not None:
                        limits.append(limit)
    return min(limits) if limits else None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"),
                   proc_self_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may use: its affinity mask (taskset, cpuset) capped by the
    cgroup CPU quota (a Kubernetes CPU limit), rounded up, at least 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    return cpus_available(affinity, _cgroup_limit(cgroup_root, proc_self_cgroup))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    """A sample value in the text format, including the ones Prometheus allows that have no
    integer form (NaN, +Inf, -Inf)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(float(value))


_TYPES = {"counter", "gauge", "histogram", "summary"}


def merge_expositions(workers: Sequence[tuple[int, str]], own: Iterable[str] = (), scrape_in_flight: int = 1) -> str:
    """One exposition (text format 0.0.4) from the workers' (`index`, text) and the
    supervisor's own lines (`own`, already in the text format). A worker counts the
    supervisor's scrape among its requests in flight: `scrape_in_flight` is taken off
    each worker's figure so that the pod's counts the requests its clients sent."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    in_flight_total = 0.0
    in_flight_rows: list[str] = []
    skipped: list[str] = []
    for index, text in sorted(workers):
        worker = str(index)
        try:
            # Parsed whole before any of it is used: a text that fails half-way adds nothing.
            parsed = list(text_string_to_metric_families(text))
        except Exception as exc:  # the parser's errors are not one type; one worker must not fail the pod's scrape
            skipped.append(f"# worker {worker}: its metrics were left out of this scrape ({type(exc).__name__})")
            continue
        for family in parsed:
            if family.name == IN_FLIGHT:
                for sample in family.samples:
                    value = max(0.0, sample.value - scrape_in_flight)
                    in_flight_total += value
                    in_flight_rows.append(f'{WORKER_IN_FLIGHT}{{worker="{worker}"}} {_number(value)}')
                continue
            kind = family.type if family.type in _TYPES else "untyped"
            name = family.name + "_total" if kind == "counter" else family.name
            rows = families.setdefault(name, (kind, family.documentation, []))[2]
            for sample in family.samples:
                rows.append(f"{sample.name}{_labels({**sample.labels, 'worker': worker})} {_number(sample.value)}")
    out: list[str] = list(own) + skipped
    for name, (kind, doc, rows) in families.items():
        out.append(f"# HELP {name} {doc.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(rows)
    out.append(f"# HELP {IN_FLIGHT} Requests being served by this pod (the sum over its workers).")
    out.append(f"# TYPE {IN_FLIGHT} gauge")
    out.append(f"{IN_FLIGHT} {_number(in_flight_total)}")
    out.append(f"# HELP {WORKER_IN_FLIGHT} Requests being served by one worker process.")
    out.append(f"# TYPE {WORKER_IN_FLIGHT} gauge")
    out.extend(in_flight_rows)
    return "\n".join(out) + "\n"
