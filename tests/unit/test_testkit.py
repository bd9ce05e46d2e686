"""The test kit's own logic without servers (scripts/testkit/): a child service's failures show its log's tail,
one metrics scrape parsed by prometheus_client, the reading builder."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from common import schemas
from scripts.runtime.local import ROOT, free_port
from scripts.testkit.bridge import start_bridge
from scripts.testkit.metrics import parse, read_sample, scrape, scrape_or_empty
from scripts.testkit.readings import as_in_kafka, as_mqtt_messages, reading
from scripts.testkit.services import TAIL_LINES, ChildService, python_env

# -- a child service ---------------------------------------------------------------------------------------------

PROBE = '''
"""A stand-in service: prints `lines` numbered lines; `exit`: exits with `code` at once; `serve`: says it is ready
and runs until SIGTERM, then exits with `code`."""
import signal, sys, time

mode, code, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for n in range(lines):
    print(f"line {n}")
if mode == "exit":
    sys.exit(code)
signal.signal(signal.SIGTERM, lambda *_: (print("stopping on SIGTERM"), sys.exit(code)))
print("ready")
while True:
    time.sleep(0.1)
'''


@pytest.fixture
def probe(tmp_path: Path):
    (tmp_path / "kit_probe.py").write_text(textwrap.dedent(PROBE))
    env = {**python_env(), "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    started: list[ChildService] = []

    def start(mode: str, code: int, lines: int = 0) -> ChildService:
        name = f"probe-{len(started)}"
        service = ChildService(name, "kit_probe", (mode, str(code), str(lines)), env, tmp_path / "logs")
        started.append(service.start())
        return service

    yield start
    for service in started:
        service.kill()


def test_a_service_that_exits_non_zero_shows_the_last_lines_of_its_log(probe) -> None:
    service = probe("exit", 3, lines=100)
    with pytest.raises(AssertionError) as failed:
        service.finish(timeout=60)
    message = str(failed.value)
    assert "probe-0: exited with code 3" in message and str(service.log_file) in message
    shown = [line for line in message.splitlines() if line.startswith("line ")]
    assert shown == [f"line {n}" for n in range(100 - TAIL_LINES, 100)]


def test_waiting_on_a_service_that_died_says_so_with_its_log(probe) -> None:
    service = probe("exit", 2, lines=3)
    with pytest.raises(AssertionError, match=r"(?s)exited with code 2.*line 2"):
        service.wait_for_log("something it never says", timeout=60)


def test_a_service_that_never_says_it_is_ready_times_out_with_its_log(probe) -> None:
    service = probe("serve", 0, lines=1)
    service.wait_for_log("ready", timeout=60)
    with pytest.raises(AssertionError, match=r"(?s)no 'never said' within 1 s.*line 0\nready"):
        service.wait_for_log("never said", timeout=1)
    service.stop_ok()


def test_stop_ok_passes_on_exit_code_0_and_fails_with_the_log_otherwise(probe) -> None:
    clean = probe("serve", 0)
    clean.wait_for_log("ready", timeout=60)
    clean.stop_ok()
    assert clean.returncode == 0

    failing = probe("serve", 1)
    failing.wait_for_log("ready", timeout=60)
    with pytest.raises(AssertionError, match=r"(?s)exited with code 1 on SIGTERM, expected 0.*stopping on SIGTERM"):
        failing.stop_ok()


def test_finish_returns_the_log_of_a_service_that_exits_0(probe) -> None:
    assert probe("exit", 0, lines=2).finish(timeout=60).splitlines() == ["line 0", "line 1"]


def test_a_bridge_that_refuses_its_settings_fails_to_start_with_its_error_in_the_message(tmp_path: Path) -> None:
    """The real service: `start_bridge` waits for its MQTT connection and, when it exits instead, says why."""
    settings = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "MQTT_PORT": "1", "BRIDGE_RANGE_POLICY": "bogus"}
    with pytest.raises(AssertionError) as failed:
        start_bridge(tmp_path, settings, "kit-test")
    assert "exited with code 2" in str(failed.value)
    assert "error: invalid settings: --range-policy" in str(failed.value)


def test_two_services_of_a_test_cannot_share_a_log(probe, tmp_path: Path) -> None:
    first = probe("exit", 0)
    first.finish(timeout=60)
    again = ChildService(first.name, "kit_probe", ("exit", "0", "0"), python_env(), first.log_file.parent)
    with pytest.raises(AssertionError, match="a name of its own"):
        again.start()


# -- metrics ------------------------------------------------------------------------------------------------------

EXPOSITION = """\
# HELP bridge_produced_total Readings produced.
# TYPE bridge_produced_total counter
bridge_produced_total 7.0
# HELP bridge_out_of_range_total Fields out of range.
# TYPE bridge_out_of_range_total counter
bridge_out_of_range_total{field="coolant_temp"} 2.0
bridge_out_of_range_total{field="battery_voltage"} 3.0
# HELP lag Lag per partition.
# TYPE lag gauge
lag{topic="t",partition="1"} 4.0
lag{partition="0",topic="t"} 5.0
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1.0
latency_seconds_bucket{le="+Inf"} 3.0
latency_seconds_sum 0.7
latency_seconds_count 3.0
"""


def test_a_scrape_keys_samples_by_name_and_sorted_labels_and_adds_labelled_ones_up() -> None:
    metrics = parse(EXPOSITION)
    assert metrics["bridge_produced_total"] == 7.0
    assert metrics['bridge_out_of_range_total{field="coolant_temp"}'] == 2.0
    assert metrics["bridge_out_of_range_total"] == 5.0, "labelled samples add up under the bare name"
    assert metrics.value("lag", partition="1", topic="t") == 4.0 and metrics['lag{partition="0",topic="t"}'] == 5.0
    assert metrics.label_values("lag", "partition") == {"0", "1"}
    assert "latency_seconds_bucket" not in metrics, "a histogram's cumulative buckets do not add up"
    assert metrics.value("latency_seconds_count") == 3.0 and metrics.value("latency_seconds_sum") == 0.7
    assert metrics.value("absent") == 0.0 and metrics.value("absent", default=-1.0) == -1.0


def test_scrape_reads_a_real_metrics_endpoint() -> None:
    registry = CollectorRegistry()
    Counter("probe_events", "Events.", ["kind"], registry=registry).labels(kind="a").inc(3)
    Gauge("probe_level", "Level.", registry=registry).set(1.5)
    Histogram("probe_seconds", "Seconds.", registry=registry).observe(0.2)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        metrics = scrape(url)
        assert metrics.value("probe_events_total", kind="a") == 3.0 and metrics["probe_events_total"] == 3.0
        assert read_sample(url, "probe_level") == 1.5
        assert metrics.value("probe_seconds_count") == 1.0
    finally:
        server.shutdown()
        server.server_close()  # refused from now on, not accepted and left unanswered until the timeout
        thread.join(10)
    assert scrape_or_empty(url) == {}
    with pytest.raises(OSError):
        scrape(url)


# -- readings -----------------------------------------------------------------------------------------------------


def test_a_reading_has_every_field_a_sender_publishes_and_in_kafka_every_field_of_the_schema() -> None:
    sent = reading(car_id="car-00042", seq=9)
    assert list(sent) == schemas.payload_fields()
    assert (sent["car_id"], sent["seq"]) == ("car-00042", 9)
    for name, (low, high) in schemas.SENSOR_RANGES.items():
        assert low <= sent[name] <= high, name
    stored = as_in_kafka(sent)
    assert set(stored) == set(schemas.field_names(schemas.READING))
    assert (stored["out_of_range"], stored["seq_origin"]) == ([], schemas.SEQ_FROM_SENDER)
    stored["out_of_range"].append("speed")
    assert as_in_kafka(sent)["out_of_range"] == [], "each record gets its own default list"
    topic, payload = as_mqtt_messages([sent])[0]
    assert topic.endswith("/car-00042") and json.loads(payload) == sent


def test_a_misspelt_override_is_refused() -> None:
    with pytest.raises(ValueError, match="spede"):
        reading(spede=3.0)
