"""Each daemon's HTTP endpoint on ``ADVMON_HTTP_HOST`` (127.0.0.1 by default): ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the main loop made progress recently (a wedged loop turns it 503,
so a supervisor restarts the process); ``/readyz`` answers 200 once the worker is consuming.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.errors import ServiceUnavailable


class Health:
    """Liveness from heartbeats of the main loop, readiness set by the worker."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self.ready = False
        self.detail: dict[str, object] = {}
        self._beat = time.monotonic()

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._beat < self.stall_after_s


def serve(
    port: int, registry: CollectorRegistry, health: Health, host: str = "127.0.0.1"
) -> ThreadingHTTPServer | None:
    """Start the endpoint in a daemon thread; port 0 disables it."""
    if not port:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok = health.alive if path == "/healthz" else (health.ready and health.alive)
                body = orjson.dumps({"ok": ok, "ready": health.ready, "alive": health.alive, **health.detail},
                                    default=str)
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not worth a log line each
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ServiceUnavailable(f"cannot serve HTTP on {host}:{port}: {exc} (set --http-port 0 to disable)") from None
    threading.Thread(target=server.serve_forever, name="advmon-http", daemon=True).start()
    return server
