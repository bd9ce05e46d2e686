"""The web side: one page (dashboard/static/), its live updates as Server-Sent Events, the model's plots.

    GET /                     the page
    GET /events?state=&q=&page=  an `update` event every push_interval: the snapshot below, for that grid page
    GET /api/snapshot?...     the same snapshot once (scripts, tests, curl)
    GET /api/car/<car id>     one car: its state, alerts, onsets and recent readings and predictions (its page)
    GET /model/<version>/<plot>.png   a plot of a model version's report
    GET /healthz, /readyz     liveness (the reading threads run) and readiness (every topic assigned)
    GET /metrics              the dashboard's own Prometheus metrics

A snapshot carries the fleet's counts, one page of the grid (filtered by state and a car-id search), the latest
alerts, the stages' totals and rates, the lag, the chart's history, the DLQ by reason, the serving model, the
model registry's champion and challenger (dashboard/registry_panel.py) and the services' endpoints;
dashboard/README.md lists its fields. Building one takes the fleet's lock for a few ms at 100,000 cars; the grid's
order is computed once per push interval and shared by every open page.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sse_starlette import EventSourceResponse

from common.schemas import SENSOR_UNITS
from dashboard.feed import Feed
from dashboard.fleet import Fleet, page_of
from dashboard.history import CarHistory
from dashboard.model import ModelReports
from dashboard.registry_panel import RegistryPanel
from dashboard.settings import DashboardSettings
from dashboard.sources import Sampler

STATIC = Path(__file__).parent / "static"
MAX_CAR_ID = 128  # longer than any id the bridge accepts (64): a page for it cannot exist
GridState = Literal["all", "healthy", "warned", "ood", "failed"]


class Dashboard:
    """The fleet, the threads that fill it, and snapshots of it for the page."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.fleet = Fleet(history=CarHistory(settings.car_history_points, settings.car_history_per_car))
        self.feed = Feed(settings, self.fleet)
        self.sampler = Sampler(settings, self.fleet)
        self.reports = ModelReports(settings.model_dir)
        self.model_registry = RegistryPanel(settings.model_dir, self.reports)
        self._orders: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.registry = CollectorRegistry()
        self.clients = Gauge("dashboard_clients", "Pages receiving updates", registry=self.registry)
        self.pushed = Counter("dashboard_updates_pushed", "Updates pushed to pages", registry=self.registry)
        self.build_time = Histogram(
            "dashboard_snapshot_seconds",
            "Time to build one update",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )

    def start(self) -> None:
        self.feed.start()
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()
        self.feed.stop()

    def _order(self, state: str, query: str) -> list[str]:
        """The grid's ids for a filter, computed at most once per push interval and shared by every page."""
        tick = int(time.monotonic() / self.settings.push_interval)
        cached = self._orders.get((state, query))
        if cached is None or cached[0] != tick:
            if len(self._orders) > 64:  # searches typed letter by letter: keep only the current ones
                self._orders = {k: v for k, v in self._orders.items() if v[0] == tick}
            cached = self._orders[(state, query)] = (tick, self.fleet.find(self.fleet.ordered_ids(state), query))
        return cached[1]

    def snapshot(self, state: str = "all", query: str = "", page: int = 0) -> dict[str, Any]:
        started = time.perf_counter()
        size = self.settings.page_size
        with self.fleet.lock:
            ids = self._order(state, query)
            shown, page, pages = page_of(ids, page, size)
            grid = {
                "state": state,
                "query": query,
                "page": page,
                "pages": pages,
                "matching": len(ids),
                "page_size": size,
                "cars": [self.fleet.car_dict(i) for i in shown],
            }
            fleet = self.fleet.summary()
            version = self.fleet.model_version
            alerts = list(self.fleet.alerts)
            dlq = self.fleet.dlq()
        model = self.reports.describe(version)
        threshold = model.get("threshold") if model else None
        snapshot = {
            "generated_at": int(time.time() * 1000),
            "fleet": fleet,
            "grid": grid,
            "alerts": [alert.as_dict(threshold) for alert in alerts],
            "stages": self.sampler.stages(),
            "lag": self.sampler.lag,
            "history": self.sampler.chart(),
            "dlq": dlq,
            "model": model,
            "registry": self.model_registry.describe(),
            "services": self.sampler.services(),
            "serving": self.sampler.serving(),
        }
        self.build_time.observe(time.perf_counter() - started)
        return snapshot

    def car(self, car_id: str) -> dict[str, Any] | None:
        """One car's page, or None for a car the dashboard has not seen."""
        with self.fleet.lock:
            version = self.fleet.model_version
        model = self.reports.describe(version)
        threshold = model.get("threshold") if model else None
        with self.fleet.lock:
            page = self.fleet.car_page(car_id, threshold)
        if page is not None:
            page.update(model_version=version, threshold=threshold, horizon=model.get("horizon") if model else None)
            page["units"] = SENSOR_UNITS
        return page


def create_app(dashboard: Dashboard, manage: bool = True) -> FastAPI:
    """The FastAPI app; with `manage` it starts the dashboard's threads on start-up and stops them on shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage:
            dashboard.start()
        try:
            yield
        finally:
            if manage:
                await anyio.to_thread.run_sync(dashboard.stop)

    app = FastAPI(title="car-stream-ml dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/snapshot")
    async def snapshot(state: GridState = "all", q: str = Query("", max_length=100), page: int = 0) -> Response:
        data = await anyio.to_thread.run_sync(dashboard.snapshot, state, q.strip(), page)
        return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")

    @app.get("/api/car/{car_id}")
    async def car(car_id: str) -> Response:
        data = await anyio.to_thread.run_sync(dashboard.car, car_id) if len(car_id) <= MAX_CAR_ID else None
        if data is None:
            raise HTTPException(404, f"no car {car_id[:MAX_CAR_ID]!r}: the dashboard has read nothing of it")
        return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")

    @app.get("/events")
    async def events(state: GridState = "all", q: str = Query("", max_length=100), page: int = 0) -> Any:
        async def updates() -> AsyncIterator[dict[str, str]]:
            dashboard.clients.inc()
            interval = dashboard.settings.push_interval
            try:
                while True:
                    started = time.monotonic()
                    data = await anyio.to_thread.run_sync(dashboard.snapshot, state, q.strip(), page)
                    yield {"event": "update", "data": json.dumps(data, separators=(",", ":"))}
                    dashboard.pushed.inc()
                    # a steady cadence: the time spent building the update counts toward the interval
                    await anyio.sleep(max(0.0, interval - (time.monotonic() - started)))
            finally:
                dashboard.clients.dec()

        return EventSourceResponse(updates(), ping=15)

    @app.get("/model/{version}/{name}", include_in_schema=False)
    def plot(version: str, name: str) -> FileResponse:
        path = dashboard.reports.plot(version, name)
        if path is None:
            raise HTTPException(404, "no such plot")
        return FileResponse(path, media_type="image/png")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(dashboard.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> PlainTextResponse:
        if dashboard.feed.alive():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("the topic reader stopped\n", status_code=503)

    @app.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> PlainTextResponse:
        if dashboard.feed.ready.is_set():
            return PlainTextResponse("ok\n")
        return PlainTextResponse(f"not ready: {dashboard.feed.error or 'starting'}\n", status_code=503)

    return app
