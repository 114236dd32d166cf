"""Config sources and the reload loop. A source says cheaply whether anything
changed (`fingerprint`) and produces a validated `GatewayConfig` (`load`). The
file source follows a mounted ConfigMap, whose kubelet updates swap the `..data`
symlink atomically; polling `stat` through the symlink sees every swap.

The reload loop never dies quietly: a source that fails in any way is a
rejected reload (reported in `/status`, logged, counted, retried with backoff),
the last applied config keeps serving, and the loop itself runs under
`supervision.supervise`, which restarts it after a crash and shows the crash in
`/status` and the `vocelio_config_watcher_*` metrics. The reload task is owned
by the application's cleanup context (`app._background`)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import Literal, Protocol

from vocelio_contract.config import ConfigError, GatewayConfig, parse_config
from vocelio_contract.sharding import join_sharded
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.process.supervision import BACKOFF_MAX_S, describe_error, supervise

log = logging.getLogger("vocelio.proxy.config")

#: A GatewayConfig file larger than this is refused (sharded configs split at 1 MiB per part).
MAX_CONFIG_FILE_BYTES = 64 << 20

ReloadOutcome = Literal["applied", "unchanged", "invalid", "error"]


class UnreadableFile(ConfigError):
    """The operating system refused the read (gone, a symlink loop, permissions, EMFILE):
    possibly transient, so worth retrying even if nothing seems to change."""


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, or ConfigError with a one-line reason.
    Never blocks on a FIFO or device (opened non-blocking, then checked to be a regular file)
    and never reads past the bound, even when the file grows while being read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError("is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("not a regular file")
        if info.st_size > max_bytes:
            raise ConfigError(f"{info.st_size} bytes is over the limit of {max_bytes} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ConfigError(f"grew over the limit of {max_bytes} bytes while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


class ConfigSource(Protocol):
    """What the reload loop needs. A source may also expose `problems: list[str]` (what it
    skipped while loading), `kept: list[str]` (resources served from their last good
    version), `retry_wanted: bool` (the last load hit a possibly transient error: reload
    even if the fingerprint does not change) and `watchers` (its own supervised loops'
    `WatcherStatus`es); the loop reads them with `getattr`."""

    def fingerprint(self) -> object: ...

    def load(self) -> GatewayConfig: ...

    def describe(self) -> str: ...


class FileSource:
    """A GatewayConfig JSON file, or a mounted ConfigMap folder holding either
    `gateway.json` or `manifest.json` plus `part-<i>` files (a sharded config)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: The last load could not read a file (EMFILE, a permission flip): retry it.
        self.retry_wanted = False

    def _folder(self) -> Path | None:
        return self.path if self.path.is_dir() else None

    def fingerprint(self) -> object:
        folder = self._folder()
        targets = sorted(folder.iterdir()) if folder else [self.path]
        stats: list[tuple[object, ...]] = []
        for target in targets:
            try:
                st = os.stat(target)
            except FileNotFoundError:
                continue
            except OSError as exc:  # a symlink loop, a permission change: a state worth a reload
                stats.append((str(target), "error", exc.errno))
                continue
            stats.append((str(target), st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size,
                          os.path.realpath(target)))
        return tuple(stats) or None

    def _read(self, path: Path) -> bytes:
        try:
            return read_regular_file(path, MAX_CONFIG_FILE_BYTES)
        except UnreadableFile as exc:
            self.retry_wanted = True
            raise UnreadableFile(f"{path}: {exc}") from exc
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def load(self) -> GatewayConfig:
        self.retry_wanted = False
        folder = self._folder()
        if folder is None:
            return parse_config(self._read(self.path))
        if (folder / "gateway.json").exists():
            return parse_config(self._read(folder / "gateway.json"))
        return join_sharded(self._read(folder / "manifest.json"), lambda i: self._read(folder / f"part-{i}"))

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


def _source_report(source: ConfigSource, state: GatewayState) -> None:
    # Sources that load partially (a folder of manifests) report what they skipped and kept.
    state.source_problems = list(getattr(source, "problems", []))
    state.kept_last_good = list(getattr(source, "kept", []))


async def reload_once(source: ConfigSource, state: GatewayState, metrics: ProxyMetrics) -> ReloadOutcome:
    """Parse in a worker thread (large configs), apply on the event loop. Never raises
    (except cancellation): whatever goes wrong is a rejected reload and the last good
    config keeps serving."""
    try:
        config = await asyncio.to_thread(source.load)
    except ConfigError as exc:
        state.reject(exc)
        _source_report(source, state)
        metrics.config_reloads.labels("invalid").inc()
        return "invalid"
    except Exception as exc:  # a fault in the source itself (a bug, MemoryError): reported and retried
        log.error("config source failed unexpectedly", exc_info=exc,
                  extra={"fields": {"source": source.describe()}})
        state.reject(f"{source.describe()}: unexpected error while loading: {describe_error(exc)}")
        _source_report(source, state)
        metrics.config_reloads.labels("error").inc()
        return "error"
    _source_report(source, state)
    try:
        applied = state.apply(config)
    except Exception as exc:  # a validated config the runtime cannot be built from: keep the old runtime
        log.error("config could not be applied", exc_info=exc, extra={"fields": {"version": config.version}})
        state.reject(f"cannot apply config {config.version}: {describe_error(exc)}")
        metrics.config_reloads.labels("error").inc()
        return "error"
    if applied:
        metrics.config_reloads.labels("applied").inc()
        metrics.config_last_success.set(state.loaded_at)
        return "applied"
    metrics.config_reloads.labels("unchanged").inc()
    return "unchanged"


async def _watch(source: ConfigSource, state: GatewayState, metrics: ProxyMetrics, poll_s: float) -> None:
    """Reload whenever the source's fingerprint changes, and retry (with backoff) a load that
    failed in a way that may pass (an unexpected error, a file that could not be read)."""
    loop = asyncio.get_running_loop()
    seen: object = object()
    retry_at: float | None = None
    retry_delay = poll_s
    while True:
        try:
            current = await asyncio.to_thread(source.fingerprint)
        except OSError as exc:
            current = ("error", str(exc))
        due = retry_at is not None and loop.time() >= retry_at
        if current is not None and (current != seen or due):
            seen = current
            outcome = await reload_once(source, state, metrics)
            if outcome == "error" or getattr(source, "retry_wanted", False):
                retry_at = loop.time() + retry_delay
                retry_delay = min(retry_delay * 2, BACKOFF_MAX_S)
            else:
                retry_at = None
                retry_delay = poll_s
        elif current is None and state.runtime is None and not state.last_error:
            state.last_error = f"{source.describe()} does not exist yet"
        await asyncio.sleep(poll_s)


async def watch_source(source: ConfigSource, state: GatewayState, metrics: ProxyMetrics,
                       poll_s: float) -> None:
    """The config watcher: `_watch` under supervision; runs until cancelled. Registers its own
    status and the source's supervised loops in `state.watchers` for `/status` and metrics."""
    for status in getattr(source, "watchers", ()):
        state.watchers[status.name] = status
    metrics.track_config_watchers(lambda: list(state.watchers.values()),
                                  lambda: (len(state.source_problems), len(state.kept_last_good)))
    await supervise(state.watcher("config-watch"), lambda: _watch(source, state, metrics, poll_s),
                    wall=state.clock.wall)
