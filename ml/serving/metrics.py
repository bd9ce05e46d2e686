"""The predictor's Prometheus metrics (served on ML_METRICS_PORT, default 9109)."""

from __future__ import annotations

import logging
import random
import time

from prometheus_client import Counter, Gauge, Histogram

from common.health import Health, serve
from ml.ood import OodScores

log = logging.getLogger(__name__)

LATENCY_SAMPLES = 200  # end-to-end latency and OOD score observations per batch

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OOD_BUCKETS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 50.0, 100.0)

PREDICTIONS = Counter("predictor_predictions_total", "Predictions delivered to Kafka")
PREDICTIONS_PER_S = Gauge("predictor_predictions_per_second", "Predictions delivered per second, last batch interval")
ALERTS = Counter("predictor_alerts_total", "Alerting predictions (failure_predicted): at or above the threshold")
ALERTS_SUPPRESSED = Counter(
    "predictor_alerts_suppressed_total",
    "Predictions at or above the threshold whose alert was suppressed (alert_suppressed): the car reported a failure "
    "in the reading or in its previous W readings",
)
EPISODES_WARNED = Counter(
    "predictor_episodes_warned_total",
    "Failure episodes (simulator ground truth) with an alert in the horizon's readings before their onset",
)
EPISODES_MISSED = Counter(
    "predictor_episodes_missed_total",
    "Failure episodes (simulator ground truth) without an alert in the horizon's readings before their onset",
)
DLQ = Counter("predictor_dlq_total", "Records that could not be decoded and went to the DLQ")
KAFKA_ERRORS = Counter(
    "predictor_kafka_unavailable_total",
    "Steps abandoned because Kafka or the schema registry did not answer (read again, then retried)",
)
BATCH_SIZE = Histogram(
    "predictor_batch_size", "Readings per model batch", buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10_000, 25_000)
)
MODEL_LATENCY = Histogram("predictor_model_latency_seconds", "Model call time per batch", buckets=LATENCY_BUCKETS)
END_TO_END = Histogram(
    "predictor_end_to_end_latency_seconds", "event_time of a reading to predicted_at", buckets=LATENCY_BUCKETS
)
OOD = Counter(
    "predictor_ood_predictions_total", "Predictions whose reading lies outside the model's training range (ml/ood.py)"
)
OOD_FEATURES = Counter(
    "predictor_ood_features_total", "Out-of-distribution readings by a feature that made them so", ["feature"]
)
OOD_SCORE = Histogram(
    "predictor_ood_score",
    "OOD score of predictions (up to 200 sampled per batch): training-range widths outside the training range",
    buckets=OOD_BUCKETS,
)
CARS_HELD = Gauge("predictor_cars_held", "Cars whose window the predictor holds")
STATE_BYTES = Gauge(
    "predictor_state_bytes", "Bytes of per-car state held (windows, ids of evicted cars), at most ML_MAX_STATE_BYTES"
)
EVICTIONS = Counter(
    "predictor_car_evictions_total",
    "Cars whose window was dropped: idle (no reading for ML_CAR_IDLE_SECONDS of event time) or bytes (the least "
    "recently seen, past ML_MAX_STATE_BYTES)",
    ["reason"],
)
RETURNED = Counter("predictor_cars_returned_total", "Evicted cars seen again: their history was re-read from Kafka")
UNDELIVERED = Counter(
    "predictor_undelivered_batches_total", "Batches whose predictions Kafka did not confirm: not committed, read again"
)
LAG = Gauge("predictor_consumer_lag", "Records not yet predicted (high watermark - position)", ["partition"])
ASSIGNED = Gauge("predictor_assigned_partitions", "Partitions this predictor owns")
MODEL_VERSION = Gauge("predictor_model_info", "The model version being served (value 1)", ["version"])
SHADOW_PREDICTIONS = Counter(
    "predictor_shadow_predictions_total", "Challenger predictions delivered to the shadow topic (ML_SHADOW_TOPIC)"
)
SHADOW_UNDELIVERED = Counter(
    "predictor_shadow_undelivered_batches_total",
    "Batches whose challenger predictions Kafka did not confirm: dropped, the batch committed all the same",
)
CHALLENGER_VERSION = Gauge(
    "predictor_challenger_info", "The challenger scored in the shadow (value 1); no series while none is", ["version"]
)
# The Java serving program (ml/streams/) exports the same metric names with program="java": the dashboard says which.
SERVING = Gauge("predictor_serving_info", "Which program serves the model (value 1)", ["program"])


class RateMeter:
    """predictions/s between two updates, for the gauge (the counter's rate() is the Prometheus way)."""

    def __init__(self) -> None:
        self._since = time.monotonic()

    def update(self, count: int) -> None:
        now = time.monotonic()
        if now > self._since:
            PREDICTIONS_PER_S.set(count / (now - self._since))
        self._since = now


def count_delivered(predictions: list[dict], ood: OodScores, rate: RateMeter) -> None:
    """The metrics of a batch whose predictions Kafka confirmed (`ood`: their OOD scores)."""
    PREDICTIONS.inc(len(predictions))
    rate.update(len(predictions))
    # A bounded sample per batch keeps the histograms unbiased without a Python call per prediction.
    for p in random.sample(predictions, min(len(predictions), LATENCY_SAMPLES)):
        END_TO_END.observe((p["predicted_at"] - p["event_time"]) / 1000)
        OOD_SCORE.observe(p["ood_score"])
    flagged = int(ood.flagged.sum())
    if flagged:
        OOD.inc(flagged)
        for name, count in zip(ood.names, ood.outside.sum(axis=0).tolist(), strict=True):
            if count:
                OOD_FEATURES.labels(feature=name).inc(count)


def serve_metrics(port: int, health: Health, host: str) -> None:
    SERVING.labels(program="python").set(1)
    serve(port, health, host=host)


def set_model_version(version: str) -> None:
    MODEL_VERSION.clear()
    MODEL_VERSION.labels(version=version).set(1)


def set_challenger_version(version: str | None) -> None:
    CHALLENGER_VERSION.clear()
    if version is not None:
        CHALLENGER_VERSION.labels(version=version).set(1)
