"""The backend the node tests deploy behind the proxy: a tiny HTTP/1.1 server
that answers every request with its pod name and the path, so a test sees
which pod served it; `?delay_ms=N` holds the answer N ms (at most 10 s), so
a test can keep requests in flight. /healthz answers the probes. SIGTERM stops accepting and
exits once in-flight requests are done. Built into an image by tests/node."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        delay_ms = min(int((query.get("delay_ms") or ["0"])[0] or 0), 10_000)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        body = json.dumps({"pod": socket.gethostname(), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    main()
