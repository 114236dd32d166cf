"""Endpoint selection for one service: smooth weighted round-robin (nginx's
algorithm) or least-request by power of two choices, over the endpoints that
are ready, actively healthy and not ejected, with a panic threshold. Several
backends of one service split traffic by backend weight first (canary).
Pure; the clock and the random source are injected."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from vocelio_contract.config import Service
from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.health import EndpointState


class _Weighted(Protocol):
    current_weight: int


_T = TypeVar("_T", bound="_Weighted")


@dataclass(slots=True)
class BackendState:
    name: str
    weight: int
    endpoints: list[EndpointState] = field(default_factory=list)
    current_weight: int = 0


def smooth_weighted_pick(items: Sequence[_T], weights: Sequence[int]) -> _T:
    """One step of smooth weighted round-robin; mutates `current_weight`."""
    total = 0
    best: _T | None = None
    for item, weight in zip(items, weights, strict=True):
        item.current_weight += weight
        total += weight
        if best is None or item.current_weight > best.current_weight:
            best = item
    assert best is not None
    best.current_weight -= total
    return best


class ServiceBalancer:
    def __init__(self, service: Service, clock: Clock, rng: random.Random | None = None,
                 previous: ServiceBalancer | None = None) -> None:
        self.service = service
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - spreads load, guards nothing
        old: dict[tuple[str, str], EndpointState] = {}
        if previous is not None:
            old = {(e.backend, e.key): e for e in previous.endpoints()}
        self.backends: list[BackendState] = []
        for backend in service.backends:
            states = []
            for ep in backend.endpoints:
                prior = old.get((backend.name, ep.key))
                if prior is not None:
                    prior.endpoint = ep
                    states.append(prior)
                else:
                    states.append(EndpointState(endpoint=ep, backend=backend.name))
            self.backends.append(BackendState(backend.name, backend.weight, states))

    def endpoints(self) -> Iterable[EndpointState]:
        for backend in self.backends:
            yield from backend.endpoints

    def counts(self) -> tuple[int, int]:
        """(healthy, total) over endpoints that discovery reports ready with weight."""
        now = self._clock.monotonic()
        total = healthy = 0
        for ep in self.endpoints():
            if ep.endpoint.ready and ep.endpoint.weight > 0:
                total += 1
                healthy += ep.available(now)
        return healthy, total

    def in_panic(self) -> bool:
        healthy, total = self.counts()
        return total > 0 and healthy * 100 < self.service.load_balancing.panic_threshold_percent * total

    def pick(self, exclude: frozenset[str] = frozenset()) -> EndpointState | None:
        # One pass over the endpoints collects both the healthy candidates and the ready
        # ones, and the counts that decide the panic threshold (this runs per request).
        now = self._clock.monotonic()
        total = healthy = 0
        rows: list[tuple[BackendState, list[EndpointState], list[EndpointState]]] = []
        for backend in self.backends:
            available: list[EndpointState] = []
            ready: list[EndpointState] = []
            for ep in backend.endpoints:
                if not ep.endpoint.ready or ep.endpoint.weight <= 0:
                    continue
                up = ep.available(now)
                total += 1
                healthy += up
                if backend.weight > 0 and ep.key not in exclude:
                    ready.append(ep)
                    if up:
                        available.append(ep)
            rows.append((backend, available, ready))
        panic = total > 0 and healthy * 100 < self.service.load_balancing.panic_threshold_percent * total
        choices = [(b, eps) for b, available, ready in rows if (eps := ready if panic else available)]
        if not choices:
            return None
        if len(choices) == 1:
            candidates = choices[0][1]
        else:
            chosen = smooth_weighted_pick([b for b, _ in choices], [b.weight for b, _ in choices])
            candidates = next(eps for b, eps in choices if b is chosen)
        if len(candidates) == 1:
            return candidates[0]
        if self.service.load_balancing.policy == "least-request":
            a, b = self._rng.sample(candidates, 2)
            # Compare in-flight per unit of weight; ties go to the heavier endpoint.
            score_a = (a.in_flight + 1) / a.endpoint.weight
            score_b = (b.in_flight + 1) / b.endpoint.weight
            return a if score_a <= score_b else b
        return smooth_weighted_pick(candidates, [ep.endpoint.weight for ep in candidates])
