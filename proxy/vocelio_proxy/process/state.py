"""The mutable state of one proxy process, held by the application under an
`AppKey` (never a module global): the current runtime, the last config error,
drain and health-round flags, the problems the config source reports and the
status of each supervised config loop. Written by the config watcher, the
health checker and the shutdown path; read by handlers and `/status`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from vocelio_contract.config import ConfigError, GatewayConfig
from vocelio_contract.paths import DEFAULT_POLICY, PathPolicy
from vocelio_proxy.clock import Clock
from vocelio_proxy.process.routing_state import GatewayRuntime, build_runtime
from vocelio_proxy.process.supervision import WatcherStatus

log = logging.getLogger("vocelio.proxy.config")


@dataclass
class GatewayState:
    clock: Clock
    started_at: float
    runtime: GatewayRuntime | None = None
    last_error: str = ""
    last_error_at: float = 0.0
    loaded_at: float = 0.0
    reloads_ok: int = 0
    reloads_failed: int = 0
    draining: bool = False
    health_round_done: bool = False
    source_problems: list[str] = field(default_factory=list)
    #: Resources served from their last good version while their file or document is broken.
    kept_last_good: list[str] = field(default_factory=list)
    #: Supervised config loops by name ("config-watch", and "config-source" for the API watch).
    watchers: dict[str, WatcherStatus] = field(default_factory=dict)
    #: How paths and route prefixes are canonicalised (from settings; routers are built with it).
    path_policy: PathPolicy = DEFAULT_POLICY
    #: The TLS listener's certificates for /status (set when `tls.enabled`; tls_certificates.TlsCertificates).
    tls_status: Callable[[], dict[str, object]] | None = None

    def watcher(self, name: str) -> WatcherStatus:
        """The status record of one supervised loop, created on first use."""
        status = self.watchers.get(name)
        if status is None:
            status = self.watchers[name] = WatcherStatus(name)
        return status

    def apply(self, config: GatewayConfig) -> bool:
        """Swap in a validated config; returns False when it is the one already applied."""
        if self.runtime is not None and self.runtime.config.hash == config.hash and config.hash:
            return False
        self.runtime = build_runtime(config, self.clock, self.runtime, path_policy=self.path_policy)
        self.loaded_at = self.clock.wall()
        self.last_error = ""
        self.reloads_ok += 1
        log.info("config applied", extra={"fields": {"version": config.version, "services": len(config.services)}})
        return True

    def reject(self, error: ConfigError | str) -> None:
        self.last_error = str(error)
        self.last_error_at = self.clock.wall()
        self.reloads_failed += 1
        kept = self.runtime.config.version if self.runtime else "none"
        log.error("config rejected; keeping the last good config",
                  extra={"fields": {"error": self.last_error[:2000], "kept_version": kept}})
