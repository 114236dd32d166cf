"""The paths the gateway serves itself (its own endpoints), so no route may claim
them: the proxy answers them before routing (`pipeline.endpoints`), its settings
accept only these on the admin and public listeners, and the renderer rejects a
VocelioService prefix with the same route key. Pure; one list for all three."""

from __future__ import annotations

#: Every gateway endpoint, in the order the root endpoint lists them.
RESERVED_PATHS: tuple[str, ...] = ("/", "/health", "/livez", "/readyz", "/status", "/metrics", "/docs",
                                   "/openapi.json")
