"""The seed's command line: `python -m ml <bootstrap servers> <topic> <start offset> [result topic]`.

Trains on the first --train-records readings from the start offset (in event-time order over all partitions),
with the window W and horizon H fitted to what those records hold (ml/training/seed_fit.py) unless given, saves
the artifact (its metadata's `seed_form` says how W and H were chosen), predicts each of the following
--predict-records readings from the window of W readings of its car that ends at it, and writes the predictions
as Avro (schemas/car_failure_prediction.avsc, key = car_id) to the result topic when one is given. It prints the
artifact's path. When the training records hold too few failures to train and measure a model, it saves no model,
writes nothing and exits 2 with the numbers (`error: ...`).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
from confluent_kafka import Producer

from common.avro import AvroCodec
from common.cli import add_settings_arguments, describe, settings_from_args
from common.errors import KafkaError
from common.kafka import ensure_topics, producer_config
from common.lifecycle import interrupt_on_signals
from common.logs import setup_logging
from common.schemas import PREDICTION
from ml import artifact
from ml.episodes import suppressed
from ml.features import feature_matrix, gather_windows, series_from_records
from ml.ood import OodScorer, out_of_range
from ml.source import SourceRecord, TopicRange, read_records, resolve_range
from ml.training.dataset import TrainingDataError
from ml.training.seed_fit import failing_cars, fit_window, records_held, require_failures, require_measured
from ml.training.settings import SeedFormSettings
from ml.training.train import fit_and_evaluate, save_trained, source_description

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    reading: dict
    probability: float
    suppressed: bool
    """The car reported a failure in this reading or its previous W: no alert (ml/episodes.py, as served)."""

    def alerts(self, threshold: float) -> bool:
        return self.probability >= threshold and not self.suppressed


def predict_following(model: artifact.LoadedModel, history: list[dict], following: list[dict]) -> list[Prediction]:
    """A prediction for each reading of `following` that closes a full window of its car."""
    series = series_from_records(history + following, model.features)  # the model may read fewer than all
    position = {(car, int(seq)): i for i, (car, seq) in enumerate(zip(series.car_ids, series.seq, strict=True))}
    indices = np.array([position[(r["car_id"], int(r["seq"]))] for r in following], dtype=np.int64)
    full = indices - series.run_start[indices] >= model.window - 1
    probabilities = model.predict(gather_windows(series.features, indices[full], model.window))
    quiet = suppressed(series, model.window)[indices[full]]
    kept = [r for r, ok in zip(following, full, strict=True) if ok]
    return [Prediction(*row) for row in zip(kept, probabilities.tolist(), quiet.tolist(), strict=True)]


def write_predictions(
    settings: SeedFormSettings, topic: str, model: artifact.LoadedModel, predictions: list[Prediction]
) -> None:
    kafka = (settings.kafka_bootstrap_servers, settings.kafka_security)
    ensure_topics(*kafka, {topic: 1})
    codec = AvroCodec(PREDICTION, topic, settings.schema_registry_url)
    producer = Producer(producer_config(*kafka))
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))

    now = int(time.time() * 1000)
    scorer = OodScorer.from_metadata(model.metadata, settings.ood_threshold)
    readings = [prediction.reading for prediction in predictions]
    ood = scorer.score(feature_matrix(readings, model.features), out_of_range(readings))
    for i, (reading, prediction) in enumerate(zip(readings, predictions, strict=True)):
        value = {
            "car_id": reading["car_id"],
            "seq": reading["seq"],
            "event_time": reading["event_time"],
            "predicted_at": now,
            "failure_probability": prediction.probability,
            "failure_predicted": prediction.alerts(model.threshold),
            "alert_suppressed": prediction.suppressed and prediction.probability >= model.threshold,
            "model_version": model.version,
            "horizon": model.horizon,
            "ood_score": float(ood.score[i]),
            "out_of_distribution": bool(ood.flagged[i]),
            "ood_features": ood.features_of(i),
        }
        producer.produce(topic, key=reading["car_id"].encode(), value=codec.encode(value), on_delivery=delivered)
        producer.poll(0)
    if producer.flush(30) or failures:
        raise KafkaError(f"{len(failures) or 'some'} predictions were not delivered to {topic}: {failures[:3]}")
    log.info("wrote %d predictions to %s", len(predictions), topic)


def _event_order(records: list[SourceRecord]) -> list[dict]:
    ordered = sorted(records, key=lambda r: (r.value["event_time"], r.partition, r.offset))
    return [r.value for r in ordered]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml",
        usage="python -m ml SERVERS TOPIC START_OFFSET [RESULT_TOPIC] [options]",
        description="The seed's form: train on the first records from START_OFFSET (window and horizon fitted to "
        "them unless given), predict the following ones.",
    )
    parser.add_argument("kafka_bootstrap_servers", metavar="SERVERS", help="Kafka bootstrap servers")
    parser.add_argument("topic", metavar="TOPIC", help="topic of the readings (Avro)")
    parser.add_argument("start_offset", metavar="START_OFFSET", type=int, help="offset to start at, every partition")
    parser.add_argument("result_topic", metavar="RESULT_TOPIC", nargs="?", help="topic for the predictions (Avro)")
    excluded = ("kafka_bootstrap_servers", "topic", "start_offset", "start_time", "max_records")
    add_settings_arguments(parser, SeedFormSettings, exclude=excluded)
    args = parser.parse_args(argv)
    settings = settings_from_args(SeedFormSettings, args)
    setup_logging()
    interrupt_on_signals()
    log.info("seed form with %s, result topic %s", describe(settings), args.result_topic or "none")

    wanted = settings.train_records + settings.predict_records
    kafka = (settings.kafka_bootstrap_servers, settings.kafka_security)
    whole = resolve_range(*kafka, settings.topic, settings.start_offset)
    topic_range = TopicRange(whole.topic, tuple(replace(p, end=min(p.end, p.start + wanted)) for p in whole.partitions))
    result = read_records(*kafka, topic_range, settings.reader, settings.schema_registry_url)
    readings = _event_order(result.records)[:wanted]
    history, following = readings[: settings.train_records], readings[settings.train_records :]
    if len(history) < settings.train_records:
        raise TrainingDataError(
            f"{settings.topic} holds {len(history)} records from offset {settings.start_offset}, "
            f"fewer than --train-records {settings.train_records}"
        )
    series = series_from_records(history)
    held = records_held(series)
    fit = fit_window(held, settings.window, settings.horizon)
    log.info("window and horizon: W=%d, H=%d: %s", fit.window, fit.horizon, fit.reason)
    failures = failing_cars(series, fit)
    log.info("failures in the training records: %s", failures)
    require_failures(held, fit, failures, _beyond(whole, settings))
    fitted = settings.model_copy(update={"window": fit.window, "horizon": fit.horizon})
    source = source_description(topic_range, settings.reader, len(history), result.rejected)
    trained = fit_and_evaluate(series, fitted, source)
    require_measured(trained.metadata["training"]["positives"])
    seed_form = {
        "train_records": settings.train_records,
        "predict_records": settings.predict_records,
        **fit.as_dict(),
        "failures": failures,
    }
    trained.metadata["seed_form"] = trained.report["seed_form"] = seed_form
    path = save_trained(trained, settings.model_dir)
    model = artifact.load(path)
    predictions = predict_following(model, history, following)
    alerts = sum(prediction.alerts(model.threshold) for prediction in predictions)
    log.info(
        "predicted %d of the %d following records (%d lack %d readings of history), %d alerts",
        len(predictions),
        len(following),
        len(following) - len(predictions),
        model.window,
        alerts,
    )
    if args.result_topic:
        write_predictions(settings, args.result_topic, model, predictions)
    print(path)
    return 0


def _beyond(whole: TopicRange, settings: SeedFormSettings) -> str:
    """What the topic holds from the start offset, for the advice of a refusal."""
    more = whole.count - settings.train_records - settings.predict_records
    held = f"{settings.topic} holds {whole.count} records from offset {settings.start_offset}"
    if more <= 0:
        return f"{held}: none beyond these."
    return f"{held}: --train-records up to {whole.count - settings.predict_records} would read them."
