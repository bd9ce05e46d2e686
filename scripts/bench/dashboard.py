"""The `dashboard` section: does `python -m dashboard` keep up with the e2e section's 100,000-car load?

The e2e section's load (scripts/bench/e2e.py: 100,000 cars x one reading per 10 s = 10,000 readings/s offered, for
60 s; 10 s with --quick) runs through simulator -> Mosquitto -> bridge -> Kafka -> predictor (the small untrained
model), each its own process on this run's servers and topics of its own, while the dashboard reads the readings,
predictions and DLQ topics (lookback: the whole run) and scrapes the bridge's and the predictor's metrics. During
the load one real page (Playwright, Debian's chromium; `browser_error` says why when it cannot start, and only the
`page_*` figures go) and one plain SSE client (`sse_*`) stay open on it. `publish_msgs_per_s` is what the simulator
got out (the e2e section's figure of the same name): the dashboard's figures hold at that rate.

- `dashboard_cpu_us_per_record`: the dashboard's CPU from the simulator's start until it has counted every record
  of both topics (the drain included), per record it counted (readings + predictions: each reading costs it two);
  `dashboard_cpu_us_per_reading` the same per reading, beside the peers measured over the same span:
  `bridge_cpu_us_per_reading`, `predictor_cpu_us_per_reading`; `dashboard_to_<peer>_cpu_per_reading_ratio` is the
  dashboard's over the peer's (below 1: it costs less than the stage it watches). `*_cpu_percent`: share of one
  core during the load, for every process of the run (the servers too: on a small machine they share its cores).
- `page_updates_per_s`: updates rendered by the page (document.body.dataset.updates) over the load, beside
  `ideal_updates_per_s` (one per push interval); `page_render_mean_ms` and `page_render_max_ms` from
  window.dashboardRenderStats over the load (its max reset at the load's start: the first render builds the grid);
  `page_main_thread_ms_per_update` and `_percent`: the renderer's busy time (Chrome's TaskDuration: parsing the
  update, script, layout, paint) per update and as a share of one core.
- `sse_updates_per_s`, `sse_bytes_per_update` (the `data` of one `update` event: the snapshot's JSON), and
  `sse_delivery_p50_ms`/`_max_ms`: from an update's `generated_at` (its build's start) to its arrival here.
- `snapshot_build_p50_ms`, `_p99_ms`, `_mean_ms`: from the dashboard's dashboard_snapshot_seconds histogram over
  the load (quantiles interpolated within its buckets, as Prometheus's histogram_quantile does).
- Keeping up: `dashboard_lag_records_at_load_end` is Kafka's end offsets of the readings topic when the simulator
  finished minus the car-sensor records the dashboard had counted then (/api/snapshot's stages; one call);
  `dashboard_lag_p50_s` and `dashboard_lag_max_s` over the load: for each SSE update, how long before its
  `generated_at` the readings topic's end offsets (polled once a second, interpolated) had reached the count it
  shows (`dashboard_lag_max_records` the same in records); `dashboard_catch_up_s`: from the simulator's exit to the
  first update that counts everything the readings topic held at that moment (resolution: one push interval).
- At 100,000 cars, after the load (no page open, the cache of the grid's order cold: one call per push interval):
  `fleet_cars` (every car sent a reading: `cars`) and the cars per state (`fleet_warned`, ...: the cars not healthy
  are sorted for every page), `search_ms` (/api/snapshot?q=car-0999, median of 10 round trips, `search_matching`
  cars found), `page_flip_ms` (page=100) beside `snapshot_ms` (page 0); `after_load_build_mean_ms` is the
  dashboard's own build time of those calls (its histogram): the rest of a round trip is serialisation and HTTP.
  `car_page_ms` (/api/car/car-09990, median of 10 round trips), `car_page_bytes` and `car_page_readings` (the
  readings its page holds); `car_history_cars`, `_points_per_car` and `_mb`: what the dashboard's car history
  (dashboard/history.py, a fixed budget of points) holds at 100,000 cars.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import statistics
import threading
import time
import urllib.request
import uuid
from bisect import bisect_left
from itertools import pairwise
from pathlib import Path
from typing import Any

from common.kafka import ensure_topics
from scripts.bench.context import BenchContext, ProcessSampler
from scripts.bench.e2e import (
    CARS,
    PARTITIONS,
    RATE,
    logged,
    records_added,
    small_model_dir,
    start_offsets,
    wait_drained,
)
from scripts.runtime.local import free_port
from scripts.runtime.services import Service, ServiceGroup, service_env, wait_for
from scripts.testkit.metrics import scrape

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
LOOKBACK_SECONDS = 3600  # the whole run: the topics are this run's own
SEARCH = "car-0999"
FLIP_PAGE = 100
ROUNDS = 10
CAR = "car-09990"  # a car of the fleet whose page is measured
PUSH_INTERVAL = 1.0  # the dashboard's default push_interval
LISTENING = re.compile(r"dashboard on http://[^:]+:(\d+)/")


def run(ctx: BenchContext) -> dict:
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    seconds = 10 if ctx.quick else 60
    model_dir = small_model_dir(ctx)
    tag = uuid.uuid4().hex[:6]
    topics = (f"bench-dashboard-readings-{tag}", f"bench-dashboard-predictions-{tag}", f"bench-dashboard-dlq-{tag}")
    result = measure(ctx, model_dir, seconds, topics, tag)
    result["section_seconds"] = round(time.monotonic() - started, 1)
    result["load_average_at_start"] = round(load_at_start, 2)
    result["load_average_at_end"] = round(os.getloadavg()[0], 2)
    log.info(
        "dashboard: %s cars shown; page %.2f updates/s (ideal %.1f), render %.1f ms mean; SSE %.2f updates/s of %s "
        "bytes; snapshot p99 %s ms; CPU %s us/reading (bridge %s, predictor %s), %s%% of a core; lag at load end "
        "%s records; search %s ms",
        result["fleet_cars"], result.get("page_updates_per_s") or 0.0, result["ideal_updates_per_s"],
        result.get("page_render_mean_ms") or 0.0, result["sse_updates_per_s"], result["sse_bytes_per_update"],
        result["snapshot_build_p99_ms"], result["dashboard_cpu_us_per_reading"], result["bridge_cpu_us_per_reading"],
        result["predictor_cpu_us_per_reading"], result["dashboard_cpu_percent"],
        result["dashboard_lag_records_at_load_end"], result["search_ms"],
    )  # fmt: skip
    log.info("dashboard: %s", result)
    return result


# -- the dashboard's HTTP side --------------------------------------------------------------------------------------


def get(url: str, timeout: float = 30.0) -> tuple[bytes, float]:
    """The body of a GET and its round trip in ms."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return body, (time.perf_counter() - started) * 1000


def snapshot(base: str, query: str = "state=all&q=&page=0") -> tuple[dict, float]:
    body, ms = get(f"{base}/api/snapshot?{query}")
    return json.loads(body), ms


def stage_totals(snap: dict) -> dict[str, float | None]:
    return {stage["name"]: stage["total"] for stage in snap["stages"]}


def own_metrics(base: str) -> dict[str, Any]:
    """The dashboard's histogram buckets ({le: cumulative count}), its sum and count, and the pushed updates."""
    metrics = scrape(f"{base}/metrics", timeout=30)
    return {
        "buckets": {
            float(s.labels["le"]): s.value for s in metrics.samples if s.name == "dashboard_snapshot_seconds_bucket"
        },
        "sum": metrics.value("dashboard_snapshot_seconds_sum"),
        "count": metrics.value("dashboard_snapshot_seconds_count"),
        "pushed": metrics.value("dashboard_updates_pushed_total"),
        "clients": metrics.value("dashboard_clients"),
    }


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile on cumulative `buckets` ({upper bound: count}): linear within the bucket
    the rank falls in; in the +Inf bucket, the highest finite bound (a floor)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, buckets[bound]
    return lower


def wait_listening(service: Service, services: ServiceGroup, timeout: float = 90) -> str:
    """The dashboard's address from its log (it binds port 0), once it answers /readyz (every topic assigned)."""
    port: list[int] = []

    def ready() -> bool:
        if not port:
            found = [m for line in service.log_lines() if (m := LISTENING.search(line))]
            if not found:
                return False
            port.append(int(found[0].group(1)))
        try:
            return get(f"http://127.0.0.1:{port[0]}/readyz", timeout=5)[0].startswith(b"ok")
        except OSError:
            return False

    wait_for(ready, timeout, what="the dashboard's readiness", check=services.check)
    return f"http://127.0.0.1:{port[0]}"


# -- the two clients ------------------------------------------------------------------------------------------------


class SseClient:
    """A plain client of GET /events: every `update` event's arrival, the bytes of its data, and what it counted."""

    def __init__(self, base: str, timeout: float = 60.0) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.updates: list[dict[str, Any]] = []  # received (epoch s), bytes, generated_at (epoch s), totals
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sse", daemon=True)

    def __enter__(self) -> SseClient:
        self.connection.request("GET", "/events?state=all&q=&page=0", headers={"Accept": "text/event-stream"})
        self.response = self.connection.getresponse()
        if self.response.status != 200:
            raise RuntimeError(f"GET /events answered {self.response.status}")
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self.connection.sock is not None:
            with contextlib.suppress(OSError):
                self.connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.connection.close()

    def _run(self) -> None:
        event, data = b"", []
        try:
            while not self._stop.is_set():
                line = self.response.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if line.startswith(b"event:"):
                    event = line[6:].strip()
                elif line.startswith(b"data:"):
                    data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                elif not line:  # the end of an event
                    if event == b"update" and data:
                        self._update(b"\n".join(data))
                    event, data = b"", []
        except (OSError, ValueError) as exc:
            if not self._stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"

    def _update(self, payload: bytes) -> None:
        received = time.time()
        snap = json.loads(payload)
        self.updates.append(
            {
                "received": received,
                "bytes": len(payload),
                "generated_at": snap["generated_at"] / 1000,
                "totals": stage_totals(snap),
            }
        )

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return [u for u in list(self.updates) if start <= u["received"] <= end]


class Page:
    """One chromium page on the dashboard (Playwright's sync API, this thread); `error` when it cannot open."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.error: str | None = None
        self._playwright: Any = None
        self._browser: Any = None
        self.page: Any = None
        self._cdp: Any = None

    def __enter__(self) -> Page:
        if not Path(CHROMIUM).exists():
            self.error = f"{CHROMIUM} is not installed"
            return self
        try:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            self.page = self._browser.new_page(viewport={"width": 1600, "height": 1000})
            self.page.goto(f"{self.base}/", wait_until="load", timeout=60_000)
            self.page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1", timeout=60_000)
            self._cdp = self.page.context.new_cdp_session(self.page)
            self._cdp.send("Performance.enable")
        except Exception as exc:  # no browser: the other figures still count
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            self.__exit__()
        return self

    def __exit__(self, *_exc: object) -> None:
        for close in (self._browser, self._playwright):
            if close is not None:
                try:
                    close.close() if close is self._browser else close.stop()
                except Exception as exc:
                    log.warning("dashboard: closing the browser: %s", exc)
        self._browser = self._playwright = self.page = self._cdp = None

    def stats(self) -> dict[str, Any] | None:
        """Updates rendered so far and window.dashboardRenderStats; None without a page."""
        if self.page is None:
            return None
        try:
            stats = self.page.evaluate(
                "() => ({updates: Number(document.body.dataset.updates || 0), "
                "render: JSON.parse(JSON.stringify(window.dashboardRenderStats || {}))})"
            )
            # The renderer's main thread, busy seconds (Chrome's Performance domain): parsing, script, layout, paint.
            metrics = {m["name"]: m["value"] for m in self._cdp.send("Performance.getMetrics")["metrics"]}
            stats["task_s"] = metrics.get("TaskDuration")
            return stats
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return None

    def reset_max(self) -> None:
        if self.page is not None:
            self.page.evaluate("() => { if (window.dashboardRenderStats) window.dashboardRenderStats.maxMs = 0; }")


# -- the run --------------------------------------------------------------------------------------------------------


def measure(ctx: BenchContext, model_dir: Path, seconds: float, topics: tuple[str, str, str], tag: str) -> dict:
    readings_topic, predictions_topic, dlq = topics
    kafka = (ctx.bootstrap, ctx.kafka_security)
    ensure_topics(*kafka, {readings_topic: PARTITIONS, predictions_topic: PARTITIONS, dlq: 1})
    start = start_offsets(*kafka, [readings_topic, predictions_topic])

    def kafka_totals() -> tuple[int, int]:
        return records_added(*kafka, readings_topic, predictions_topic, start)

    env = service_env(ctx.bootstrap, "127.0.0.1", ctx.mqtt_port)
    summary_file = ctx.work_dir / f"dashboard-{tag}-simulator-summary.json"
    bridge_port, predictor_port = free_port(), free_port()
    group = f"bench-dashboard-predictor-{tag}"
    figures: dict[str, Any] = {}
    with ServiceGroup(env, ctx.work_dir / f"dashboard-{tag}-logs") as services:
        bridge = services.start(
            "bridge", "bridge",
            BRIDGE_CLIENT_ID=f"bench-dashboard-bridge-{tag}", BRIDGE_SHARED_GROUP=f"bench-dashboard-{tag}",
            BRIDGE_METRICS_PORT=str(bridge_port), BRIDGE_KAFKA_TOPIC=readings_topic, BRIDGE_DLQ_TOPIC=dlq,
            BRIDGE_SESSION_EXPIRY="60",
        )  # fmt: skip
        predictor = services.start(
            "predictor", "ml", "predict",
            ML_GROUP_ID=group, ML_MODEL_DIR=str(model_dir), ML_METRICS_PORT=str(predictor_port),
            ML_TOPIC=readings_topic, ML_OUTPUT_TOPIC=predictions_topic, ML_DLQ_TOPIC=dlq,
        )  # fmt: skip
        dashboard = services.start(
            "dashboard", "dashboard",
            DASHBOARD_PORT="0", DASHBOARD_READINGS_TOPIC=readings_topic, DASHBOARD_PREDICTIONS_TOPIC=predictions_topic,
            DASHBOARD_DLQ_TOPIC=dlq, DASHBOARD_PREDICTOR_GROUP=group, DASHBOARD_MODEL_DIR=str(model_dir),
            DASHBOARD_LOOKBACK_SECONDS=str(LOOKBACK_SECONDS),
            DASHBOARD_METRICS_URLS=(
                f"bridge=http://127.0.0.1:{bridge_port}/metrics,predictor=http://127.0.0.1:{predictor_port}/metrics"
            ),
        )  # fmt: skip
        wait_for(logged(bridge, "subscribing to"), 90, what="the bridge's subscription", check=services.check)
        wait_for(logged(predictor, "assigned partition", PARTITIONS), 300, what="the predictor", check=services.check)
        base = wait_listening(dashboard, services)
        time.sleep(2.0)
        with Page(base) as page, SseClient(base) as sse:
            figures = load(ctx, services, page, sse, base, kafka_totals, seconds, summary_file, tag)
        figures.update(after_load(base))
    return figures


def load(
    ctx: BenchContext,
    services: ServiceGroup,
    page: Page,
    sse: SseClient,
    base: str,
    kafka_totals: Any,
    seconds: float,
    summary_file: Path,
    tag: str,
) -> dict:
    """The load with the page and the SSE client open, then the drain until the dashboard counted everything."""
    by_name = {s.name: s for s in services.services}
    metrics_before = own_metrics(base)
    page.reset_max()
    page_before = page.stats()
    simulator = services.start(
        "simulator", "simulator",
        "--cars", str(CARS), "--rate", str(RATE), "--duration", str(seconds), "--qos", "1",
        "--client-id", f"bench-dashboard-simulator-{tag}", "--summary-file", str(summary_file), "--no-progress",
    )  # fmt: skip
    load_start, load_start_mono = time.time(), time.monotonic()
    samplers = {name: ProcessSampler(by_name[name].pid) for name in ("dashboard", "bridge", "predictor")}
    samplers["simulator"] = ProcessSampler(simulator.pid)
    for name, node in (("mosquitto", ctx.mosquitto), ("kafka", ctx.kafka)):  # the servers: the rest of the machine
        if (pid := node.pid()) is not None:
            samplers[name] = ProcessSampler(pid)
    offsets: list[tuple[float, int]] = [(load_start, 0)]  # (epoch s, records on the readings topic)
    deadline = time.monotonic() + seconds + 300
    while simulator.running():
        services.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not finish within {seconds + 300:.0f} s")
        polled = time.time()
        in_kafka = kafka_totals()[0]
        offsets.append(((polled + time.time()) / 2, in_kafka))
        time.sleep(max(0.0, 1.0 - (time.time() - polled)))
    # The end of the load: Kafka's end offsets, then what the dashboard counted, back to back.
    load_end, load_end_mono = time.time(), time.monotonic()
    at_end = kafka_totals()
    shown_at_end = stage_totals(snapshot(base)[0])
    load_cpu = {name: sampler.cpu_seconds for name, sampler in samplers.items()}
    load_elapsed = load_end_mono - load_start_mono
    metrics_after = own_metrics(base)
    clients_seen = metrics_after["clients"]
    page_after = page.stats()
    offsets.append((load_end, at_end[0]))
    simulator_summary = json.loads(summary_file.read_text())
    published = simulator_summary["published"]

    wait_drained(kafka_totals, published, timeout=300)
    final = kafka_totals()

    def counted_all() -> bool:
        latest = sse.updates[-1]["totals"] if sse.updates else {}
        return (latest.get("car_sensor") or 0) >= final[0] and (latest.get("predictions") or 0) >= final[1]

    try:
        wait_for(counted_all, 120, interval=0.5, what="the dashboard to count every record", check=services.check)
    except Exception as exc:
        log.warning("dashboard: %s", exc)
    usage = {name: {**sampler.stop(), "cpu_seconds": sampler.cpu_seconds} for name, sampler in samplers.items()}
    shown_final = stage_totals(snapshot(base)[0])

    figures: dict[str, Any] = {
        "cars": CARS,
        "seconds": seconds,
        "offered_readings_per_s": CARS * RATE,
        "published": published,
        "readings_in_kafka": final[0],
        "predictions_in_kafka": final[1],
        "publish_seconds": simulator_summary["seconds"],
        "publish_msgs_per_s": simulator_summary["msgs_per_s"],
    }
    figures.update(cpu_figures(usage, load_cpu, load_elapsed, shown_final, published))
    figures.update(page_figures(page, page_before, page_after, load_elapsed))
    figures.update(sse_figures(sse, load_start, load_end))
    figures.update(snapshot_figures(metrics_before, metrics_after, load_elapsed, clients_seen))
    figures.update(lag_figures(sse, offsets, load_start, load_end, at_end[0], shown_at_end))
    figures["dashboard_counted_everything"] = (shown_final.get("car_sensor") or 0) >= final[0] and (
        shown_final.get("predictions") or 0
    ) >= final[1]
    return figures


def cpu_figures(
    usage: dict[str, dict], load_cpu: dict[str, float], load_elapsed: float, shown: dict, published: int
) -> dict:
    readings, predictions = int(shown.get("car_sensor") or 0), int(shown.get("predictions") or 0)
    dashboard_s = usage["dashboard"]["cpu_seconds"]
    out: dict[str, Any] = {
        "dashboard_readings_counted": readings,
        "dashboard_predictions_counted": predictions,
        "dashboard_cpu_us_per_record": round(dashboard_s / max(readings + predictions, 1) * 1e6, 1),
        "dashboard_cpu_us_per_reading": round(dashboard_s / max(readings, 1) * 1e6, 1),
    }
    for name in ("bridge", "predictor", "simulator"):
        out[f"{name}_cpu_us_per_reading"] = round(usage[name]["cpu_seconds"] / max(published, 1) * 1e6, 1)
    for name in ("bridge", "predictor"):
        peer = out[f"{name}_cpu_us_per_reading"]
        out[f"dashboard_to_{name}_cpu_per_reading_ratio"] = (
            round(out["dashboard_cpu_us_per_reading"] / peer, 3) if peer else None
        )
    for name in ("dashboard", "bridge", "predictor", "simulator", "mosquitto", "kafka"):
        if name in load_cpu:
            out[f"{name}_cpu_percent"] = round(100 * load_cpu[name] / max(load_elapsed, 0.001), 1)
    for name in ("dashboard", "bridge", "predictor"):
        out[f"{name}_peak_rss_mb"] = usage[name]["peak_rss_mb"]
    return out


def page_figures(page: Page, before: dict | None, after: dict | None, elapsed: float) -> dict:
    out: dict[str, Any] = {"ideal_updates_per_s": round(1 / PUSH_INTERVAL, 3)}
    if before is None or after is None:
        out["browser_error"] = page.error or "no page"
        return out
    rendered = after["render"]["count"] - before["render"]["count"]
    render_ms = after["render"]["totalMs"] - before["render"]["totalMs"]
    out.update(
        {
            "page_updates": after["updates"] - before["updates"],
            "page_updates_per_s": round((after["updates"] - before["updates"]) / elapsed, 3),
            "page_render_mean_ms": round(render_ms / rendered, 1) if rendered else None,
            "page_render_max_ms": round(after["render"]["maxMs"], 1),
            "page_render_grid_last_ms": round(after["render"].get("panelMs", {}).get("grid", 0.0), 1),
        }
    )
    if before.get("task_s") is not None and after.get("task_s") is not None:
        busy_s = after["task_s"] - before["task_s"]
        updates = after["updates"] - before["updates"]
        out["page_main_thread_ms_per_update"] = round(busy_s * 1000 / updates, 1) if updates else None
        out["page_main_thread_percent"] = round(100 * busy_s / elapsed, 1)
    return out


def sse_figures(sse: SseClient, start: float, end: float) -> dict:
    updates = sse.between(start, end)
    sizes = [u["bytes"] for u in updates]
    # generated_at is taken as the build starts: build, serialisation and delivery, on one clock
    delivery_ms = [(u["received"] - u["generated_at"]) * 1000 for u in updates]
    series = [(round(u["received"] - start, 1), round(ms)) for u, ms in zip(updates, delivery_ms, strict=True)]
    log.debug("dashboard: SSE updates (s into the load, delivery ms): %s", series)
    out: dict[str, Any] = {
        "sse_updates": len(updates),
        "sse_updates_per_s": round(len(updates) / max(end - start, 0.001), 3),
        "sse_bytes_per_update": round(statistics.mean(sizes)) if sizes else None,
        "sse_max_bytes_per_update": max(sizes, default=None),
        "sse_kb_per_s": round(sum(sizes) / 1024 / max(end - start, 0.001), 1),
        "sse_delivery_p50_ms": round(statistics.median(delivery_ms), 1) if delivery_ms else None,
        "sse_delivery_max_ms": round(max(delivery_ms), 1) if delivery_ms else None,
        "sse_longest_gap_s": round(max((b["received"] - a["received"] for a, b in pairwise(updates)), default=0.0), 2),
    }
    if sse.error:
        out["sse_error"] = sse.error
    return out


def snapshot_figures(before: dict, after: dict, elapsed: float, clients: float) -> dict:
    buckets = {le: after["buckets"][le] - before["buckets"].get(le, 0.0) for le in after["buckets"]}
    count = after["count"] - before["count"]

    def ms(q: float) -> float | None:
        value = histogram_quantile(q, buckets)
        return None if value is None else round(value * 1000, 2)

    return {
        "snapshot_builds": int(count),
        "snapshot_build_p50_ms": ms(0.5),
        "snapshot_build_p99_ms": ms(0.99),
        "snapshot_build_mean_ms": round((after["sum"] - before["sum"]) / count * 1000, 2) if count else None,
        "updates_pushed_per_s": round((after["pushed"] - before["pushed"]) / elapsed, 3),
        "dashboard_clients": int(clients),
    }


def lag_figures(
    sse: SseClient, offsets: list[tuple[float, int]], start: float, end: float, in_kafka: int, shown: dict
) -> dict:
    """How far the dashboard's count trailed the readings topic's end offsets, in records and seconds."""
    offsets = sorted(offsets)
    times, ends = [t for t, _ in offsets], [e for _, e in offsets]

    def end_offset_at(t: float) -> float:
        i = bisect_left(times, t)
        if i == 0:
            return ends[0]
        if i >= len(times):
            return ends[-1]
        (t0, e0), (t1, e1) = offsets[i - 1], offsets[i]
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0) if t1 > t0 else e1

    def reached_at(count: float) -> float:
        """When the end offsets first reached `count` (interpolated)."""
        for (t0, e0), (t1, e1) in pairwise(offsets):
            if e1 >= count:
                return t0 + (t1 - t0) * ((count - e0) / (e1 - e0) if e1 > e0 else 1.0)
        return times[-1]

    lags_s, lags_records = [], []
    for update in sse.between(start, end):
        counted = update["totals"].get("car_sensor") or 0
        at = update["generated_at"]
        lags_records.append(max(0.0, end_offset_at(at) - counted))
        lags_s.append(max(0.0, at - reached_at(counted)) if counted else 0.0)
    rate = in_kafka / max(end - start, 0.001)
    lag_at_end = max(0, in_kafka - int(shown.get("car_sensor") or 0))
    caught_up = [u["received"] for u in sse.updates if (u["totals"].get("car_sensor") or 0) >= in_kafka]
    return {
        "dashboard_lag_records_at_load_end": lag_at_end,
        "dashboard_lag_s_at_load_end": round(lag_at_end / rate, 2) if rate else None,
        "dashboard_lag_p50_s": round(statistics.median(lags_s), 2) if lags_s else None,
        "dashboard_lag_max_s": round(max(lags_s), 2) if lags_s else None,
        "dashboard_lag_max_records": round(max(lags_records)) if lags_records else None,
        "dashboard_catch_up_s": round(max(0.0, min(caught_up) - end), 2) if caught_up else None,
    }


def after_load(base: str) -> dict:
    """At 100,000 cars with no page open: the fleet shown, a search and a page flip beside page 0, each call in a
    push interval of its own (the grid's order is cached per interval and per filter)."""
    searches, flips, firsts = [], [], []
    found, flipped, fleet = None, None, {}
    before = own_metrics(base)
    for _ in range(ROUNDS):
        started = time.monotonic()
        snap, ms = snapshot(base, f"state=all&q={SEARCH}&page=0")
        searches.append(ms)
        found = snap["grid"]["matching"]
        snap, ms = snapshot(base, f"state=all&q=&page={FLIP_PAGE}")
        flips.append(ms)
        flipped = snap["grid"]["page"]
        time.sleep(max(0.0, started + PUSH_INTERVAL * 1.05 - time.monotonic()))
    for _ in range(ROUNDS):
        started = time.monotonic()
        snap, ms = snapshot(base)
        firsts.append(ms)
        fleet = snap["fleet"]
        time.sleep(max(0.0, started + PUSH_INTERVAL * 1.05 - time.monotonic()))
    after = own_metrics(base)
    builds = after["count"] - before["count"]
    pages = []
    for _ in range(ROUNDS):
        body, ms = get(f"{base}/api/car/{CAR}")
        pages.append(ms)
    car = json.loads(body)
    kept = car["kept"]
    return {
        "fleet_cars": fleet.get("cars"),
        # Cars not healthy are sorted for every page (dashboard/fleet.py): what the grid's order costs depends on them.
        **{f"fleet_{state}": fleet.get(state) for state in ("healthy", "warned", "ood", "failed")},
        "search_query": SEARCH,
        "search_matching": found,
        "search_ms": round(statistics.median(searches), 1),
        "search_max_ms": round(max(searches), 1),
        "page_flip_page": flipped,
        "page_flip_ms": round(statistics.median(flips), 1),
        "snapshot_ms": round(statistics.median(firsts), 1),
        # The dashboard's own build time of these calls: the rest of a round trip is serialisation and HTTP.
        "after_load_build_mean_ms": round((after["sum"] - before["sum"]) / builds * 1000, 2) if builds else None,
        # A car's page (/api/car/<id>): its history within the dashboard's budget of points (dashboard/history.py).
        "car_page_ms": round(statistics.median(pages), 1),
        "car_page_bytes": len(body),
        "car_page_readings": len(car["history"]["readings"]["event_time"]) if car["history"] else 0,
        "car_history_cars": kept["cars"],
        "car_history_points_per_car": kept["points_per_car"],
        "car_history_mb": round(kept["bytes"] / 2**20, 1),
    }
