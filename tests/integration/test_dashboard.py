"""The dashboard in a real browser (Debian's chromium driven by Playwright) over the real chain: the simulator
publishes a small fleet over MQTT, the bridge carries it into Kafka, the predictor predicts, `mosquitto_pub` sends
payloads the bridge must dead-letter, and `python -m dashboard` shows it all. What the page shows is checked
against what is in Kafka: the cars and their states, an alert and its lead, each stage's total, the rates of the
chart (their sum over time is the stage's total), the MQTT-in rate above 0 while the fleet publishes, the DLQ by
reason; then a car's page, opened from its cell: its readings and predictions, the threshold, its alert and its
failure onset marked. Screenshots of both pages are saved under the test's output.

The champion/challenger panel on a real registry in the model folder: "not in use" before there is one; the served
version adopted as champion and a challenger registered, which the predictor scores in the shadow while the fleet
publishes; a round of the judge (ml/continual/judge.py) on what Kafka holds writes judgement.json, and the panel
shows both versions' offline figures (their reports), their live figures, the verdict and reason, the decisions
newest first; a reject by hand then makes the judgement an earlier pair's.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from common import dlq, schemas
from common.avro import AvroCodec
from common.topics import PREDICTOR_GROUP, car_id, mqtt_topic
from ml.continual.judge import Judge
from ml.continual.lookback import PRODUCT, SHADOW, Lookback
from ml.gate import GateRule
from ml.registry import Registry, read_judgement
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
    dlq_topic, shadow_topic = topic_factory("dlq", 1), topic_factory("shadow", 2)
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
        ML_DLQ_TOPIC=dlq_topic, ML_GROUP_ID=group, ML_METRICS_PORT=str(predictor_port), ML_SHADOW_TOPIC=shadow_topic,
        ML_RELOAD_INTERVAL="1",
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
        # The bridge's counter scraped once before the fleet publishes: the chart's rates start from the first total
        # the dashboard knows, so records carried before it (a first scrape that timed out on a busy machine: a CI
        # run's chart once summed 3,419 of 4,003) are in no rate.
        page.wait_for_function(
            "() => document.querySelector('#stages tr[data-stage=\"mqtt_in\"] .stage-total')?.textContent === '0'",
            timeout=30_000,
        )
        # Every stage rate the page shows, its highest so far: the MQTT-in rate must read above 0 while the fleet
        # publishes (a 1 s window once read 0.0/s there while car-sensor read 580/s).
        page.evaluate(RECORD_HIGHEST_RATES)
        registry, challenger = adopt_a_registry(page, models, version)
        predictor.wait_for_log(f"scoring challenger {challenger} in the shadow")  # before the fleet publishes

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
                and len(read_to_end(kafka_bootstrap, shadow_topic)) >= READINGS
            ),
            "every prediction, shadow prediction and dead letter in Kafka",
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

        highest = page.evaluate("() => window.highestRates")
        assert highest.get("mqtt_in", 0) > 0 and highest.get("car_sensor", 0) > 0, highest

        # Cars and their states: failed per the latest reading's ground truth, the others warned (threshold 0)
        # unless the latest alert was suppressed (the car reported a failure within its last W readings): healthy.
        latest: dict[str, dict] = {}
        for r in sorted(readings, key=lambda r: r["seq"]):
            latest[r["car_id"]] = r
        latest_prediction = {p["car_id"]: p for p in sorted(predictions, key=lambda p: p["seq"])}
        expected_states = {
            car: "failed"
            if r["failure_occurred"]
            else "warned"
            if latest_prediction[car]["failure_predicted"]
            else "healthy"
            for car, r in latest.items()
        }
        assert all(p["alert_suppressed"] for car, p in latest_prediction.items() if expected_states[car] == "healthy")
        shown = {
            state: page_number(page, f"#fleet-{state}") for state in ("cars", "healthy", "warned", "ood", "failed")
        }
        counts = Counter(expected_states.values())
        assert shown == {"cars": CARS, "ood": 0, **{s: counts[s] for s in ("healthy", "warned", "failed")}}, shown
        cells = page.eval_on_selector_all(".car-cell", "cells => cells.map(c => [c.dataset.carId, c.dataset.state])")
        assert dict(cells) == expected_states

        # An alert: each car's first alerting prediction, and the lead = its failure's onset minus the alert, in
        # event time.
        first_alert = {}
        for p in sorted(predictions, key=lambda p: p["seq"]):
            if p["failure_predicted"]:
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
        shadow = [codec_p.decode(m.value()) for m in read_to_end(kafka_bootstrap, shadow_topic)]
        check_a_judgement(page, registry, readings, predictions, shadow)
        assert errors == [], errors
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        screenshot = SCREENSHOT_DIR / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")
        check_a_decision_after_it(page, registry, challenger)

        check_a_cars_page(page, url, readings, predictions, first_alert)
        page.screenshot(path=str(SCREENSHOT_DIR / "dashboard-car.png"), full_page=True)
        assert errors == [], errors
    finally:
        dashboard.stop_ok()
        predictor.stop()
        bridge.stop(60)


def write_report(folder: Path, warned: int, pr_auc: float, threshold: float) -> dict:
    """report/report.json as training writes it, with the keys the panels read (the LSTM at its operating point):
    what an untrained version lacks. Returns the figures written."""
    episodes = {
        "episodes": 20, "warned": warned, "warned_share": warned / 20, "median_lead_s": 240.0, "false_alerts": 3,
        "healthy_car_hours": 30.0, "false_alerts_per_healthy_car_hour": 0.1,
    }  # fmt: skip
    (folder / "report").mkdir(exist_ok=True)
    (folder / "report" / "report.json").write_text(
        json.dumps({"models": {"lstm": {"pr_auc": pr_auc, "threshold": threshold, "episodes": episodes}}})
    )
    return {**episodes, "pr_auc": pr_auc}


def panel_cells(page) -> dict[tuple[str, str, str], str]:
    """The champion/challenger table's cells: (figure, role, offline|live|fact) -> text."""
    cells = page.eval_on_selector_all(
        "#registry-versions tbody td[data-role]",
        "cells => cells.map(c => [c.parentElement.dataset.figure, c.dataset.role, c.dataset.kind, c.textContent])",
    )
    return {(figure, role, kind): text for figure, role, kind, text in cells}


def history_rows(page) -> list[tuple[str, str, str]]:
    return [
        tuple(row)
        for row in page.eval_on_selector_all(
            "#registry-history tr",
            "rows => rows.map(r => [r.dataset.action, r.dataset.version, r.querySelector('.reason').textContent])",
        )
    ]


def adopt_a_registry(page, models: Path, served: str) -> tuple[Registry, str]:
    """No registry: the panel says so and how to adopt one. Then the served version adopted as the champion and a
    challenger registered, each with a report: the panel shows both, their offline figures, no live judgement."""
    page.wait_for_selector('#registry[data-state="absent"]', timeout=30_000)
    assert "python -m ml registry" in page.text_content("#registry-none")
    offline = {served: write_report(models / served, warned=14, pr_auc=0.61, threshold=0.0)}
    registry = Registry(models)
    registry.register_challenger(served, "the version in service")
    registry.promote("adopting the registry")
    challenger = save_untrained_model(models, window=6, horizon=30, threshold=0.5, seed=2).name
    offline[challenger] = write_report(models / challenger, warned=16, pr_auc=0.66, threshold=0.5)
    registry.register_challenger(challenger, "retrained")
    page.wait_for_selector(f'#registry[data-state="in-use"] th[data-role="challenger"]:has-text("{challenger}")')
    assert served in page.text_content('#registry-versions th.side[data-role="champion"]')
    cells = panel_cells(page)
    for role, name in (("champion", served), ("challenger", challenger)):
        figures = offline[name]
        assert cells[("warned", role, "offline")] == f"{figures['warned']} of {figures['episodes']}"
        assert cells[("median_lead", role, "offline")] == "240 s"
        assert cells[("pr_auc", role, "offline")] == f"{figures['pr_auc']:.3f}"
        assert cells[("threshold", role, "fact")] == ("0.00" if name == served else "0.50")
        assert cells[("trained", role, "fact")] == "—", "an untrained version's metadata has no created_at"
        assert cells[("warned", role, "live")] == "—"
    assert page.text_content('#registry-versions th[data-role="champion"][data-kind="live"]') == "no live judgement yet"
    assert page.get_attribute("#registry-judgement", "data-verdict") == "none"
    decisions = [(d.action, d.version, d.reason) for d in reversed(registry.history())]
    assert history_rows(page) == decisions and len(decisions) == 3
    return registry, challenger


def check_a_judgement(page, registry: Registry, readings: list[dict], product: list[dict], shadow: list[dict]) -> None:
    """A round of the judge on what Kafka holds: its judgement, in judgement.json, is what the panel shows."""
    lookback = Lookback(per_car=READINGS, max_cars=CARS, idle_seconds=3600)
    for reading_ in readings:
        lookback.add_reading(reading_)
    for side, records in ((PRODUCT, product), (SHADOW, shadow)):
        for record in records:
            lookback.add_prediction(side, record)
    # A rule no fleet this small meets: the verdict is wait whatever the untrained models' figures, the pair stays.
    assert Judge(registry, lookback, GateRule(min_episodes=READINGS)).round() == "wait"
    judgement = read_judgement(registry.model_dir)
    page.wait_for_selector(f'#registry-judgement[data-time="{judgement.time}"]', timeout=30_000)
    assert page.get_attribute("#registry-judgement", "data-verdict") == "wait"
    assert page.get_attribute("#registry-judgement", "data-current") == "true"
    assert page.text_content(".judgement-reason") == judgement.reason
    assert f"at least {READINGS} episodes" in page.text_content(".judgement-head")
    cells = panel_cells(page)
    for role in ("champion", "challenger"):
        live = judgement.figures[role]
        assert live["matured_readings"] > 0, live
        assert cells[("warned", role, "live")] == f"{live['warned']} of {live['episodes']}"
        assert cells[("matured_readings", role, "live")] == str(live["matured_readings"])
        for figure, key, digits in (
            ("median_lead", "median_lead_s", 0),
            ("false_alerts", "false_alerts_per_car_hour", 2),
            ("pr_auc", "pr_auc", 3),
        ):
            shown = cells[(figure, role, "live")].removesuffix(" s")
            if live[key] is None:
                assert shown == "n/a", (role, figure, shown)
            else:  # rounded to `digits` by the page
                assert math.isclose(float(shown), live[key], abs_tol=0.5 * 10**-digits + 1e-9), (role, figure, shown)


def check_a_decision_after_it(page, registry: Registry, challenger: str) -> None:
    """A reject by hand: no challenger pending, the judgement an earlier pair's, the reject on top of the history."""
    registry.reject("rejected by hand in the test")
    page.wait_for_selector('#registry-judgement[data-current="false"]', timeout=30_000)
    assert "none pending" in page.text_content('#registry-versions th.side[data-role="challenger"]')
    assert "earlier pair" in page.text_content("#registry-judgement")
    assert history_rows(page)[0] == ("reject", challenger, "rejected by hand in the test")
    assert len(history_rows(page)) == 4


def check_a_cars_page(page, url: str, readings: list[dict], predictions: list[dict], first_alert: dict) -> None:
    """A car with a failure onset, opened from its fleet cell: its history as Kafka holds it, the threshold line
    (0 here), its alert and its onset marked on the charts and listed; then an unknown car: a clear 404."""
    car = next(c for c in sorted(first_alert) if first_onset(readings, c, after_seq=-1) is not None)
    onset = first_onset(readings, car, after_seq=-1)
    mine = sorted((r for r in readings if r["car_id"] == car), key=lambda r: r["event_time"])
    mine_p = sorted((p for p in predictions if p["car_id"] == car), key=lambda p: p["event_time"])
    page.click(f'.car-cell[data-car-id="{car}"]')
    page.wait_for_selector(f'#car-page[data-found="true"] #car-title:text-is("{car}")', timeout=30_000)
    assert page.is_hidden("#fleet-grid") and page.evaluate("() => location.hash") == f"#car={car}"
    shown = page.evaluate(
        """() => {
            const {probability, sensors} = window.dashboardCarCharts;
            const speed = sensors.find(s => s.fields.includes('speed'));
            return {
                labels: probability.series.map(s => s.label),
                x: probability.data[0], p: probability.data[1], threshold: probability.data[2],
                speedX: speed.chart.data[0], speed: speed.chart.data[1 + speed.fields.indexOf('speed')],
                fields: sensors.flatMap(s => s.fields),
                onsets: probability.marks.onsets.map(o => o.t), alerts: probability.marks.alerts.map(a => a.t),
            };
        }"""
    )
    assert shown["labels"][1:] == ["failure probability", "threshold"]
    assert shown["x"] == [p["event_time"] / 1000 for p in mine_p]
    assert shown["p"] == pytest.approx([p["failure_probability"] for p in mine_p], abs=1e-4)
    assert set(shown["threshold"]) == {0.0}  # the model's threshold, as a line
    assert shown["speedX"] == [r["event_time"] / 1000 for r in mine]
    assert shown["speed"] == pytest.approx([r["speed"] for r in mine], abs=1e-3)
    for field in ("speed", "coolant_temp", "battery_voltage", "engine_vibration_amplitude", "tire_pressure_1_1"):
        assert field in shown["fields"], field
    assert any(field.startswith("accelerometer") for field in shown["fields"])
    assert onset["event_time"] in shown["onsets"] and first_alert[car]["event_time"] in shown["alerts"]
    kinds = page.eval_on_selector_all("#car-marks li", "items => items.map(i => i.dataset.kind)")
    assert "onset" in kinds and "alert" in kinds and "failure" in kinds, kinds
    assert "sim." in page.inner_text("#car-page")  # its times are the cars' simulated time, and say so

    page.go_back()  # the fleet again, then the same car from the alerts list
    page.wait_for_selector("#fleet-grid", state="visible")
    link = page.locator("#alerts tbody a.car-link").first
    alerted = link.inner_text()
    link.click()
    page.wait_for_selector(f'#car-page[data-found="true"] #car-title:text-is("{alerted}")', timeout=30_000)

    response = page.request.get(f"{url}api/car/car-99999")
    assert response.status == 404 and "car-99999" in response.json()["detail"]
    for bad in ("x" * 5000, "%00%ff", "%C3%A9%F0%9F%9A%97", "..%2F..%2Fetc", "car-00001%20OR%201=1"):
        assert page.request.get(f"{url}api/car/{bad}").status == 404, bad
    assert page.request.get(f"{url}healthz").status == 200  # bad ids never break the service
    assert page.request.get(f"{url}api/car/{car}").json()["car_id"] == car


def first_onset(readings: list[dict], car: str, after_seq: int) -> dict | None:
    """The car's first reading in failure after a healthy one, later than `after_seq`."""
    previous = None
    for r in sorted((r for r in readings if r["car_id"] == car), key=lambda r: r["seq"]):
        if r["failure_occurred"] and previous is not None and not previous["failure_occurred"] and r["seq"] > after_seq:
            return r
        previous = r
    return None


RECORD_HIGHEST_RATES = """() => {
    window.highestRates = {};
    new MutationObserver(() => {
        for (const row of document.querySelectorAll('#stages tr[data-stage]')) {
            const rate = parseFloat(row.querySelector('.stage-rate').textContent);
            const stage = row.dataset.stage;
            if (rate > (window.highestRates[stage] ?? 0)) window.highestRates[stage] = rate;
        }
    }).observe(document.querySelector('#stages-rows'), {subtree: true, childList: true, characterData: true});
}"""


def mosquitto_pub(port: int, topic: str, payload: bytes) -> None:
    command = [shutil.which("mosquitto_pub") or "mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-s"]
    result = subprocess.run(command, input=payload, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
