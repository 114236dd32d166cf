"""The pure parts of the worker supervisor: how many CPUs `workers: auto` means
(affinity capped by the cgroup CPU limit, v2 and v1 files), the restart backoff
and the start-failure bound, the pod's readiness from its workers', and the
merge of the workers' metrics into one exposition for the pod."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from vocelio_proxy.policy.workers import (
    RestartPolicy,
    WorkerReadiness,
    cgroup_cpu_limit,
    cpus_available,
    pod_readiness,
    resolve_workers,
)
from vocelio_proxy.process.workers import available_cpus, merge_expositions
from vocelio_proxy.settings import ProxySettings


def test_a_cgroup_v2_quota_is_a_limit_in_cpus_and_max_is_none() -> None:
    assert cgroup_cpu_limit("150000 100000\n") == 1.5
    assert cgroup_cpu_limit("max 100000\n") is None
    assert cgroup_cpu_limit("garbage") is None


def test_a_cgroup_v1_quota_of_minus_one_is_no_limit() -> None:
    assert cgroup_cpu_limit(None, "-1\n", "100000\n") is None
    assert cgroup_cpu_limit(None, "300000\n", "100000\n") == 3.0


def test_auto_is_the_affinity_capped_by_the_limit_rounded_up() -> None:
    assert cpus_available(8, None) == 8
    assert cpus_available(8, 1.5) == 2
    assert cpus_available(2, 4.0) == 2
    assert cpus_available(8, 0.25) == 1
    assert resolve_workers("auto", 3) == 3
    assert resolve_workers(4, 1) == 4


def test_available_cpus_reads_the_tightest_limit_on_the_cgroup_v2_path(tmp_path: Path) -> None:
    (tmp_path / "pod" / "ctr").mkdir(parents=True)
    (tmp_path / "pod" / "cpu.max").write_text("100000 100000\n")  # one CPU on the pod
    (tmp_path / "pod" / "ctr" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/pod/ctr\n")
    assert available_cpus(tmp_path, proc) == 1
    (tmp_path / "pod" / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path, proc) == len(os.sched_getaffinity(0))


def test_available_cpus_reads_a_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu" / "kubepods").mkdir(parents=True)
    (tmp_path / "cpu" / "kubepods" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "kubepods" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("3:cpuacct:/kubepods\n1:cpu:/kubepods\n")
    assert available_cpus(tmp_path, proc) == 1


def test_restart_delays_double_per_crash_and_start_again_after_a_stable_run() -> None:
    policy = RestartPolicy(min_s=0.5, max_s=4.0, stable_after_s=60.0)
    delays = [policy.exited(0, 1.0) for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.exited(1, 1.0) == 0.5  # per worker
    assert policy.exited(0, 61.0) == 0.5


def test_the_supervisor_gives_up_after_consecutive_start_failures_only() -> None:
    policy = RestartPolicy(max_start_failures=3)
    assert not policy.start_failed(0)
    assert not policy.start_failed(1)
    policy.started(1)
    assert not policy.start_failed(0)
    assert not policy.start_failed(0)
    assert policy.start_failed(1)


def test_the_pod_is_ready_only_when_every_worker_is() -> None:
    ok = WorkerReadiness(0, True, True, "ready")
    assert pod_readiness(False, [ok, WorkerReadiness(1, True, True, "ready")]) == (True, "ready")
    ready, reason = pod_readiness(False, [ok, WorkerReadiness(1, True, False, "no configuration loaded yet")])
    assert not ready
    assert reason == "worker 1: no configuration loaded yet"
    ready, reason = pod_readiness(False, [ok, WorkerReadiness(1, False, None, "restarting")])
    assert not ready
    assert "worker 1 is not running" in reason
    ready, reason = pod_readiness(False, [ok, WorkerReadiness(1, True, None, "running")])
    assert not ready
    assert "does not answer" in reason
    assert pod_readiness(True, [ok]) == (False, "draining")


WORKER = """# HELP vocelio_requests_total Requests answered.
# TYPE vocelio_requests_total counter
vocelio_requests_total{{service="a",code="200"}} {a}
vocelio_requests_total{{service="q\\"x",code="200"}} 1.0
# HELP vocelio_requests_in_flight Requests being served by this process.
# TYPE vocelio_requests_in_flight gauge
vocelio_requests_in_flight {inflight}
# HELP vocelio_request_duration_seconds Time.
# TYPE vocelio_request_duration_seconds histogram
vocelio_request_duration_seconds_bucket{{service="a",le="0.1"}} {a}
vocelio_request_duration_seconds_bucket{{service="a",le="+Inf"}} {a}
vocelio_request_duration_seconds_count{{service="a"}} {a}
vocelio_request_duration_seconds_sum{{service="a"}} 0.5
"""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_the_merged_metrics_label_each_worker_and_sum_in_flight_for_the_pod() -> None:
    merged = merge_expositions([(0, WORKER.format(a=3, inflight=5)), (1, WORKER.format(a=4, inflight=2))],
                               ['# TYPE vocelio_workers gauge', 'vocelio_workers 2'])
    samples = _samples(merged)
    total = sum(v for (name, labels), v in samples.items()
                if name == "vocelio_requests_total" and ("service", "a") in labels)
    assert total == 7
    assert samples[("vocelio_requests_total", (("code", "200"), ("service", "a"), ("worker", "1")))] == 4
    assert samples[("vocelio_requests_total", (("code", "200"), ("service", 'q"x'), ("worker", "0")))] == 1
    # one series per pod for the HPA, the supervisor's scrape (1 per worker) taken off
    assert samples[("vocelio_requests_in_flight", ())] == (5 - 1) + (2 - 1)
    assert samples[("vocelio_worker_requests_in_flight", (("worker", "0"),))] == 4
    assert samples[("vocelio_request_duration_seconds_count", (("service", "a"), ("worker", "0")))] == 3
    assert samples[("vocelio_workers", ())] == 2
    assert merged.count("# TYPE vocelio_requests_total counter") == 1


def test_workers_above_one_need_the_admin_listener() -> None:
    with pytest.raises(ValidationError, match=r"needs admin\.port"):
        ProxySettings(workers=2)
    assert ProxySettings(workers=2, admin={"port": 0}).workers == 2
    assert ProxySettings(workers="auto", admin={"port": 0}).workers == "auto"
    assert ProxySettings().workers == 1


def test_a_worker_hands_its_start_error_to_the_supervisor_and_prints_later_ones_itself() -> None:
    from vocelio_proxy.lifecycle.worker import WorkerChannel, WorkerRole

    read_fd, write_fd = os.pipe()
    channel = WorkerChannel(WorkerRole.parse(f"1:{write_fd}:{os.getppid()}"))
    assert channel.failed("invalid settings: port: too big", 2)
    with os.fdopen(read_fd, "r") as pipe:
        assert json.loads(pipe.readline()) == {"event": "error", "message": "invalid settings: port: too big",
                                              "status": 2}

        class Started:
            port = 8080
            admin_port = 9090

        channel.ready(Started())  # type: ignore[arg-type]
        assert json.loads(pipe.readline())["event"] == "ready"
        assert not channel.failed("a crash after the start", 1)  # the worker prints it: the supervisor reads no more
    with pytest.raises(ValueError, match="is not INDEX:FD:PARENT"):
        WorkerRole.parse("one:two")


def test_the_supervisors_metrics_are_documented_with_their_labels() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations" / "observability.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in doc.splitlines() if line.startswith("| `vocelio_")}
    own = ['# TYPE vocelio_workers gauge', 'vocelio_workers 2', '# TYPE vocelio_worker_up gauge',
           'vocelio_worker_up{worker="0"} 1', '# TYPE vocelio_worker_restarts_total counter',
           'vocelio_worker_restarts_total{worker="0"} 0']
    merged = merge_expositions([(0, WORKER.format(a=1, inflight=1))], own)
    for family in text_string_to_metric_families(merged):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in rows, name
        for label in {k for s in family.samples for k in s.labels} - {"le"}:
            assert f"`{label}`" in rows[name] or label == "worker", (name, label)
    assert "gains a\n`worker` label" in doc


def test_a_worker_value_of_nan_or_infinity_merges_and_a_worker_text_that_does_not_parse_loses_only_itself() -> None:
    """Prometheus values include NaN and ±Inf; one worker's odd or broken exposition must never
    turn the whole pod's /metrics into an error (the other workers' series stay)."""
    odd = ("# TYPE vocelio_g gauge\nvocelio_g{k=\"nan\"} NaN\nvocelio_g{k=\"inf\"} +Inf\n"
           "vocelio_g{k=\"minf\"} -Inf\nvocelio_g{k=\"big\"} 1e300\n")
    broken = "# TYPE vocelio_g gauge\nvocelio_g{k=\"x} 1\n"
    merged = merge_expositions([(0, odd), (1, broken), (2, WORKER.format(a=3, inflight=1))])
    samples = _samples(merged)
    nan = samples[("vocelio_g", (("k", "nan"), ("worker", "0")))]
    assert nan != nan  # NaN
    assert samples[("vocelio_g", (("k", "inf"), ("worker", "0")))] == float("inf")
    assert samples[("vocelio_g", (("k", "minf"), ("worker", "0")))] == float("-inf")
    assert samples[("vocelio_g", (("k", "big"), ("worker", "0")))] == 1e300
    assert samples[("vocelio_requests_total", (("code", "200"), ("service", "a"), ("worker", "2")))] == 3
    assert not any(("worker", "1") in labels for _, labels in samples)
    assert "worker 1" in merged  # the pod's exposition says which worker's text was left out
