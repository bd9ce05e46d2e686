"""The dashboard's fleet state: car states, alerts and their lead, the grid's order and pages, the DLQ by reason.
(The page itself is tested in a real browser over the real chain: tests/integration/test_dashboard.py.)"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import generate_latest

from dashboard.fleet import DURING, FOLLOWED, NO_FAILURE, OPEN, Fleet, page_of
from dashboard.sources import Endpoint, parse_metrics_urls, report_metrics
from ml.serving import metrics as predictor_metrics

# What the Java serving program (ml/streams/, Prometheus' Java client) serves, as a run of it wrote it.
JAVA_EXPOSITION = b"""# HELP predictor_predictions_total Predictions handed to Kafka
# TYPE predictor_predictions_total counter
predictor_predictions_total 0.0
# HELP predictor_serving_info Which program serves the model (value 1)
# TYPE predictor_serving_info gauge
predictor_serving_info{program="java"} 1
"""

HORIZON = 5
INTERVAL_MS = 10_000


def prediction(car: str, seq: int, probability: float = 0.1, warned: bool = False, ood: tuple[str, ...] = ()) -> dict:
    return {
        "car_id": car,
        "seq": seq,
        "event_time": seq * INTERVAL_MS,
        "failure_probability": probability,
        "failure_predicted": warned,
        "model_version": "v1",
        "horizon": HORIZON,
        "out_of_distribution": bool(ood),
        "ood_features": list(ood),
    }


def reading(car: str, seq: int, failed: bool | None) -> dict:
    return {"car_id": car, "seq": seq, "event_time": seq * INTERVAL_MS, "failure_occurred": failed}


def test_each_car_takes_the_worst_of_its_ground_truth_and_its_latest_prediction() -> None:
    fleet = Fleet()
    fleet.apply_prediction(prediction("a", 0))
    fleet.apply_prediction(prediction("b", 0, 0.9, warned=True))
    fleet.apply_prediction(prediction("c", 0, ood=("coolant_temp",)))
    fleet.apply_reading(reading("d", 0, False))
    fleet.apply_reading(reading("d", 1, True))
    fleet.apply_prediction(prediction("d", 1, 0.9, warned=True))
    assert fleet.summary() == {"cars": 4, "healthy": 1, "warned": 1, "ood": 1, "failed": 1}
    fleet.apply_prediction(prediction("b", 1, 0.2))  # no longer warned
    fleet.apply_reading(reading("d", 2, False))  # recovered: its latest prediction warns
    assert fleet.summary() == {"cars": 4, "healthy": 2, "warned": 1, "ood": 1, "failed": 0}
    assert {c: fleet.cars[c].state for c in "abcd"} == {"a": "healthy", "b": "healthy", "c": "ood", "d": "warned"}


def test_an_older_prediction_never_overwrites_a_newer_one() -> None:
    fleet = Fleet()
    fleet.apply_prediction(prediction("a", 5, 0.9, warned=True))
    fleet.apply_prediction(prediction("a", 4, 0.1))  # a duplicate of an earlier reading, after a predictor restart
    assert fleet.cars["a"].state == "warned" and fleet.cars["a"].seq == 5
    assert fleet.records["predictions"] == 2


def test_an_alert_gets_its_lead_when_the_failure_starts_within_the_horizon_in_either_order_of_arrival() -> None:
    for readings_first in (False, True):
        fleet = Fleet()
        events = [("p", prediction("a", s, 0.9, warned=s >= 3)) for s in range(0, 6)]
        events += [("r", reading("a", s, s >= 7)) for s in range(0, 9)]
        if readings_first:
            events.sort(key=lambda e: e[0] != "r")
        for kind, record in events:
            (fleet.apply_reading if kind == "r" else fleet.apply_prediction)(record)
        [alert] = fleet.alerts
        assert (alert.seq, alert.outcome) == (3, FOLLOWED), readings_first
        assert alert.lead_s == (7 - 3) * INTERVAL_MS / 1000
        assert alert.expected_within_s == HORIZON * INTERVAL_MS / 1000


def test_an_alert_starts_after_horizon_readings_without_one_and_is_judged_by_what_followed() -> None:
    fleet = Fleet()
    for seq in range(0, 20):
        fleet.apply_reading(reading("a", seq, False))
        fleet.apply_prediction(prediction("a", seq, 0.9, warned=seq in (2, 4, 12)))
    assert [(a.seq, a.last_seq, a.outcome) for a in fleet.alerts] == [(12, 12, NO_FAILURE), (2, 4, NO_FAILURE)]
    fleet.apply_prediction(prediction("b", 0, 0.9, warned=True))
    assert fleet.alerts[0].outcome == OPEN and fleet.alerts[0].lead_s is None
    fleet.apply_reading(reading("c", 0, False))
    fleet.apply_reading(reading("c", 1, True))
    fleet.apply_prediction(prediction("c", 1, 0.9, warned=True))
    assert fleet.alerts[0].outcome == DURING  # raised once the failure had begun: nothing foreseen


def test_the_grid_shows_the_worst_cars_first_then_the_healthy_ones_by_id_and_pages_and_searches() -> None:
    fleet = Fleet()
    for n in range(1, 1001):
        fleet.apply_prediction(prediction(f"car-{n:05d}", 0))
    fleet.apply_prediction(prediction("car-00500", 1, 0.7, warned=True))
    fleet.apply_prediction(prediction("car-00900", 1, 0.95, warned=True))
    fleet.apply_prediction(prediction("car-00007", 1, ood=("speed",)))
    fleet.apply_reading(reading("car-00300", 1, True))
    ordered = fleet.ordered_ids("all")
    assert ordered[:5] == ["car-00300", "car-00900", "car-00500", "car-00007", "car-00001"]
    assert len(ordered) == 1000 and ordered[-1] == "car-01000"
    assert fleet.ordered_ids("warned") == ["car-00900", "car-00500"]
    assert len(fleet.ordered_ids("healthy")) == 996
    assert fleet.find(ordered, "car-009") == ["car-00900", *(f"car-{n:05d}" for n in range(901, 1000))]
    shown, page, pages = page_of(ordered, 3, 300)
    assert (page, pages, len(shown), shown[-1]) == (3, 4, 100, "car-01000")
    assert page_of(ordered, 99, 300)[1] == 3 and page_of([], 0, 300) == ([], 0, 1)


def test_dead_letters_are_counted_by_reason_with_the_latest_first() -> None:
    fleet = Fleet()
    fleet.apply_dead_letter({"error": "malformed_json", "service": "bridge"}, b"car-00001")
    fleet.apply_dead_letter({"error": "car_id_mismatch", "error_detail": "x" * 500}, None)
    fleet.apply_dead_letter({"error": "malformed_json"}, None)
    dlq = fleet.dlq()
    assert dlq["total"] == 3
    assert dlq["by_reason"] == [{"reason": "malformed_json", "count": 2}, {"reason": "car_id_mismatch", "count": 1}]
    assert dlq["latest"][2]["car_id"] == "car-00001" and len(dlq["latest"][1]["detail"]) == 200


def test_metrics_urls_are_named_and_a_bad_one_is_a_clear_error() -> None:
    assert parse_metrics_urls("bridge=http://a:1/metrics, bridge=http://b:1/metrics") == [
        ("bridge", "http://a:1/metrics"),
        ("bridge", "http://b:1/metrics"),
    ]
    try:
        parse_metrics_urls("bridge:http://a:1/metrics")
    except Exception as exc:  # ConfigError: a usage error, exit code 2
        assert "name=http" in str(exc)
    else:
        raise AssertionError("a malformed list was accepted")


def python_exposition() -> bytes:
    """The Python predictor's metrics as it serves them once started (serve_metrics sets the program)."""
    predictor_metrics.SERVING.labels(program="python").set(1)
    return generate_latest()


@pytest.mark.parametrize(("program", "exposition"), [("python", python_exposition), ("java", lambda: JAVA_EXPOSITION)])
def test_the_serving_program_is_read_from_the_predictors_metrics(program: str, exposition) -> None:
    body = exposition()

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = Endpoint("predictor", f"http://127.0.0.1:{server.server_address[1]}/metrics")
        endpoint.scrape()
        assert endpoint.up and endpoint.program == program
        assert endpoint.samples["predictor_predictions_total"] == 0.0
    finally:
        server.shutdown()
        server.server_close()
    endpoint.scrape()  # nothing answers: no program either
    assert not endpoint.up and endpoint.program is None


def test_the_report_shows_the_lstm_beside_gradient_boosting() -> None:
    report = {
        "models": {
            "lstm": {"pr_auc": 0.6, "episodes": {"warned_share": 0.8}},
            "gbm": {"pr_auc": 0.5, "episodes": {"warned_share": 0.7}},
        }
    }
    rows = {row["name"]: (row["lstm"], row["gbm"]) for row in report_metrics(report)}
    assert rows["PR-AUC"] == (0.6, 0.5) and rows["episodes warned"] == (0.8, 0.7)
    assert report_metrics({}) == []


def test_a_suppressed_alert_is_no_alert_and_the_car_says_why() -> None:
    fleet = Fleet()
    fleet.apply_reading(reading("a", 3, True))
    fleet.apply_prediction(prediction("a", 3, 0.9) | {"alert_suppressed": True})  # the car reports its failure
    fleet.apply_reading(reading("a", 4, False))
    fleet.apply_prediction(prediction("a", 4, 0.9) | {"alert_suppressed": True})  # within W readings after it
    assert fleet.cars["a"].state == "healthy" and not fleet.alerts
    assert fleet.car_dict("a")["alert_suppressed"] is True
    fleet.apply_prediction(prediction("b", 0))  # a record of schema version 2
    assert fleet.car_dict("b")["alert_suppressed"] is False
