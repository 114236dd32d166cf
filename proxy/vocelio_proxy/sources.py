"""Config sources and the reload loop. A source says cheaply whether anything
changed (`fingerprint`) and produces a validated `GatewayConfig` (`load`). The
file source follows a mounted ConfigMap, whose kubelet updates swap the `..data`
symlink atomically; polling `stat` through the symlink sees every swap.
The reload task is owned by the application's cleanup context."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Protocol

from .config import ConfigError, GatewayConfig, parse_config
from .metrics import ProxyMetrics
from .state import GatewayState

log = logging.getLogger("vocelio.proxy.config")


class ConfigSource(Protocol):
    def fingerprint(self) -> object: ...

    def load(self) -> GatewayConfig: ...

    def describe(self) -> str: ...


class FileSource:
    """A GatewayConfig JSON file, such as `/etc/vocelio/config/gateway.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fingerprint(self) -> object:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size, os.path.realpath(self.path))

    def load(self) -> GatewayConfig:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from exc
        return parse_config(raw)

    def describe(self) -> str:
        return f"file:{self.path}"


class StaticSource:
    """A config given in memory (tests, embedding)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    def fingerprint(self) -> object:
        return self.config.hash

    def load(self) -> GatewayConfig:
        return self.config

    def describe(self) -> str:
        return "static"


async def reload_once(source: ConfigSource, state: GatewayState, metrics: ProxyMetrics) -> None:
    """Parse in a worker thread (large configs), apply on the event loop."""
    try:
        config = await asyncio.to_thread(source.load)
    except ConfigError as exc:
        state.reject(exc)
        metrics.config_reloads.labels("invalid").inc()
        return
    if state.apply(config):
        metrics.config_reloads.labels("applied").inc()
        metrics.config_last_success.set(state.loaded_at)
    else:
        metrics.config_reloads.labels("unchanged").inc()


async def watch_source(source: ConfigSource, state: GatewayState, metrics: ProxyMetrics,
                       poll_s: float) -> None:
    """Reload whenever the source's fingerprint changes; runs until cancelled."""
    seen: object = object()
    while True:
        try:
            current = await asyncio.to_thread(source.fingerprint)
        except OSError as exc:
            current = ("error", str(exc))
        if current != seen and current is not None:
            seen = current
            await reload_once(source, state, metrics)
        elif current is None and state.runtime is None and not state.last_error:
            state.last_error = f"{source.describe()} does not exist yet"
        await asyncio.sleep(poll_s)
