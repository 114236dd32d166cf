"""Resource files rewritten every 200 ms while a real gateway serves a bounded
request load against a real upstream: every class of bad input is injected in
turn (and written in place, so the watcher also sees truncated and half-written
files), valid versions in between must apply, and not one request to either
service may be lost, failed or slow. The watcher must never crash."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, poll
from tests.harness.reload_tools import run_load, service_yaml, while_loaded
from vocelio_operator.local.files import FolderSource
from vocelio_operator.local.manifests import ManifestLimits

SLOW_S = 1.0
PATHS = ["/api/v1/steady/x", "/api/v1/churn/x"]
LIMITS = ManifestLimits(max_file_bytes=64 * 1024, max_yaml_nodes=5_000, max_yaml_depth=32)


def bad_inputs(valid: str) -> dict[str, bytes]:
    """Each class of bad content for the churn file, from a valid manifest (whose rewrite
    is a version the gateway must NOT apply)."""
    text = valid
    return {
        "non-UTF-8": text.replace("rewrite", "rew\xffrite").encode("latin-1"),
        "apiVersion: 1": text.replace("gateway.vocelio.ai/v1alpha1", "1").encode(),
        "kind a list": text.replace("kind: VocelioService", "kind: [VocelioService]").encode(),
        "metadata a list": text.replace("metadata:\n  name: churn", "metadata: [churn]").encode(),
        "scalar document": b"churn\n",
        "list document": b"- churn\n",
        "billion laughs": (text + "x: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
            f"x{i}: &a{i} [" + ",".join([f"*{'a' if i == 0 else f'a{i - 1}'}"] * 10) + "]\n"
            for i in range(7))).encode(),
        "too many nodes": ("[" + "1," * 6_000 + "1]\n").encode(),
        "over the size cap": (text + "#" * (70 * 1024)).encode(),
        "deep nesting": ("[" * 200 + "]" * 200).encode(),
        "duplicate keys": (text + "spec: {}\n").encode(),
        "tabs": text.replace("  rewrite", "\trewrite").encode(),
        "one good one bad document": (text.replace("name: churn", "name: churn-extra").replace(
            "/api/v1/churn", "/api/v1/churn-extra") + "---\n" + text.replace("pathPrefix: /api/v1/churn",
                                                                            "pathPrefix: churn")).encode(),
        "YAML syntax": (text + "  : [\n").encode(),
        "empty file": b"",
    }


def churn_rewrite(gw: Gateway) -> str | None:
    rt = gw.state.runtime
    svc = rt.services.get("default/churn") if rt else None
    return svc.service.rewrite if svc else None


async def test_rewriting_resource_files_every_200ms_under_load_loses_no_request(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    up = await upstream_factory()
    churn = tmp_path / "churn.yaml"
    steady = tmp_path / "steady.yaml"
    steady.write_text(service_yaml("steady", up.port))
    churn.write_text(service_yaml("churn", up.port, rewrite="/v0"))
    gw = await gateway_factory(source=FolderSource(tmp_path, LIMITS), config_poll_s=0.05)
    applied_versions: list[str] = []
    reported: dict[str, str] = {}

    def check(path: str, status: int, body: bytes) -> None:
        if status == 200 and "churn" in path:
            assert json.loads(body)["path"] in {f"/v{k}/x" for k in range(40)}

    async def apply_valid(version: int) -> None:
        churn.write_text(service_yaml("churn", up.port, rewrite=f"/v{version}"))
        await poll(lambda: churn_rewrite(gw) == f"/v{version}", f"version {version} applied", 3)
        applied_versions.append(f"/v{version}")
        await asyncio.sleep(0.2)

    async def inject(name: str, make: Callable[[], object], marker: str) -> None:
        before = list(gw.state.source_problems)
        make()
        await poll(lambda: any(marker in p for p in gw.state.source_problems if p not in before),
                   f"{name} reported", 3)
        reported[name] = next(p for p in gw.state.source_problems if marker in p)
        await asyncio.sleep(0.2)

    async def scenario() -> None:
        version = 1
        for name, data in bad_inputs(service_yaml("churn", up.port, rewrite="/v99")).items():
            await apply_valid(version)
            version += 1
            await inject(name, functools.partial(churn.write_bytes, data), "churn.yaml")
            assert churn_rewrite(gw) == f"/v{version - 1}", name  # the last good version still routes
        # Files that are not files, and a file gone between listing and reading.
        await apply_valid(version)
        await inject("a directory named like a manifest", lambda: (tmp_path / "dir.yaml").mkdir(), "dir.yaml")
        await inject("a FIFO", lambda: os.mkfifo(tmp_path / "fifo.yaml"), "fifo.yaml")
        await inject("a symlink loop", lambda: (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml"),
                     "loop.yaml")
        await inject("the steady file truncated", lambda: steady.write_bytes(b""), "steady.yaml")
        steady.write_text(service_yaml("steady", up.port))
        for _ in range(20):  # files appearing and vanishing between the listing and the read
            (tmp_path / "flicker.yaml").write_text(service_yaml("flicker", up.port))
            await asyncio.sleep(0.02)
            (tmp_path / "flicker.yaml").unlink()
            await asyncio.sleep(0.03)
        for special in ("dir.yaml", "fifo.yaml", "loop.yaml"):
            path = tmp_path / special
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        await apply_valid(version + 1)
        await poll(lambda: not gw.state.source_problems, "every problem cleared", 3)

    stats = await while_loaded(gw.url, PATHS, scenario, workers=4, slow_s=SLOW_S, check=check)
    print(f"\nreload churn under load: {stats.line()}; {len(applied_versions)} versions applied, "
          f"{len(reported)} bad inputs reported")
    assert stats.sent >= 200
    assert not stats.capped
    assert (stats.lost, stats.failed, stats.unexpected, stats.slow) == (0, 0, 0, 0), stats.line()
    assert len(reported) == len(bad_inputs("")) + 4
    watcher = gw.state.watchers["config-watch"]
    assert watcher.restarts == 0
    assert watcher.state == "running"
    assert gw.state.reloads_ok >= len(applied_versions)


async def test_rapid_random_rewrites_end_on_the_last_valid_version(upstream_factory: UpstreamFactory,
                                                                   gateway_factory: GatewayFactory,
                                                                   tmp_path: Path) -> None:
    """50 ms between writes, valid and broken at random, no waiting for the watcher: whatever
    it happens to read, every request succeeds and the final valid version wins."""
    up = await upstream_factory()
    churn = tmp_path / "churn.yaml"
    churn.write_text(service_yaml("churn", up.port, rewrite="/v0"))
    (tmp_path / "steady.yaml").write_text(service_yaml("steady", up.port))
    gw = await gateway_factory(source=FolderSource(tmp_path, LIMITS), config_poll_s=0.02)
    rng = random.Random(10)
    bad = list(bad_inputs(service_yaml("churn", up.port, rewrite="/v99")).values())

    async def scenario() -> None:
        for i in range(60):
            if rng.random() < 0.5:
                churn.write_text(service_yaml("churn", up.port, rewrite=f"/v{i % 30}"))
            else:
                churn.write_bytes(rng.choice(bad))
            await asyncio.sleep(0.05)
        churn.write_text(service_yaml("churn", up.port, rewrite="/v31"))
        await poll(lambda: churn_rewrite(gw) == "/v31" and not gw.state.source_problems, "final version", 3)

    stop = asyncio.Event()
    load = asyncio.create_task(run_load(gw.url, PATHS, stop=stop, workers=4, slow_s=SLOW_S))
    try:
        await scenario()
    finally:
        stop.set()
    stats = await load
    print(f"\nrapid random rewrites under load: {stats.line()}")
    assert stats.sent >= 100
    assert not stats.capped
    assert (stats.lost, stats.failed, stats.unexpected, stats.slow) == (0, 0, 0, 0), stats.line()
    assert gw.state.watchers["config-watch"].restarts == 0
