"""The gateway for the HTTP/2 rows of bench/proxy_bench.py: the same app as
`vocelio-proxy serve` (uvloop, every feature on), with h2c prior knowledge on
the plain port and a second listener with TLS (ALPN h2, http/1.1) on the same
handler, using the certificate and key files given. Runs until SIGTERM.

    python bench/h2_gateway.py CONFIG H2C_PORT TLS_PORT CERT KEY
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from pathlib import Path

import uvloop

from vocelio_proxy.lifecycle.app import create_app, start_gateway
from vocelio_proxy.settings import Http2Settings, ProxySettings
from vocelio_proxy.wire.server import HttpServer


async def main(config: Path, h2c_port: int, tls_port: int, cert: Path, key: Path) -> None:
    settings = ProxySettings(config_path=config, host="127.0.0.1", port=h2c_port,
                             http2=Http2Settings(cleartext=True))
    gateway = await start_gateway(create_app(settings, None), settings.host, settings.port)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    tls = HttpServer(gateway.server.handler, settings.limits, header_timeout_s=settings.client_header_timeout_s,
                     idle_timeout_s=settings.client_idle_timeout_s, http2=settings.http2)
    await tls.listen(settings.host, tls_port, ssl=context)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await tls.shutdown(1.0)
    await gateway.stop(1.0)


if __name__ == "__main__":
    config_path, h2c, port, cert_path, key_path = sys.argv[1:6]
    uvloop.run(main(Path(config_path), int(h2c), int(port), Path(cert_path), Path(key_path)))
