"""h2spec (github.com/summerwind/h2spec, built into .cache/bin by
tests/controlplane/build.sh) against the gateway's HTTP/2 server, over TLS
(ALPN h2, a trustme test certificate) and over h2c with prior knowledge, on a
path proxied to a real upstream: every case passes, or it is named in
`EXCEPTIONS` with the RFC clause and why."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from aiohttp import web

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, service
from tests.harness.controlplane import BIN_DIR
from tests.harness.h2_tools import tls_contexts
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.settings import Http2Settings
from vocelio_proxy.wire.server import HttpServer

#: (listener, h2spec package, case) -> the RFC clause and why the gateway differs.
EXCEPTIONS: dict[tuple[str, str, str], str] = {
    ("h2c", "http2/3.5", "Sends invalid connection preface"):
        "RFC 9113 §3.4 (connection preface): on the cleartext listener HTTP/2 is only recognised by its "
        "preface (prior knowledge, §3.3), and the listener is shared with HTTP/1.1; bytes that are not the "
        "preface are read as an HTTP/1.1 request, answered 400 and closed. Over TLS (ALPN h2) a wrong "
        "preface ends the connection as the case expects.",
}

#: Characters XML 1.0 does not allow (C0 controls other than tab, newline, carriage return).
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _h2spec() -> str:
    found = os.environ.get("VOCELIO_H2SPEC") or (str(BIN_DIR / "h2spec") if (BIN_DIR / "h2spec").exists()
                                                  else shutil.which("h2spec"))
    if not found:
        pytest.fail("h2spec is not built: run `bash tests/controlplane/build.sh` (make cluster-bins)")
    return found


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory) -> Gateway:
    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # Large enough for the flow-control cases (6.9.x) to have DATA to hold back.
        return web.Response(body=b"%d;" % len(body) + b"x" * 100_000)

    up = await upstream_factory(answer)
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    return await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))


async def _run(port: int, tls: bool) -> dict[tuple[str, str], str]:
    """Failed and skipped cases: (package, case) -> h2spec's message."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        # -S: the strict cases too (RFC MUSTs h2spec does not run by default).
        args = ["-S", "-h", "127.0.0.1", "-p", str(port), "-P", "/api/h2spec", "-o", "3", "-j", str(report)]
        if tls:
            args += ["-t", "-k"]
        proc = await asyncio.create_subprocess_exec(_h2spec(), *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
        assert report.exists(), out.decode(errors="replace")[-2000:]
        # h2spec writes frame payloads into its messages raw (a PING's padding is NUL bytes),
        # which XML 1.0 forbids: they are shown escaped so a failure is read, not a ParseError.
        text = _XML_FORBIDDEN.sub(lambda m: f"\\x{ord(m.group()):02x}", report.read_text(errors="replace"))
        tree = ET.ElementTree(ET.fromstring(text))  # noqa: S314 - h2spec's own report, written by the test
    problems: dict[tuple[str, str], str] = {}
    cases = 0
    for case in tree.iter("testcase"):
        cases += 1
        for tag in ("failure", "error", "skipped"):
            bad = case.find(tag)
            if bad is not None:
                problems[(case.get("package", ""), case.get("classname", ""))] = f"{tag}: {bad.text or ''}"
    assert cases >= 146, f"h2spec ran {cases} cases"  # 146 with -S (h2spec 2.2.1)
    return problems


def _unexpected(listener: str, problems: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    return {key: why for key, why in problems.items() if (listener, *key) not in EXCEPTIONS}


async def test_h2spec_passes_over_h2c_with_prior_knowledge(gateway: Gateway) -> None:
    problems = await _run(gateway.port, tls=False)
    assert _unexpected("h2c", problems) == {}
    # Each exception still happens (a stale entry would hide nothing and prove nothing).
    assert {key for key in problems} == {(p, c) for (listener, p, c) in EXCEPTIONS if listener == "h2c"}


async def test_h2spec_passes_over_tls_with_alpn_h2(gateway: Gateway) -> None:
    server_ctx, _ = tls_contexts()
    tls = HttpServer(gateway.server.handler, gateway.server.limits, http2=Http2Settings())
    port = await tls.listen("127.0.0.1", 0, ssl=server_ctx)
    try:
        problems = await _run(port, tls=True)
    finally:
        await tls.shutdown(1.0)
    assert _unexpected("tls", problems) == {}
