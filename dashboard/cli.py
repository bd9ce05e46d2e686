"""`python -m dashboard`: a live web page of the fleet, on http://127.0.0.1:8050/ by default.

It reads car-sensor (the ground truth and the car-sensor rate), car-sensor-predictions (each car's state, the
alerts, the serving model) and car-sensor-dlq (the DLQ by reason) from `--lookback-seconds` back, never joining a
service's consumer group; it scrapes the services' Prometheus endpoints (`--metrics-urls`: the MQTT-in rate),
reads the predictors' group lag, and shows the serving model's report from `--model-dir`. Updates are pushed to
every open page once a second (Server-Sent Events). Ctrl-C or SIGTERM stops it. See dashboard/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

import uvicorn

from common.cli import add_settings_arguments, describe, doc_parser, settings_from_args
from common.errors import ConfigError
from common.lifecycle import stop_on_signals
from common.logs import setup_logging
from dashboard.app import Dashboard, create_app
from dashboard.settings import DashboardSettings
from dashboard.sources import parse_metrics_urls

log = logging.getLogger("dashboard")


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m dashboard", __doc__)
    add_settings_arguments(parser, DashboardSettings)
    return parser


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: it re-raises SIGTERM after shutting down, so the process would
    die of the signal; here `common.lifecycle` stops it and it exits 0 like every service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts, so that the log can say the real port (port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror} (set --port or DASHBOARD_PORT)") from None
    return sock


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = settings_from_args(DashboardSettings, args)
    parse_metrics_urls(settings.metrics_urls)  # a malformed list is a usage error, before anything starts
    log.info("settings: %s", describe(settings))
    sock = listen(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    dashboard = Dashboard(settings)
    config = uvicorn.Config(
        create_app(dashboard), log_level="warning", access_log=False, timeout_graceful_shutdown=3, lifespan="on"
    )
    server = Server(config)
    shown = f"[{host}]" if ":" in host else host
    stop = threading.Event()

    def exit_on_stop() -> None:
        stop.wait()
        server.should_exit = True

    with stop_on_signals(stop, "the open pages"):
        threading.Thread(target=exit_on_stop, name="dashboard-stop", daemon=True).start()
        log.info("dashboard on http://%s:%d/ (Ctrl-C stops it)", shown, port)
        server.run(sockets=[sock])
    log.info("stopped")
    return 0
