"""Standalone mode: the same resource YAML, the same renderer and the same
proxy on one machine without Kubernetes. Watches the folder and re-renders on
change; optional demo backends for the quickstart. Called by
`vocelio-gateway standalone` (and `make run`).

Start-up: every problem in the folder is printed to stderr, one line each
(file, document, resource, field). The gateway starts when at least one
VocelioService is valid (the broken files are reported in `/status` and fixed
by editing them: hot reload picks them up); it refuses to start, with exit
status 1, when the folder cannot be read or nothing in it is valid while
something is broken (an empty folder starts, serving nothing, and waits for
files)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from vocelio_contract.apikeys import mint_key
from vocelio_contract.config import ConfigError
from vocelio_contract.paths import PathPolicy
from vocelio_operator.local.demo import run_demo_backends
from vocelio_operator.local.devcert import ensure_dev_certificate
from vocelio_operator.local.files import FolderSource
from vocelio_operator.local.manifests import ManifestLimits
from vocelio_proxy.lifecycle.app import Extension, create_app, serve
from vocelio_proxy.settings import ProxySettings, TlsCertificate, TlsSettings

log = logging.getLogger("vocelio.standalone")


def banner(port: int, services: list[str], demo_key: str | None = None,
           https: tuple[int, Path] | None = None) -> str:
    base = f"http://127.0.0.1:{port}"
    https_lines = [
        f"  curl -s --cacert {https[1]} https://localhost:{https[0]}/health"
        "   # HTTPS, development certificate",
    ] if https else []
    first = services[0] if services else "ai-agents"
    key_lines = [
        f"  curl -s -H 'X-API-Key: {demo_key}' {base}/api/v1/developer-api/keys   # demo API key (this run only)",
        f"  curl -s {base}/api/v1/developer-api/keys      # 401: the route needs an API key",
    ] if demo_key else []
    return "\n".join([
        "",
        f"Vocelio Gateway (standalone) is serving {len(services)} services at {base}",
        *([f"  and over HTTPS at https://localhost:{https[0]} (development certificate; trust {https[1]})"]
          if https else []),
        "Try:",
        f"  curl -s {base}/health",
        *https_lines,
        f"  curl -s {base}/status",
        f"  curl -s {base}/api/v1/{first}/agents",
        f"  curl -s {base}/{first}/v1/agents",
        f"  curl -s {base}/api/v1/unknown        # 404 in the JSON error envelope",
        *key_lines,
        f"  curl -s {base}/metrics | grep vocelio_requests",
        f"  open {base}/docs",
        "Press Ctrl-C to stop.",
        "",
    ])


class StartupRefused(Exception):
    """Nothing to serve: the message is the one line printed before exiting."""


def prime(resources_dir: Path, settings: ProxySettings) -> FolderSource:
    """The first load, before listening: prints each problem on one stderr line; raises
    StartupRefused when the folder is unreadable or nothing in it is valid."""
    source = FolderSource(resources_dir, ManifestLimits.from_settings(settings.resource_files),
                          policy=PathPolicy.from_settings(settings.paths))
    try:
        source.load()
    except ConfigError as exc:
        for problem in source.problems:
            print(f"error: {problem}", file=sys.stderr, flush=True)
        raise StartupRefused(f"refusing to start: {exc}") from exc
    for problem in source.problems:
        print(f"error: {problem}", file=sys.stderr, flush=True)
    return source


async def run_standalone(settings: ProxySettings, resources_dir: Path, demo_backends: bool,
                         extensions: list[Extension] | None = None, https_port: int | None = None,
                         dev_cert_dir: Path | None = None) -> None:
    """`https_port`: also serve HTTPS there with the development certificate (`devcert`),
    unless the settings configure TLS themselves (None: no HTTPS listener)."""
    if settings.workers != 1:
        # One process renders and serves here; a silently ignored setting would be worse than a refusal.
        raise StartupRefused(f"refusing to start: workers {settings.workers}: standalone mode runs one process "
                             "(several workers: `vocelio-proxy serve --workers`, docs/operations/workers.md)")
    demo_key = None
    https: tuple[int, Path] | None = None
    if settings.tls.enabled:
        https = (settings.tls.port, Path("(your certificate's CA)"))
    elif https_port is not None:
        settings, https = _with_dev_tls(settings, https_port, dev_cert_dir)
    if demo_backends and settings.api_keys_path is None:
        demo_key, settings = _with_demo_key(settings)
    if demo_backends and "shutdown_delay_s" not in settings.model_fields_set:
        # The interactive quickstart has no load balancer to wait for: Ctrl-C stops at once.
        settings = settings.model_copy(update={"shutdown_delay_s": 0.0})
    source = prime(resources_dir, settings)
    loaded = source.loaded
    if not loaded.services:
        # Loud, not fatal: the folder is watched, and services added later are served.
        print(f"warning: no VocelioService in {resources_dir}: every path answers 404 until one is added",
              file=sys.stderr, flush=True)
        log.warning("starting with no services", extra={"fields": {"resources": str(resources_dir)}})
    app = create_app(settings, source, extensions=extensions)
    names = sorted(r.metadata.name for r in loaded.services)

    def started(port: int) -> None:
        print(banner(port, names, demo_key, https), flush=True)

    if demo_backends:
        async with run_demo_backends(loaded) as backends:
            log.info("demo backends started", extra={"fields": {"count": len(backends)}})
            await serve(app, settings, started)
    else:
        await serve(app, settings, started)


def _with_demo_key(settings: ProxySettings) -> tuple[str, ProxySettings]:
    """Quickstart only: a fresh key (admin role, premium tier) in a private temp file."""
    folder = Path(tempfile.mkdtemp(prefix="vocelio-standalone-"))
    key, record = mint_key(name="quickstart", tenant="demo", tier="premium", roles=["admin"])
    path = folder / "api-keys.json"
    path.write_text(json.dumps([record.model_dump(mode="json")]))
    path.chmod(0o600)
    return key, settings.model_copy(update={"api_keys_path": path})


def _with_dev_tls(settings: ProxySettings, https_port: int,
                  dev_cert_dir: Path | None) -> tuple[ProxySettings, tuple[int, Path]]:
    """Settings with the TLS listener on `https_port` serving the development certificate."""
    dev = ensure_dev_certificate(dev_cert_dir)
    if dev.created:
        log.info("development certificate created", extra={"fields": {"folder": str(dev.folder)}})
    tls = TlsSettings(enabled=True, port=https_port,
                      certificates=[TlsCertificate(name="development", dir=dev.folder)])
    return settings.model_copy(update={"tls": tls}), (https_port, dev.ca_file)


def run(settings: ProxySettings, resources_dir: Path, demo_backends: bool, https_port: int | None = None,
        dev_cert_dir: Path | None = None) -> int:
    """Serve until stopped; the exit status (1 when start-up is refused)."""
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    try:
        runner(run_standalone(settings, resources_dir, demo_backends, https_port=https_port,
                              dev_cert_dir=dev_cert_dir))
    except StartupRefused as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    return 0
