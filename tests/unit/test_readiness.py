"""The readiness policy."""

from vocelio_proxy.policy.readiness import ReadinessFacts, readiness
from vocelio_proxy.settings import ReadinessPolicy


def facts(**kw: object) -> ReadinessFacts:
    base: dict[str, object] = {"draining": False, "config_loaded": True, "health_round_done": True, "services": 3,
            "services_with_open_breaker": 0}
    base.update(kw)
    return ReadinessFacts(**base)  # type: ignore[arg-type]


def test_ready_once_config_is_loaded_and_health_checked() -> None:
    assert readiness(ReadinessPolicy(), facts()) == (True, "ready")
    assert not readiness(ReadinessPolicy(), facts(config_loaded=False))[0]
    assert not readiness(ReadinessPolicy(), facts(health_round_done=False))[0]


def test_draining_is_never_ready() -> None:
    assert readiness(ReadinessPolicy(), facts(draining=True)) == (False, "draining")


def test_one_open_breaker_never_takes_the_pod_out_by_default() -> None:
    assert readiness(ReadinessPolicy(), facts(services_with_open_breaker=3))[0]
    strict = ReadinessPolicy(unready_when_all_breakers_open=True)
    assert readiness(strict, facts(services_with_open_breaker=2))[0]
    assert not readiness(strict, facts(services_with_open_breaker=3))[0]
