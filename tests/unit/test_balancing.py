"""Endpoint selection: smooth weighted round-robin, least-request, canary
weights across backends, health filtering and the panic threshold."""

import random
from collections import Counter

from vocelio_contract.config import Backend, Endpoint, LoadBalancing, Service
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.policy.balancing import ServiceBalancer


def service(*backends: Backend, policy: str = "round-robin", panic: int = 50) -> Service:
    return Service(name="s", prefixes=["/s"], backends=list(backends),
                   load_balancing=LoadBalancing(policy=policy, panic_threshold_percent=panic))


def ep(n: int, weight: int = 1, ready: bool = True) -> Endpoint:
    return Endpoint(address=f"10.0.0.{n}", port=80, weight=weight, ready=ready)


def picks(balancer: ServiceBalancer, n: int) -> list[str]:
    out = []
    for _ in range(n):
        chosen = balancer.pick()
        assert chosen is not None
        out.append(chosen.endpoint.address)
    return out


def test_smooth_weighted_round_robin_interleaves_by_weight() -> None:
    b = ServiceBalancer(service(Backend(name="b", endpoints=[ep(1, 5), ep(2, 1), ep(3, 1)])), ManualClock())
    sequence = picks(b, 7)
    # nginx's smooth WRR: a a b a c a a — the heavy endpoint never runs more than needed in a row.
    assert sequence == ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3", "10.0.0.1", "10.0.0.1"]


def test_backend_weights_split_traffic_for_a_canary() -> None:
    b = ServiceBalancer(service(Backend(name="stable", weight=90, endpoints=[ep(1), ep(2)]),
                                Backend(name="canary", weight=10, endpoints=[ep(9)])), ManualClock())
    counts = Counter(picks(b, 1000))
    assert counts["10.0.0.9"] == 100
    assert counts["10.0.0.1"] == counts["10.0.0.2"] == 450


def test_unready_unhealthy_and_ejected_endpoints_get_no_traffic() -> None:
    clock = ManualClock()
    b = ServiceBalancer(service(Backend(name="b", endpoints=[ep(1), ep(2), ep(3, ready=False), ep(4)]),
                                panic=0), clock)
    states = {e.endpoint.address: e for e in b.endpoints()}
    states["10.0.0.2"].active_healthy = False
    states["10.0.0.4"].ejected_until = clock.now + 10
    assert set(picks(b, 10)) == {"10.0.0.1"}
    clock.advance(11)
    assert set(picks(b, 10)) == {"10.0.0.1", "10.0.0.4"}


def test_panic_threshold_spreads_traffic_over_all_endpoints_when_most_are_unhealthy() -> None:
    b = ServiceBalancer(service(Backend(name="b", endpoints=[ep(1), ep(2), ep(3), ep(4)]), panic=50), ManualClock())
    states = list(b.endpoints())
    for s in states[:3]:
        s.active_healthy = False
    assert b.in_panic()
    assert set(picks(b, 8)) == {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}


def test_no_endpoint_yields_none() -> None:
    assert ServiceBalancer(service(Backend(name="b", endpoints=[])), ManualClock()).pick() is None


def test_retries_exclude_endpoints_already_tried() -> None:
    b = ServiceBalancer(service(Backend(name="b", endpoints=[ep(1), ep(2)])), ManualClock())
    for _ in range(5):
        chosen = b.pick(frozenset({"10.0.0.1:80"}))
        assert chosen is not None
        assert chosen.endpoint.address == "10.0.0.2"


def test_least_request_prefers_the_less_loaded_of_two_choices() -> None:
    b = ServiceBalancer(service(Backend(name="b", endpoints=[ep(1), ep(2)]), policy="least-request"),
                        ManualClock(), rng=random.Random(7))
    states = {e.endpoint.address: e for e in b.endpoints()}
    states["10.0.0.1"].in_flight = 10
    assert set(picks(b, 20)) == {"10.0.0.2"}


def test_health_state_survives_a_config_rebuild() -> None:
    clock = ManualClock()
    first = ServiceBalancer(service(Backend(name="b", endpoints=[ep(1), ep(2)])), clock)
    next(iter(first.endpoints())).active_healthy = False
    second = ServiceBalancer(service(Backend(name="b", endpoints=[ep(1), ep(2), ep(3)])), clock, previous=first)
    states = {e.endpoint.address: e for e in second.endpoints()}
    assert states["10.0.0.1"].active_healthy is False
    assert states["10.0.0.3"].active_healthy is True
