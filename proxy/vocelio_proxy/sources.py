"""Config sources and the reload loop. A source says cheaply whether anything
changed (`fingerprint`) and produces a validated `GatewayConfig` (`load`). The
file source follows a mounted ConfigMap, whose kubelet updates swap the `..data`
symlink atomically; polling `stat` through the symlink sees every swap.
The reload task is owned by the application's cleanup context."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
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


def join_sharded(manifest_raw: str | bytes, read_part: Callable[[int], str | bytes]) -> GatewayConfig:
    """Reassemble a config split over ConfigMaps (see the operator's `sharding`)."""
    try:
        manifest = json.loads(manifest_raw)
        parts = [read_part(i) for i in range(int(manifest["parts"]))]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"incomplete sharded config: {exc}") from exc
    raw = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
    config = parse_config(raw)
    if config.hash != manifest.get("hash"):
        # Parts from two different versions (a swap in progress): wait for the next swap.
        raise ConfigError("config parts do not match the manifest hash")
    return config


class FileSource:
    """A GatewayConfig JSON file, or a mounted ConfigMap folder holding either
    `gateway.json` or `manifest.json` plus `part-<i>` files (a sharded config)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _folder(self) -> Path | None:
        return self.path if self.path.is_dir() else None

    def fingerprint(self) -> object:
        folder = self._folder()
        targets = sorted(folder.iterdir()) if folder else [self.path]
        stats = []
        for target in targets:
            try:
                st = os.stat(target)
            except FileNotFoundError:
                continue
            stats.append((str(target), st.st_ino, st.st_mtime_ns, st.st_size, os.path.realpath(target)))
        return tuple(stats) or None

    def load(self) -> GatewayConfig:
        folder = self._folder()
        try:
            if folder is None:
                return parse_config(self.path.read_bytes())
            if (folder / "gateway.json").exists():
                return parse_config((folder / "gateway.json").read_bytes())
            return join_sharded((folder / "manifest.json").read_bytes(),
                                lambda i: (folder / f"part-{i}").read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from exc

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
        state.source_problems = list(getattr(source, "problems", []))
        metrics.config_reloads.labels("invalid").inc()
        return
    # Sources that load partially (a folder of manifests) report what they skipped.
    state.source_problems = list(getattr(source, "problems", []))
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
