"""The gateway's own HTTP endpoints: `/`, `/health`, `/livez`, `/readyz`,
`/status`, `/metrics`, `/openapi.json` and `/docs`, each a function from a
`GatewayView` (settings, state, clock, metrics: handed over by the composition
root) to a `Reply`. The request pipeline (`handling`) answers
these paths before routing, so no VocelioService can shadow them (the
renderer also rejects those prefixes)."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vocelio_contract.reserved import RESERVED_PATHS
from vocelio_proxy import __version__
from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.readiness import ReadinessFacts, readiness
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.process.sysinfo import human_duration, resource_checks
from vocelio_proxy.settings import ProxySettings

_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
_JSON = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class GatewayView:
    """What the gateway's own endpoints read, passed in explicitly."""

    settings: ProxySettings
    state: GatewayState
    clock: Clock
    metrics: ProxyMetrics


def _json(data: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode())


def handle_root(view: GatewayView) -> Reply:
    state = view.state
    rt = state.runtime
    return _json({
        "name": "Vocelio Gateway",
        "version": __version__,
        "config_version": rt.config.version if rt else None,
        "services": len(rt.services) if rt else 0,
        "endpoints": {p: p for p in RESERVED_PATHS if p != "/"},
    })


def handle_livez(view: GatewayView) -> Reply:
    return _json({"status": "alive"})


def readiness_of(view: GatewayView) -> tuple[bool, str]:
    state = view.state
    rt = state.runtime
    open_count = 0
    total = 0
    if rt is not None:
        total = len(rt.services)
        open_count = sum(1 for s in rt.services.values() if s.breaker.state.value != "closed")
    facts = ReadinessFacts(
        draining=state.draining, config_loaded=rt is not None, health_round_done=state.health_round_done,
        services=total, services_with_open_breaker=open_count,
    )
    return readiness(view.settings.readiness, facts)


def handle_readyz(view: GatewayView) -> Reply:
    ready, reason = readiness_of(view)
    return _json({"ready": ready, "reason": reason}, 200 if ready else 503)


def _services_summary(view: GatewayView) -> dict[str, Any]:
    rt = view.state.runtime
    services = list(rt.services.values()) if rt else []
    healthy_total = 0
    instance_total = 0
    healthy_services = 0
    latencies: list[float] = []
    for svc in services:
        healthy, total = svc.balancer.counts()
        healthy_total += healthy
        instance_total += total
        healthy_services += 1 if healthy > 0 and svc.breaker.state.value == "closed" else 0
        latencies.extend(ep.last_check_ms for ep in svc.balancer.endpoints() if ep.checked)
    overall = round(100.0 * healthy_services / len(services), 1) if services else 100.0
    return {
        "summary": {
            "total_services": len(services),
            "healthy_services": healthy_services,
            "healthy_instances": healthy_total,
            "total_instances": instance_total,
            "overall_health": overall,
        },
        "_latency": round(sum(latencies) / len(latencies), 3) if latencies else 0.0,
    }


def handle_health(view: GatewayView) -> Reply:
    state = view.state
    clock = view.clock
    uptime = clock.monotonic() - state.started_at
    services = _services_summary(view)
    latency = services.pop("_latency")
    checks = resource_checks()
    checks["network"] = {"status": "healthy" if latency < 1000 else "degraded", "response_time_ms": latency}
    gateway_status = "healthy" if all(c["status"] == "healthy" for c in checks.values()) else "degraded"
    if state.runtime is None:
        gateway_status = "unhealthy"
    overall = services["summary"]["overall_health"]
    status = gateway_status if gateway_status != "healthy" else ("healthy" if overall == 100.0 else "degraded")
    body = {
        "status": status,
        "timestamp": round(clock.wall(), 3),
        "gateway": {
            "status": gateway_status,
            "uptime": {"seconds": int(uptime), "human_readable": human_duration(uptime)},
            "checks": checks,
        },
        "services": services,
    }
    return _json(body, 503 if gateway_status == "unhealthy" else 200)


def handle_status(view: GatewayView) -> Reply:
    state = view.state
    rt = state.runtime
    now = time.monotonic()
    services = []
    if rt is not None:
        for sid, svc in sorted(rt.services.items()):
            healthy, total = svc.balancer.counts()
            services.append({
                "id": sid,
                "name": svc.service.name,
                "prefixes": svc.service.prefixes,
                "hosts": svc.service.hosts,
                "breaker": svc.breaker.state.value,
                "healthy_endpoints": healthy,
                "total_endpoints": total,
                "panic": svc.balancer.in_panic(),
                "endpoints": [
                    {
                        "backend": ep.backend, "address": ep.endpoint.address, "port": ep.endpoint.port,
                        "name": ep.endpoint.name, "weight": ep.endpoint.weight, "ready": ep.endpoint.ready,
                        "healthy": ep.active_healthy, "checked": ep.checked, "ejected": ep.ejected(now),
                        "in_flight": ep.in_flight, "last_check_error": ep.last_check_error or None,
                    }
                    for ep in svc.balancer.endpoints()
                ],
            })
    ready, reason = readiness_of(view)
    return _json({
        "ready": ready,
        "readiness_reason": reason,
        "draining": state.draining,
        "config": {
            "version": rt.config.version if rt else None,
            "hash": rt.config.hash if rt else None,
            "loaded_at": state.loaded_at or None,
            "reloads_applied": state.reloads_ok,
            "reloads_failed": state.reloads_failed,
            "last_error": state.last_error or None,
            "last_error_at": state.last_error_at or None,
            "source_problems": state.source_problems,
            "kept_last_good": state.kept_last_good,
            # The reload loop's supervision; `watchers` adds the source's own loops (API watch).
            "watcher": watcher.as_dict() if (watcher := state.watchers.get("config-watch")) else None,
            "watchers": {name: w.as_dict() for name, w in sorted(state.watchers.items())},
        },
        # The TLS listener's certificates (docs/tls.md): serving serial, notAfter, last problem.
        "tls": state.tls_status() if state.tls_status is not None else None,
        "services": services,
    })


def handle_metrics(view: GatewayView) -> Reply:
    registry = view.metrics.registry
    return Reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)


def openapi_document() -> dict[str, Any]:
    def op(summary: str, description: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "description": description,
                        "responses": {"200": {"description": "OK"}}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "Vocelio Gateway", "version": __version__},
        "paths": {
            "/": op("Gateway information", "Name, version and the applied config version."),
            "/health": op("Health", "Gateway resource checks and service summary."),
            "/livez": op("Liveness", "200 while the process serves HTTP."),
            "/readyz": op("Readiness", "200 when the readiness policy is met, else 503 with a reason."),
            "/status": op("Status", "Per service: endpoints, health, breaker state; config version."),
            "/metrics": op("Metrics", "Prometheus exposition."),
            "/docs": op("Docs", "This document as a page, with the route table."),
        },
    }


def handle_openapi(view: GatewayView) -> Reply:
    return _json(openapi_document())


def handle_docs(view: GatewayView) -> Reply:
    rt = view.state.runtime
    rows = []
    if rt is not None:
        for svc in sorted(rt.config.services, key=lambda s: (s.hosts, s.prefixes[0])):
            rows.append(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                    html.escape(svc.name), html.escape(", ".join(svc.hosts) or "(any other host)"),
                    html.escape(", ".join(svc.prefixes)), html.escape(svc.auth.mode), html.escape(svc.rewrite or "")))
    own = "".join(
        f"<tr><td><code>GET {html.escape(p)}</code></td><td>{html.escape(v['get']['description'])}</td></tr>"
        for p, v in openapi_document()["paths"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Vocelio Gateway</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:.3em 1em;border-bottom:1px solid #ddd;text-align:left}}</style>
</head><body><h1>Vocelio Gateway</h1>
<p>Config version <code>{html.escape(rt.config.version if rt else 'none')}</code>.
OpenAPI: <a href="/openapi.json">/openapi.json</a></p>
<h2>Gateway endpoints</h2><table>{own}</table>
<h2>Routes</h2><table><tr><th>Service</th><th>Hosts</th><th>Prefixes</th><th>Auth</th><th>Rewrite</th></tr>{''.join(rows)}</table>
</body></html>"""
    return Reply(200, page.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": _CSP})


#: Path -> endpoint; GET and HEAD only.
ENDPOINTS: dict[str, Callable[[GatewayView], Reply]] = {
    "/": handle_root,
    "/health": handle_health,
    "/livez": handle_livez,
    "/readyz": handle_readyz,
    "/status": handle_status,
    "/metrics": handle_metrics,
    "/openapi.json": handle_openapi,
    "/docs": handle_docs,
}
