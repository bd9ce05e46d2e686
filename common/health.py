"""Liveness and readiness beside the Prometheus metrics, on one port: `/metrics`, `/healthz`, `/readyz`.

- `/healthz` (liveness): 200 while the service's processing loop turns (it calls `beat()` each turn); 503 with
  the reason when it has not for `stall_after` seconds: a hung loop, which only a restart cures.
- `/readyz` (readiness): 200 when the service can do its job now (the service's own check: connected,
  subscribed, Kafka answering...), else 503 with what is missing. Not ready is no reason to restart.

Both answer in plain text; the Kubernetes probes and the compose healthchecks use them. Served by the standard
library's WSGI server in a daemon thread, with prometheus-client's WSGI app for everything else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None when fine, else what is wrong


class Health:
    def __init__(self, stall_after: float, readiness: Check = lambda: None) -> None:
        self.stall_after = stall_after
        self.readiness = readiness
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def liveness(self) -> str | None:
        idle = time.monotonic() - self._last_beat
        return f"the processing loop has not turned for {idle:.0f} s" if idle > self.stall_after else None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args) -> None:  # a probe every few seconds is not news
        pass


def serve(port: int, health: Health, registry: CollectorRegistry = REGISTRY, host: str = "127.0.0.1") -> None:
    """Serve metrics and health on `port` (0: nothing is served)."""
    if not port:
        return
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)
        problem = health.liveness() if path == "/healthz" else health.readiness()
        body = f"{problem or 'ok'}\n".encode()
        status = "200 OK" if problem is None else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, liveness /healthz, readiness /readyz", host, port)
