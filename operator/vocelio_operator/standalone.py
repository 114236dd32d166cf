"""Standalone mode: the same resource YAML, the same renderer and the same
proxy on one machine without Kubernetes. Watches the folder and re-renders on
change; optional demo backends for the quickstart. Called by
`vocelio-gateway standalone` (and `make run`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from vocelio_proxy.app import Extension, create_app, serve
from vocelio_proxy.settings import ProxySettings

from .demo import run_demo_backends
from .files import FolderSource, load_folder

log = logging.getLogger("vocelio.standalone")


def banner(port: int, services: list[str]) -> str:
    base = f"http://127.0.0.1:{port}"
    first = services[0] if services else "ai-agents"
    return "\n".join([
        "",
        f"Vocelio Gateway (standalone) is serving {len(services)} services at {base}",
        "Try:",
        f"  curl -s {base}/health",
        f"  curl -s {base}/status",
        f"  curl -s {base}/api/v1/{first}/agents",
        f"  curl -s {base}/{first}/v1/agents",
        f"  curl -s {base}/api/v1/unknown        # 404 in the JSON error envelope",
        f"  curl -s {base}/metrics | grep vocelio_requests",
        f"  open {base}/docs",
        "Press Ctrl-C to stop.",
        "",
    ])


async def run_standalone(settings: ProxySettings, resources_dir: Path, demo_backends: bool,
                         extensions: list[Extension] | None = None) -> None:
    source = FolderSource(resources_dir)
    loaded = load_folder(resources_dir)
    for problem in loaded.problems:
        log.error("resource problem", extra={"fields": {"problem": problem}})
    app = create_app(settings, source, extensions=extensions)
    names = sorted(r.metadata.name for r in loaded.services)

    def started(port: int) -> None:
        print(banner(port, names), flush=True)

    if demo_backends:
        async with run_demo_backends(loaded) as backends:
            log.info("demo backends started", extra={"fields": {"count": len(backends)}})
            await serve(app, settings, started)
    else:
        await serve(app, settings, started)


def run(settings: ProxySettings, resources_dir: Path, demo_backends: bool) -> None:
    try:
        import uvloop

        uvloop.run(run_standalone(settings, resources_dir, demo_backends))
    except ImportError:  # pragma: no cover
        asyncio.run(run_standalone(settings, resources_dir, demo_backends))
