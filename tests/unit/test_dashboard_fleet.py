"""The dashboard's fleet state: car states, alerts and their lead (never a suppressed one), the grid's order and pages,
the DLQ by reason, a car's page and its history's memory budget, the stage rates, the model panel's verdict.
(The page itself is tested in a real browser over the real chain: tests/integration/test_dashboard.py.)"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import generate_latest

from dashboard.fleet import DURING, FOLLOWED, NO_FAILURE, OPEN, Fleet, page_of
from dashboard.history import MIN_POINTS, CarHistory
from dashboard.model import operating_point, report_metrics, verdict_lines
from dashboard.sources import Endpoint, parse_metrics_urls, rates, spread_rates, window_rates
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


def report(low: float, high: float, by_mode: dict | None = None) -> dict:
    """A report.json as ml/training/train.py writes it (its verdict string left out: the panel never reads it)."""

    def model(pr_auc: float, warned: int, lead: float | None, false_rate: float, threshold: float) -> dict:
        episodes = {
            "episodes": 17,
            "warned": warned,
            "warned_share": warned / 17,
            "median_lead_s": lead,
            "false_alerts": 1,
            "healthy_car_hours": 14.4,
            "false_alerts_per_healthy_car_hour": false_rate,
        }
        if by_mode is not None:
            episodes["by_mode"] = by_mode
        return {"pr_auc": pr_auc, "roc_auc": 0.7, "threshold": threshold, "episodes": episodes}

    return {
        "models": {"lstm": model(0.618, 14, 235.0, 0.35, 0.864), "gbm": model(0.550, 10, None, 0.07, 0.845)},
        "comparison": {"difference": 0.068, "low": low, "high": high, "resamples": 200},
        "targets": {
            "warned_share": {"target": 0.8, "value": 14 / 17, "at_least": True, "met": True},
            "median_lead_s": {"target": 180.0, "value": 235.0, "at_least": True, "met": True},
            "false_alerts_per_healthy_car_hour": {"target": 0.1, "value": 0.35, "at_most": True, "met": False},
        },
    }


def test_the_model_panel_says_beats_only_where_the_car_bootstrap_interval_excludes_zero() -> None:
    on_par = operating_point(report(-0.031, 0.162), served="lstm")
    assert on_par["comparison"]["better"] is None
    lines = verdict_lines(on_par)
    assert not any("beat" in line for line in lines), lines
    assert "on par" in lines[-1] and "[-0.031, +0.162]" in lines[-1] and "includes 0" in lines[-1]

    ahead = operating_point(report(0.012, 0.162))
    assert ahead["comparison"]["better"] == "lstm"
    assert verdict_lines(ahead)[-1].startswith("the LSTM beats gradient boosting on PR-AUC")
    behind = operating_point(report(-0.2, -0.01))
    assert behind["comparison"]["better"] == "gbm"
    assert verdict_lines(behind)[-1].startswith("gradient boosting beats the LSTM")
    no_interval = operating_point(report(None, None))  # type: ignore[arg-type]
    assert no_interval["comparison"]["better"] is None and "no bootstrap interval" in verdict_lines(no_interval)[-1]


def test_the_model_panel_speaks_at_the_operating_point_for_both_models_beside_the_targets() -> None:
    point = operating_point(report(-0.031, 0.162), served="lstm")
    lstm, gbm = point["models"]
    assert (lstm["model"], lstm["serving"], gbm["model"], gbm["serving"]) == ("lstm", True, "gbm", False)
    assert (lstm["warned"], lstm["episodes"], lstm["median_lead_s"], lstm["threshold"]) == (14, 17, 235.0, 0.864)
    assert lstm["met"] == {"warned_share": True, "median_lead_s": True, "false_alerts_per_healthy_car_hour": False}
    # gradient boosting's figures are judged against the same targets (report.json holds the LSTM's verdicts only)
    assert gbm["met"] == {"warned_share": False, "median_lead_s": False, "false_alerts_per_healthy_car_hour": True}
    assert [t["key"] for t in point["targets"]] == [
        "warned_share",
        "median_lead_s",
        "false_alerts_per_healthy_car_hour",
    ]
    first, second, _ = verdict_lines(point)
    assert first.startswith("the LSTM (serving), threshold 0.864: warned 14 of 17 failure episodes, 82 %")
    assert "0.35 false alerts per healthy car-hour (target ≤ 0.10, missed): 2 of 3 targets met" in first
    assert "warned 10 of 17 failure episodes, 59 % (target ≥ 80 %, missed)" in second
    assert "median lead n/a (none warned)" in second
    assert lstm["by_mode"] is None and lstm["threshold_transfer"] is None  # absent: nothing to show


def test_the_model_panel_shows_per_mode_recall_and_the_threshold_transfer_when_the_report_has_them() -> None:
    by_mode = {"shock_absorber": {"episodes": 4, "warned": 1, "warned_share": 0.25}}
    data = report(0.01, 0.2, by_mode=by_mode)
    transfer = {  # as ml/training/evaluate.py threshold_transfer writes it, per model
        "budget": 0.1,
        "chosen_on": {"healthy_car_hours": 20.0, "false_alerts": 2, "rate": 0.1, "interval": [0.0, 0.25]},
        "test": {"healthy_car_hours": 14.4, "false_alerts": 5, "rate": 0.35, "interval": [0.1, 0.6]},
        "transfer_error": 0.25,
        "gap": 0.25,
    }
    data["models"]["lstm"]["threshold_transfer"] = transfer
    point = operating_point(data)
    lstm, gbm = point["models"]
    assert lstm["by_mode"] == by_mode and lstm["threshold_transfer"] == transfer
    assert gbm["threshold_transfer"] is None
    assert "0.10 on the validation cars its threshold was chosen on" in verdict_lines(point)[0]
    assert operating_point({}) is None and verdict_lines(None) == []


def test_the_report_shows_the_lstm_beside_gradient_boosting_over_all_windows() -> None:
    rows = {row["name"]: (row["lstm"], row["gbm"]) for row in report_metrics(report(0.0, 0.1))}
    assert rows["PR-AUC"] == (0.618, 0.550) and rows["threshold"] == (0.864, 0.845)
    assert report_metrics({}) == []


def test_a_suppressed_prediction_is_never_an_alert_and_never_warns() -> None:
    fleet = Fleet()
    for seq in range(0, 4):
        fleet.apply_reading(reading("a", seq, seq >= 2))  # the car reports a failure from seq 2
        fleet.apply_prediction({**prediction("a", seq, 0.9, warned=True), "alert_suppressed": seq >= 2})
    [alert] = fleet.alerts  # seq 0's, which the suppressed ones neither extend nor repeat
    assert (alert.seq, alert.last_seq) == (0, 1)
    fleet.apply_reading(reading("a", 4, False))
    fleet.apply_prediction({**prediction("a", 4, 0.9, warned=True), "alert_suppressed": True})
    assert fleet.cars["a"].state == "healthy" and len(fleet.alerts) == 1
    assert fleet.car_dict("a")["alert_suppressed"] is True  # the car's entry says why it is not warned
    fleet.apply_prediction(prediction("b", 0, 0.9, warned=True))  # schema v2: no field, never suppressed
    assert fleet.alerts[0].car_id == "b" and fleet.cars["b"].state == "warned"
    assert fleet.car_dict("b")["alert_suppressed"] is False
    flags = fleet.car_page("a", 0.5)["history"]["predictions"]
    assert flags["alert_suppressed"] == [False, False, True, True, True]
    assert flags["warned"] == [True, True, False, False, False]


def test_a_cars_page_holds_its_history_alerts_onsets_and_failure_periods_and_an_unknown_car_has_none() -> None:
    fleet = Fleet()
    for seq in range(0, 12):
        mode = "shock_absorber" if 6 <= seq < 9 else None  # what the car names while it fails
        fleet.apply_reading({**reading("a", seq, 6 <= seq < 9), "speed": float(seq), "failure_mode": mode})
        fleet.apply_prediction(prediction("a", seq, seq / 20, warned=seq in (3, 4)))
    fleet.apply_prediction(prediction("a", 5, 0.1))  # an older one again (a predictor restarted): not kept twice
    page = fleet.car_page("a", 0.15)
    assert (page["state"], page["probability"], page["interval_ms"]) == ("healthy", 0.55, INTERVAL_MS)
    [alert] = page["alerts"]
    assert (alert["seq"], alert["outcome"], alert["lead_s"], alert["threshold"]) == (3, FOLLOWED, 30.0, 0.15)
    assert page["onsets"] == [{"seq": 6, "event_time": 6 * INTERVAL_MS, "failure_mode": "shock_absorber"}]
    history = page["history"]
    assert history["readings"]["event_time"] == [s * INTERVAL_MS for s in range(12)]
    assert history["readings"]["sensors"]["speed"] == [float(s) for s in range(12)]
    assert history["predictions"]["probability"] == [round(s / 20, 4) for s in range(12)]
    assert history["failure_periods"] == [{"start": 6 * INTERVAL_MS, "end": 8 * INTERVAL_MS}]
    assert fleet.car_page("nobody", 0.5) is None


def test_the_car_history_stays_in_its_budget_through_a_flood_of_records_and_of_car_ids() -> None:
    history = CarHistory(total_points=4096, max_per_car=64)
    fleet = Fleet(history=history)
    bound = history.bound_bytes()
    for seq in range(0, 10_000):  # one car's flood only turns its ring
        fleet.apply_reading(reading("car-0", seq, False))
    assert history.car("car-0")["readings"]["event_time"] == [s * INTERVAL_MS for s in range(10_000 - 64, 10_000)]
    for n in range(1, 20_001):  # new car ids: rows double, each keeping fewer points, up to the budget
        fleet.apply_reading(reading(f"car-{n}", 0, False))
        fleet.apply_prediction(prediction(f"car-{n}", 0))
        if n % 500 == 0:
            assert history.nbytes <= bound, n
            assert history.readings.rows * history.per_car <= 4096
    kept = history.describe()
    assert kept["full"] and kept["points_per_car"] == MIN_POINTS and kept["cars"] == 4096 // MIN_POINTS
    assert history.car("car-0")["readings"]["event_time"] == [s * INTERVAL_MS for s in range(10_000 - 4, 10_000)]
    page = fleet.car_page("car-20000", None)
    assert page["state"] == "healthy" and page["history"] is None  # seen, but past the budget: no history


def test_a_stage_rate_is_taken_over_the_last_seconds_so_bursts_do_not_read_zero_while_records_flow() -> None:
    totals = [0, 0, 500, 500, 500, 1000, 1000]  # a burst every third second
    history = [
        {"t": float(t), "totals": {"mqtt_in": n, "car_sensor": n, "predictions": None}} for t, n in enumerate(totals)
    ]
    assert rates((5.0, history[5]["totals"]), (6.0, history[6]["totals"]))["mqtt_in"] == 0.0  # 1 s: reads 0
    window = window_rates(history, 5.0)
    assert window == {"mqtt_in": 200.0, "car_sensor": 200.0, "predictions": None}
    assert window_rates(history[:1], 5.0) == {}
    went_back = [{"t": 0.0, "totals": {"mqtt_in": 9, "car_sensor": 0, "predictions": 0}}, history[1]]
    assert window_rates(went_back, 5.0)["mqtt_in"] is None  # a restarted bridge's counter: no rate


def test_a_total_unknown_for_a_while_spreads_its_records_over_the_gap_so_the_chart_still_sums_to_the_total() -> None:
    # The bridge's scrape timed out at t=2 and t=3 (a busy machine); the predictor's counter restarted at t=4.
    samples = [(0, 0, 0), (1, 100, 50), (2, None, 80), (3, None, 90), (4, 700, 5), (5, 800, 15)]
    history: list[dict] = []
    known: dict = {}
    for t, mqtt_in, predictions in samples:
        point = {"t": float(t), "totals": {"mqtt_in": mqtt_in, "car_sensor": 0, "predictions": predictions}}
        spread_rates(history, known, point)
        history.append(point)
    assert [p["mqtt_in"] for p in history] == [None, 100.0, 200.0, 200.0, 200.0, 100.0]
    assert sum(p["mqtt_in"] * 1.0 for p in history[1:]) == 800  # every record the bridge counted, on the chart
    assert [p["predictions"] for p in history] == [None, 50.0, 30.0, 10.0, None, 10.0]  # no rate across the restart
