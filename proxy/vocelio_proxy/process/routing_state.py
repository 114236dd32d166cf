"""The live routing state built from one `GatewayConfig`: the router and, per
service, its balancer, breaker and retry budget. `build_runtime` carries health
and breaker state over from the previous runtime so a reload does not reset
them. Pure (no I/O); owned by the application and swapped atomically on reload."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from vocelio_contract.config import GatewayConfig, Service
from vocelio_contract.paths import DEFAULT_POLICY, PathPolicy
from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.balancing import ServiceBalancer
from vocelio_proxy.policy.breakers import Breaker
from vocelio_proxy.policy.retries import RetryBudget
from vocelio_proxy.policy.routing import Router


@dataclass(slots=True)
class ServiceRuntime:
    service: Service
    balancer: ServiceBalancer
    breaker: Breaker
    budget: RetryBudget
    metric_children: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class GatewayRuntime:
    config: GatewayConfig
    router: Router
    services: dict[str, ServiceRuntime]


def default_probe_timeout(service: Service) -> float:
    """How long a half-open probe may hold its slot unless configured: the longest a
    request may wait for its answer head (the deadline) plus one connect as slack."""
    return service.timeouts.request_s + service.timeouts.connect_s


def build_runtime(config: GatewayConfig, clock: Clock, previous: GatewayRuntime | None = None,
                  rng: random.Random | None = None, path_policy: PathPolicy = DEFAULT_POLICY) -> GatewayRuntime:
    services: dict[str, ServiceRuntime] = {}
    for svc in config.services:
        old = previous.services.get(svc.id) if previous else None
        balancer = ServiceBalancer(svc, clock, rng, previous=old.balancer if old else None)
        probe_timeout_s = default_probe_timeout(svc)
        if old and old.service.circuit_breaker == svc.circuit_breaker:
            breaker = old.breaker
            breaker.probe_timeout_s = svc.circuit_breaker.probe_timeout_s or probe_timeout_s
        else:
            breaker = Breaker(svc.circuit_breaker, clock, probe_timeout_s)
        budget = old.budget if old and old.service.retry == svc.retry else RetryBudget(svc.retry, clock)
        services[svc.id] = ServiceRuntime(svc, balancer, breaker, budget)
    return GatewayRuntime(config, Router.build(config.services, path_policy), services)
