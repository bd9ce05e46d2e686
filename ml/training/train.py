"""`python -m ml train`: read a bounded range of car-sensor through the Kafka reader, train the LSTM on some cars,
calibrate it and choose its alert threshold on others, report it on cars it never saw beside its baselines, save
a versioned artifact.

The read is the first pass of the tf.data pipeline (ml/source.py); the decoded range is kept in memory (it is
bounded) and every epoch streams shuffled windows through tf.data (ml/training/dataset.py).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from common.avro import single_object_header
from common.cli import add_settings_arguments, describe, settings_from_args
from common.errors import ConfigError
from common.lifecycle import interrupt_on_signals
from common.logs import setup_logging
from common.schemas import READING, SENSOR_FIELDS
from ml import artifact, ood
from ml.episodes import reading_interval_s
from ml.features import Series, gather_windows, series_from_records, window_ends
from ml.source import TopicRange, read_records, resolve_range
from ml.training.baseline import Scorer, fit_gbm, fit_logistic, fit_prevalence
from ml.training.calibration import brier, fit_platt, logit
from ml.training.dataset import (
    CarSplit,
    TrainingDataError,
    WindowSet,
    require_labels,
    split_cars,
    tf_dataset,
    window_set,
)
from ml.training.evaluate import (
    bootstrap_pr_auc_difference,
    budget_threshold,
    classification_metrics,
    curves,
    episode_metrics,
    tradeoff,
)
from ml.training.model import build_model, logit_model, with_calibration
from ml.training.report import MODELS, targets, text_table, verdict, write_report
from ml.training.settings import TrainSettings

log = logging.getLogger(__name__)

LABEL_DEFINITION = (
    "a failure episode starts (failure_occurred turns true) within the next `horizon` readings of that car; "
    "windows whose last reading is already in failure are not scored (ml/episodes.py)"
)
PREDICT_BATCH = 2048


@dataclass
class TrainedModel:
    model: keras.Model
    """The published model: calibrated probabilities (ml/training/model.py: with_calibration)."""
    metadata: dict[str, Any]
    report: dict[str, Any]
    history: dict[str, list[float]]
    curves: dict[str, Any]
    sample: np.ndarray
    """Raw readings of the training cars kept in the artifact (ml/ood.py)."""


def parse_time(value: str) -> int:
    """Epoch milliseconds from `1704067200000` or an ISO 8601 time (UTC when it names no zone)."""
    if value.strip().isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--start-time {value!r} is neither epoch milliseconds nor an ISO 8601 time") from exc
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def schema_fingerprint() -> str:
    """CRC-64-AVRO fingerprint of the readings schema, the 64-bit number (the single-object header carries it
    little-endian)."""
    return f"{int.from_bytes(single_object_header(READING)[2:], 'little'):016x}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _predict(model: keras.Model, windows: np.ndarray) -> np.ndarray:
    if len(windows) == 0:
        return np.zeros(0, np.float32)
    return model.predict(windows, batch_size=PREDICT_BATCH, verbose=0).reshape(-1)


def _scaling(train: Series) -> tuple[np.ndarray, np.ndarray]:
    mean = train.features.mean(axis=0, dtype=np.float64)
    std = train.features.std(axis=0, dtype=np.float64)
    return mean, np.where(std < 1e-6, 1.0, std)  # a constant sensor must not divide by zero later


@dataclass
class Evaluated:
    """One model on the held-out cars: its metrics, its scores at the test cars' eligible windows, its plots' data."""

    metrics: dict[str, Any]
    scores: np.ndarray
    curves: dict[str, np.ndarray] | None
    tradeoff: list[dict]


def _evaluate(
    raw: Scorer, published: Scorer, parts: dict[str, Series], sets: dict[str, WindowSet], settings: TrainSettings
) -> Evaluated:
    """Threshold for the false-alarm budget on the validation cars, then window and episode metrics on the test
    cars, of the published (calibrated) scores; the Brier score of the raw ones beside them."""
    window, horizon = settings.window, settings.horizon
    validation = parts["validation"]
    ends = window_ends(validation, window)
    threshold = budget_threshold(validation, ends, published(validation, ends), horizon, settings.false_alarm_budget)
    test, eligible = parts["test"], sets["test"]
    ends = window_ends(test, window)
    scores = published(test, ends)
    at_eligible = scores[np.searchsorted(ends, eligible.ends)]
    metrics = classification_metrics(eligible.labels, at_eligible, threshold)
    metrics["brier_uncalibrated"] = brier(eligible.labels, raw(test, eligible.ends))
    metrics["episodes"] = episode_metrics(test, ends, scores, threshold, horizon)
    return Evaluated(metrics, at_eligible, curves(eligible.labels, at_eligible), tradeoff(test, ends, scores, horizon))


def _platt_calibrated(raw: Scorer, validation: WindowSet) -> Scorer:
    """A baseline's scores with Platt scaling fitted on the validation cars' eligible windows, so that its
    Brier score compares with the LSTM's published one (a monotone map: its ranking is unchanged)."""
    platt = fit_platt(logit(raw(validation.series, validation.ends)), validation.labels)
    return lambda series, ends: platt.apply(raw(series, ends))


def _keras_scorer(model: keras.Model, window: int) -> Scorer:
    return lambda series, ends: _predict(model, gather_windows(series.features, ends, window))


class _EpochLog(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if isinstance(v, float))
        log.info("epoch %d: %s", epoch + 1, shown)


def fit_and_evaluate(series: Series, settings: TrainSettings, source: dict[str, Any]) -> TrainedModel:
    """Split cars; fit scaling, the LSTM and the baselines on the training cars; calibrate and choose thresholds
    on the validation cars; report every model on the test cars. `source` describes where the data came from
    (metadata's `training`)."""
    window, horizon = settings.window, settings.horizon
    require_labels(series)
    split: CarSplit = split_cars(series, settings.validation_fraction, settings.test_fraction, settings.seed)
    parts = {name: series.select_cars(getattr(split, name)) for name in ("train", "validation", "test")}
    sets = {name: window_set(part, window, horizon) for name, part in parts.items()}
    for name, windows in sets.items():
        log.info(
            "%s: %d cars, %d windows, %d positive", name, len(getattr(split, name)), len(windows), windows.positives
        )
        if len(windows) == 0:
            raise TrainingDataError(f"the {name} cars have no full window of {window} readings (+{horizon} ahead)")
    train, validation = sets["train"], sets["validation"]
    if train.positives in (0, len(train)):
        raise TrainingDataError("the training cars hold a single class: no failure to learn from")

    keras.utils.set_random_seed(settings.seed)
    mean, std = _scaling(parts["train"])
    model = build_model(
        window, mean, std, settings.units, settings.dropout, settings.noise, learning_rate=settings.learning_rate
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_pr_auc", mode="max", patience=settings.patience, restore_best_weights=True
    )
    started = time.monotonic()
    history = model.fit(
        tf_dataset(train, settings.batch_size, shuffle_seed=settings.seed),
        validation_data=tf_dataset(validation, PREDICT_BATCH),
        epochs=settings.epochs,
        callbacks=[stop, _EpochLog()],
        verbose=0,
    ).history
    seconds = time.monotonic() - started
    epochs_run = len(history["loss"])
    samples_per_s = epochs_run * len(train) / seconds
    log.info("trained %d epochs in %.1f s (%.0f windows/s)", epochs_run, seconds, samples_per_s)

    platt = fit_platt(_predict(logit_model(model), validation.windows()), validation.labels)
    published = with_calibration(model, platt.slope, platt.intercept)
    candidates: dict[str, tuple[Scorer, Scorer]] = {
        "lstm": (_keras_scorer(model, window), _keras_scorer(published, window))
    }
    for name, raw in (
        ("gbm", fit_gbm(train, settings.seed)),
        ("logistic", fit_logistic(train, settings.seed)),
        ("prevalence", fit_prevalence(train)),
    ):
        candidates[name] = (raw, _platt_calibrated(raw, validation))
    evaluated = {
        name: _evaluate(raw, calibrated, parts, sets, settings) for name, (raw, calibrated) in candidates.items()
    }
    models = {name: {"model": MODELS[name], **result.metrics} for name, result in evaluated.items()}
    test = sets["test"]
    comparison = None
    if models["lstm"]["pr_auc"] is not None:
        comparison = bootstrap_pr_auc_difference(
            test.labels,
            evaluated["lstm"].scores,
            evaluated["gbm"].scores,
            test.series.car_ids[test.ends],
            settings.bootstrap,
            settings.seed,
        )
    beats, verdict_text = verdict(models["lstm"], models["gbm"], comparison)
    calibration = {
        **platt.as_dict(),
        "fitted_on": "validation cars' eligible windows (logits of the LSTM)",
        "brier_test_uncalibrated": models["lstm"]["brier_uncalibrated"],
        "brier_test_calibrated": models["lstm"]["brier"],
    }
    evaluation = {
        "false_alarm_budget_per_healthy_car_hour": settings.false_alarm_budget,
        "alert": "failure_probability >= threshold at a reading (one alarm per run of alerting readings)",
        "threshold_chosen_on": "validation cars, lowest threshold meeting the false-alarm budget (ml/episodes.py)",
        "reading_interval_s": reading_interval_s(parts["test"]),
        "bootstrap": settings.bootstrap,
    }
    training = {
        **source,
        "time_range": {"first": _iso(int(series.event_time.min())), "last": _iso(int(series.event_time.max()))},
        "readings": len(series),
        "cars": len(series.cars),
        "split": {"train": split.train, "validation": split.validation, "test": split.test},
        "windows": {name: len(s) for name, s in sets.items()},
        "positives": {name: s.positives for name, s in sets.items()},
        "epochs": epochs_run,
        "seconds": round(seconds, 2),
        "samples_per_s": round(samples_per_s, 1),
    }
    metadata = {
        "created_at": _iso(int(time.time() * 1000)),
        "window": window,
        "horizon": horizon,
        "label": LABEL_DEFINITION,
        "features": list(SENSOR_FIELDS),
        "scaling": {"mean": mean.tolist(), "std": std.tolist()},
        "threshold": models["lstm"]["threshold"],
        "calibration": calibration,
        "evaluation": evaluation,
        "schema": {"name": "io.carstream.CarSensorReading", "fingerprint": schema_fingerprint()},
        "model": {
            "type": "lstm",
            "units": settings.units,
            "dropout": settings.dropout,
            "noise": settings.noise,
            "learning_rate": settings.learning_rate,
        },
        "training": training,
        "metrics": models["lstm"],
        "baseline": models["gbm"],
        "baselines": {name: models[name] for name in ("gbm", "logistic", "prevalence")},
        "lstm_beats_baseline": beats,
        "comparison": comparison,
        ood.STATS_KEY: ood.training_statistics(parts["train"].features, SENSOR_FIELDS),
    }
    report = {
        "verdict": verdict_text,
        "lstm_beats_baseline": beats,
        "comparison": comparison,
        "targets": targets(models["lstm"]),
        "split": training["split"],
        "horizon": horizon,
        "window": window,
        "models": models,
        "calibration": calibration,
        "evaluation": evaluation,
        "tradeoff": {name: result.tradeoff for name, result in evaluated.items()},
        "training": training,
    }
    sample = ood.training_sample(parts["train"].features, settings.seed)
    plotted = {name: result.curves for name, result in evaluated.items()}
    return TrainedModel(published, metadata, report, history, plotted, sample)


def save_trained(trained: TrainedModel, model_dir: str) -> Path:
    """The artifact with its report in `report/` and its training sample, visible only when complete."""
    history = {k: [float(v) for v in values] for k, values in trained.history.items()}

    def extras(staging: Path) -> None:
        write_report(staging / "report", trained.report, history, trained.curves)
        artifact.write_training_sample(staging, trained.sample)

    path = artifact.save(trained.model, trained.metadata, model_dir, extras=extras)
    log.info("evaluation on held-out cars:\n%s", text_table(trained.report))
    return path


def source_description(topic_range: TopicRange, reader: str, records: int, rejected: int) -> dict[str, Any]:
    return {
        "topic": topic_range.topic,
        "reader": reader,
        "start_offsets": topic_range.start_offsets(),
        "end_offsets": topic_range.end_offsets(),
        "records": records,
        "rejected_records": rejected,
    }


def train(settings: TrainSettings) -> Path:
    start_time = parse_time(settings.start_time) if settings.start_time else None
    kafka = (settings.kafka_bootstrap_servers, settings.kafka_security)
    topic_range = resolve_range(*kafka, settings.topic, settings.start_offset, start_time, settings.max_records)
    if topic_range.count == 0:
        raise TrainingDataError(f"no records in {settings.topic} from the requested start")
    result = read_records(*kafka, topic_range, settings.reader, settings.schema_registry_url)
    # Arrival order (per partition, by offset): the order of readings whose seq is a content hash (ml/features.py).
    arrived = sorted(result.records, key=lambda record: (record.partition, record.offset))
    series = series_from_records([record.value for record in arrived])
    source = source_description(topic_range, settings.reader, len(result.records), result.rejected)
    return save_trained(fit_and_evaluate(series, settings, source), settings.model_dir)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml train",
        description="Train the failure LSTM on a bounded range of the readings topic (its start to the current end "
        "of every partition) and save a versioned model artifact with its evaluation report.",
    )
    add_settings_arguments(parser, TrainSettings)
    settings = settings_from_args(TrainSettings, parser.parse_args(argv))
    setup_logging()
    interrupt_on_signals()
    log.info("training with %s", describe(settings))
    path = train(settings)
    print(path)
    return 0
