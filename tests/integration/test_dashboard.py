"""The dashboard in a real browser (Debian's chromium driven by Playwright) over the real chain: the simulator
publishes a small fleet over MQTT, the bridge carries it into Kafka, the predictor predicts, `mosquitto_pub` sends
payloads the bridge must dead-letter, and `python -m dashboard` shows it all. What the page shows is checked
against what is in Kafka: the cars and their states, an alert and its lead, each stage's total, the rates of the
chart (their sum over time is the stage's total), the DLQ by reason. A screenshot is saved under the test's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from common import dlq, schemas
from common.avro import AvroCodec
from common.topics import PREDICTOR_GROUP, car_id, mqtt_topic
from ml.training.untrained_model import save_untrained_model
from scripts.runtime.local import ROOT, free_port
from scripts.testkit.kafka import read_to_end
from scripts.testkit.readings import reading

pytestmark = pytest.mark.integration

CARS = 40
READINGS = 4000
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT_DIR = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / ".run" / "test-output"))
WAIT_S = 120


def page_number(page, selector: str) -> float | None:
    text = page.inner_text(selector).strip()
    return float(text) if text else None


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: install it (Debian: apt-get install chromium) or set CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_page_shows_the_cars_an_alert_the_stage_rates_and_the_dlq_that_kafka_holds(
    kafka_bootstrap, mqtt_endpoint, topic_factory, bridge_factory, service_factory, browser, tmp_path: Path
) -> None:
    _, mqtt_port = mqtt_endpoint
    readings_topic, predictions_topic = topic_factory("readings", 2), topic_factory("predictions", 2)
    dlq_topic = topic_factory("dlq", 1)
    group = f"{PREDICTOR_GROUP}-{readings_topic}"
    models = tmp_path / "models"
    # Threshold 0: every prediction is an alert, so each car's alert starts with its first prediction.
    version = save_untrained_model(models, window=6, horizon=30, threshold=0.0).name
    bridge = bridge_factory(kafka_bootstrap, mqtt_port, (readings_topic, dlq_topic), client_id=f"b-{readings_topic}")
    predictor_port, dashboard_port = free_port(), free_port()
    kafka = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    predictor = service_factory(
        "predictor", "ml", "predict",
        **kafka, ML_MODEL_DIR=str(models), ML_TOPIC=readings_topic, ML_OUTPUT_TOPIC=predictions_topic,
        ML_DLQ_TOPIC=dlq_topic, ML_GROUP_ID=group, ML_METRICS_PORT=str(predictor_port),
    )  # fmt: skip
    metrics = (
        f"bridge=http://127.0.0.1:{bridge.metrics_port}/metrics,predictor=http://127.0.0.1:{predictor_port}/metrics"
    )
    dashboard = service_factory(
        "dashboard", "dashboard", metrics_port=dashboard_port,
        **kafka, DASHBOARD_PORT=str(dashboard_port), DASHBOARD_READINGS_TOPIC=readings_topic,
        DASHBOARD_PREDICTIONS_TOPIC=predictions_topic, DASHBOARD_DLQ_TOPIC=dlq_topic, DASHBOARD_PREDICTOR_GROUP=group,
        DASHBOARD_METRICS_URLS=metrics, DASHBOARD_MODEL_DIR=str(models), DASHBOARD_LOOKBACK_SECONDS="3600",
    )  # fmt: skip
    url = f"http://127.0.0.1:{dashboard_port}/"
    try:
        dashboard.wait_until(lambda: dashboard.health("/readyz")[0] == 200, "readiness", WAIT_S)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(url)
        page.wait_for_selector("#connection:has-text('live')", timeout=30_000)

        # The fleet, then payloads nobody here wrote: two that are not JSON, one naming another car than its topic.
        simulator = service_factory(
            "simulator", "simulator",
            "--cars", str(CARS), "--count", str(READINGS), "--speedup", "100000", "--seed", "11", "--qos", "1",
            "--client-id", f"sim-{readings_topic}", "--summary-file", str(tmp_path / "summary.json"), "--no-progress",
            MQTT_HOST="127.0.0.1", MQTT_PORT=str(mqtt_port),
        )  # fmt: skip
        simulator.finish(180)
        published = json.loads((tmp_path / "summary.json").read_text())["published"]
        assert published == READINGS
        mismatched = json.dumps(reading(car_id=car_id(2))).encode()
        for payload, car in ((b"not json", car_id(1)), (b"{", car_id(1)), (mismatched, car_id(3))):
            mosquitto_pub(mqtt_port, mqtt_topic(car), payload)

        # Kafka's side, once everything arrived.
        codec_r, codec_p = AvroCodec(schemas.READING, readings_topic), AvroCodec(schemas.PREDICTION, predictions_topic)
        predictor.wait_until(
            lambda: (
                len(read_to_end(kafka_bootstrap, predictions_topic)) >= READINGS
                and len(read_to_end(kafka_bootstrap, dlq_topic)) >= 3
            ),
            "every prediction and dead letter in Kafka",
            WAIT_S,
        )
        readings = [codec_r.decode(m.value()) for m in read_to_end(kafka_bootstrap, readings_topic)]
        predictions = [codec_p.decode(m.value()) for m in read_to_end(kafka_bootstrap, predictions_topic)]
        dead = Counter(dlq.parse(m.headers())["error"] for m in read_to_end(kafka_bootstrap, dlq_topic))
        assert len(readings) == len(predictions) == READINGS

        # The page settles on Kafka's totals.
        page.wait_for_function(
            f"""() => {{
                const total = s => document.querySelector(`#stages tr[data-stage="${{s}}"] .stage-total`)?.textContent;
                return total('car_sensor') === '{READINGS}' && total('predictions') === '{READINGS}'
                    && document.querySelector('#dlq-total')?.textContent.trim() === '3'
                    && total('mqtt_in') === '{READINGS + 3}';
            }}""",
            timeout=60_000,
        )
        page.wait_for_timeout(2500)  # two more updates: the chart's last rates include the last records

        # Cars and their states: failed per the latest reading's ground truth, the others warned (threshold 0).
        latest: dict[str, dict] = {}
        for r in sorted(readings, key=lambda r: r["seq"]):
            latest[r["car_id"]] = r
        failed = sum(1 for r in latest.values() if r["failure_occurred"])
        shown = {
            state: page_number(page, f"#fleet-{state}") for state in ("cars", "healthy", "warned", "ood", "failed")
        }
        assert shown == {"cars": CARS, "healthy": 0, "warned": CARS - failed, "ood": 0, "failed": failed}, shown
        cells = page.eval_on_selector_all(".car-cell", "cells => cells.map(c => [c.dataset.carId, c.dataset.state])")
        expected_states = {car: "failed" if r["failure_occurred"] else "warned" for car, r in latest.items()}
        assert dict(cells) == expected_states

        # An alert: each car's first prediction, and the lead = its failure's onset minus the alert, in event time.
        first_alert = {}
        for p in sorted(predictions, key=lambda p: p["seq"]):
            first_alert.setdefault(p["car_id"], p)
        rows = page.eval_on_selector_all(
            "#alerts tbody tr", "rows => rows.map(r => [r.dataset.carId, r.dataset.seq, r.dataset.leadS])"
        )
        assert rows, "no alert on the page"
        with_lead = 0
        for car, seq, lead in rows:
            assert int(seq) == first_alert[car]["seq"], (car, seq)
            onset = first_onset(readings, car, after_seq=int(seq))
            if onset is None:
                assert lead in ("", None), (car, lead)
            else:
                with_lead += 1
                assert float(lead) == pytest.approx((onset["event_time"] - first_alert[car]["event_time"]) / 1000)
        assert with_lead >= 1, f"no alert with a lead among {rows}"

        # Stage rates: the chart's rates, summed over its seconds, are the records each stage carried.
        chart = page.evaluate("() => ({labels: dashboardChart.series.map(s => s.label), data: dashboardChart.data})")
        times = chart["data"][0]
        for label, total in (("car-sensor", READINGS), ("predictions", READINGS), ("MQTT in", READINGS + 3)):
            series = chart["data"][chart["labels"].index(label)]
            carried = sum(
                rate * (times[i] - times[i - 1]) for i, rate in enumerate(series) if i > 0 and rate is not None
            )
            assert carried == pytest.approx(total, abs=1), (label, carried, total)
        assert page_number(page, '#stages tr[data-stage="car_sensor"] .stage-rate') is not None
        assert page_number(page, "#lag") == 0

        # The DLQ by reason, as its records' headers say.
        by_reason = dict(
            page.eval_on_selector_all(
                "#dlq tbody tr[data-reason]",
                "rows => rows.map(r => [r.dataset.reason, r.querySelector('.dlq-count').textContent])",
            )
        )
        assert {reason: int(count) for reason, count in by_reason.items()} == dict(dead)
        assert dead == {"malformed_json": 2, "car_id_mismatch": 1}, dead

        assert page.inner_text("#model-version").strip() == version
        # Which program serves, from the predictor's metrics (predictor_serving_info), beside the version.
        assert page.inner_text("#model-serving").strip() == "served by python"
        assert page.inner_text("#header-serving").strip() == "served by python"
        assert errors == [], errors
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        screenshot = SCREENSHOT_DIR / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")
    finally:
        dashboard.stop_ok()
        predictor.stop()
        bridge.stop(60)


def first_onset(readings: list[dict], car: str, after_seq: int) -> dict | None:
    """The car's first reading in failure after a healthy one, later than `after_seq`."""
    previous = None
    for r in sorted((r for r in readings if r["car_id"] == car), key=lambda r: r["seq"]):
        if r["failure_occurred"] and previous is not None and not previous["failure_occurred"] and r["seq"] > after_seq:
            return r
        previous = r
    return None


def mosquitto_pub(port: int, topic: str, payload: bytes) -> None:
    command = [shutil.which("mosquitto_pub") or "mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-s"]
    result = subprocess.run(command, input=payload, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
