"""Endpoint health: active thresholds and passive ejection with back-off."""

from vocelio_contract.config import Endpoint, HealthCheck, PassiveHealth
from vocelio_proxy.policy.health import EndpointState, record_active_check, record_passive_result


def state() -> EndpointState:
    return EndpointState(endpoint=Endpoint(address="10.0.0.1", port=80), backend="b")


def test_the_first_active_result_decides_at_once() -> None:
    s = state()
    assert record_active_check(s, False, HealthCheck(unhealthy_threshold=3))
    assert s.active_healthy is False


def test_thresholds_debounce_later_flips() -> None:
    s, hc = state(), HealthCheck(healthy_threshold=2, unhealthy_threshold=3)
    record_active_check(s, True, hc)
    assert not record_active_check(s, False, hc)
    assert not record_active_check(s, False, hc)
    assert record_active_check(s, False, hc)
    assert s.active_healthy is False
    assert not record_active_check(s, True, hc)
    assert record_active_check(s, True, hc)
    assert s.active_healthy is True


def test_a_good_result_resets_a_bad_streak() -> None:
    s, hc = state(), HealthCheck(unhealthy_threshold=2)
    record_active_check(s, True, hc)
    record_active_check(s, False, hc)
    record_active_check(s, True, hc)
    record_active_check(s, False, hc)
    assert s.active_healthy is True


def test_consecutive_failures_eject_with_exponential_back_off() -> None:
    s, p = state(), PassiveHealth(consecutive_failures=2, base_ejection_s=10, max_ejection_s=25)
    now = 100.0
    assert not record_passive_result(s, False, now, p)
    assert record_passive_result(s, False, now, p)
    assert s.ejected_until == 110
    now = 111.0
    record_passive_result(s, False, now, p)
    assert record_passive_result(s, False, now, p)
    assert s.ejected_until == 131  # 20 s
    now = 132.0
    record_passive_result(s, False, now, p)
    record_passive_result(s, False, now, p)
    assert s.ejected_until == 157  # capped at 25 s


def test_successes_reset_the_failure_count() -> None:
    s, p = state(), PassiveHealth(consecutive_failures=3)
    for _ in range(5):
        record_passive_result(s, False, 0, p)
        record_passive_result(s, True, 0, p)
    assert s.ejected_until == 0
