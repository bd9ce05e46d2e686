"""The live simulator: the fleet publishes its readings over MQTT on schedule, in simulated time.

Readings go out car by car, spread evenly over each reading interval (car i of n is due i/n of an interval
after car 1), so 100,000 cars at one reading per 10 s make a steady 10,000 msg/s rather than bursts. The fleet
is stepped one interval at a time for all cars at once (numpy), so the data equal `generate_readings()` for the
same seed whatever the pace. When the broker cannot keep up the loop falls behind schedule (shown as
"behind schedule") rather than buffering without bound.

`run_live(settings)` runs it from Python (it returns a RunSummary); `python -m simulator` is the command line.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from common.topics import car_id, mqtt_topic
from simulator.fleet import Fleet, FleetStep
from simulator.payload import encode_step
from simulator.reporting import RunSummary
from simulator.session import PublishSession
from simulator.settings import LiveSettings

log = logging.getLogger(__name__)

BATCH = 1000  # readings encoded at once: large enough to amortise numpy slicing, small enough to stay on time
MAX_SLEEP_S = 0.05  # the loop wakes at least this often to notice a stop and refresh the progress line
# Readings go out in ticks: the loop sleeps until the oldest unsent reading is TICK_S late, then sends every reading
# due by then. A reading thus leaves at most 5 ms after its due time (its event_time stays the due time), and at
# 10,000 msg/s the loop wakes 200 times a second instead of once per reading or two: each wake-up (a select, one
# acknowledgement read, numpy slices, the progress check) cost more CPU than publishing its reading.
TICK_S = 0.005


def planned_readings(settings: LiveSettings) -> int | None:
    """How many readings the run publishes in total (None: until stopped)."""
    limits = []
    if settings.count is not None:
        limits.append(settings.count)
    if settings.duration is not None:
        limits.append(math.ceil(settings.duration / wall_spacing_s(settings)))
    return min(limits) if limits else None


def wall_spacing_s(settings: LiveSettings) -> float:
    """Wall-clock seconds between two consecutive readings of the fleet."""
    return 1.0 / (settings.rate * settings.cars * settings.speedup)


def run_live(settings: LiveSettings, stop: threading.Event | None = None) -> RunSummary:
    """Publish the fleet's readings until the count or duration is reached or `stop` is set (SIGINT/SIGTERM set
    it when called from the main thread); in-flight QoS 1 messages are acknowledged before it returns."""
    total = planned_readings(settings)
    log.info(
        "simulating %d cars, %.3g readings/s each (x%.3g speed-up: %.0f msg/s), %s readings, failure rate %.3g/h",
        settings.cars,
        settings.rate,
        settings.speedup,
        1.0 / wall_spacing_s(settings),
        f"{total:,}" if total is not None else "unlimited",
        settings.failure_rate,
    )
    connections = min(settings.connections, settings.cars)
    car_ids = [car_id(number) for number in range(1, settings.cars + 1)]
    with PublishSession(settings, connections, "live", stop, car_ids) as session:
        # Event time starts once connected: logging in a large fleet over TLS takes seconds, which would
        # otherwise show up as latency of the first readings.
        start_ms = settings.start_time if settings.start_time is not None else int(time.time() * 1000)
        fleet = Fleet(settings.cars, settings.seed, settings.fleet_config(start_ms))
        _publish_on_schedule(fleet, settings, total, session)
        if session.stop.is_set():
            stopped_by = "signal"
        elif settings.count is not None and session.stats.published >= settings.count:
            stopped_by = "count"
        else:
            stopped_by = "duration"
        return session.finish(settings.cars, stopped_by)


def _publish_on_schedule(fleet: Fleet, settings: LiveSettings, total: int | None, session: PublishSession) -> None:
    """Publish until `total` readings went out, the duration's deadline passed, or a stop came. A run that falls
    behind its schedule still ends at the deadline: --duration is wall-clock time."""
    cars, stats, stop = fleet.cars, session.stats, session.stop
    topics = [mqtt_topic(car) for car in fleet.car_ids]
    spacing = wall_spacing_s(settings)
    deadline = stats.started + settings.duration if settings.duration is not None else math.inf
    step: FleetStep | None = None
    while total is None or stats.published < total:
        sent = stats.published
        now = time.monotonic()
        if stop.is_set() or now >= deadline:
            return
        late = now - (stats.started + sent * spacing)  # how late the oldest unsent reading is
        if late < TICK_S:
            session.show()
            session.publisher.pump()  # the acknowledgements, once per tick rather than as each arrives
            time.sleep(min(MAX_SLEEP_S, TICK_S - late))
            continue
        stats.lag_s = late - TICK_S
        due = int((now - stats.started) / spacing) + 1
        if total is not None:
            due = min(due, total)
        seq, first = divmod(sent, cars)
        if step is None or step.seq != seq:
            step = fleet.step()
        last = min(cars, first + (due - sent), first + BATCH)
        for car, payload in zip(range(first, last), encode_step(step, fleet.car_ids, first, last), strict=True):
            if not session.publish(car, topics[car], payload):
                break
        done = first + stats.published - sent
        stats.failures += int(step.new_failure[first:done].sum())
        stats.failure_readings += int(step.failure[first:done].sum())
        session.show()
