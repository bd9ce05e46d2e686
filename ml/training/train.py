"""`python -m ml train`: read a bounded range of car-sensor through the Kafka reader, train the LSTM on some cars,
calibrate it and choose its alert threshold on others, report it on cars it never saw beside its baselines, save
a versioned artifact.

The read is the first pass of the tf.data pipeline (ml/source.py); the decoded range is kept in memory (it is
bounded) and every epoch streams shuffled windows through tf.data (ml/training/dataset.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from common.avro import single_object_header
from common.cli import add_settings_arguments, describe, settings_from_args
from common.errors import ConfigError
from common.lifecycle import EXIT_FAILED, interrupt_on_signals
from common.logs import setup_logging
from common.schemas import READING, SENSOR_FIELDS
from ml import artifact, ood
from ml.episodes import reading_interval_s
from ml.features import Series, complete_features, gather_windows, series_from_records
from ml.source import PartitionRange, TopicRange, read_records, resolve_range
from ml.training.baseline import Scorer, fit_gbm, fit_logistic, fit_prevalence
from ml.training.calibration import fit_platt, logit
from ml.training.cluster import ONE_PROCESS, SINGLE, STRATEGY, Cluster, Collective, WorkerLost, cluster_from, leave
from ml.training.dataset import (
    CarSplit,
    TrainingDataError,
    WindowSet,
    require_labels,
    split_cars,
    window_set,
)
from ml.training.evaluate import bootstrap_pr_auc_difference, evaluate_model
from ml.training.launcher import follow_launcher, launch_local_workers
from ml.training.loop import Fitted, fit
from ml.training.model import build_model, logit_model, with_calibration
from ml.training.report import (
    MODELS,
    comparison_outcome,
    operating_point,
    targets,
    text_table,
    verdict,
    write_report,
)
from ml.training.settings import FitSettings, TrainSettings

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


def _platt_calibrated(raw: Scorer, validation: WindowSet) -> Scorer:
    """A baseline's scores with Platt scaling fitted on the validation cars' eligible windows, so that its
    Brier score compares with the LSTM's published one (a monotone map: its ranking is unchanged)."""
    platt = fit_platt(logit(raw(validation.series, validation.ends)), validation.labels)
    return lambda series, ends: platt.apply(raw(series, ends))


def _keras_scorer(model: keras.Model, window: int) -> Scorer:
    return lambda series, ends: _predict(model, gather_windows(series.features, ends, window))


@dataclass(frozen=True)
class Prepared:
    """The cars split, their labelled windows and the scaling: everything training needs before the model."""

    series: Series
    split: CarSplit
    parts: dict[str, Series]
    sets: dict[str, WindowSet]
    mean: np.ndarray
    std: np.ndarray
    features: tuple[str, ...]
    """The sensor fields the model reads, in its order: those that hold a value in every reading read."""


def prepare(series: Series, settings: FitSettings) -> Prepared:
    """Keep the features every reading reports; split cars; label their windows; fit the scaling on the training
    cars. `series` holds every sensor field (SENSOR_FIELDS)."""
    window, horizon = settings.window, settings.horizon
    require_labels(series)
    features, series = complete_features(series)
    split_seed = settings.seed if settings.split_seed is None else settings.split_seed
    split: CarSplit = split_cars(series, settings.validation_fraction, settings.test_fraction, split_seed)
    parts = {name: series.select_cars(getattr(split, name)) for name in ("train", "validation", "test")}
    sets = {name: window_set(part, window, horizon) for name, part in parts.items()}
    for name, windows in sets.items():
        log.info(
            "%s: %d cars, %d windows, %d positive", name, len(getattr(split, name)), len(windows), windows.positives
        )
        if len(windows) == 0:
            raise TrainingDataError(f"the {name} cars have no full window of {window} readings (+{horizon} ahead)")
    if sets["train"].positives in (0, len(sets["train"])):
        raise TrainingDataError("the training cars hold a single class: no failure to learn from")
    return Prepared(series, split, parts, sets, *_scaling(parts["train"]), features)


Initial = Callable[[keras.Model], object]
"""Sets a freshly built model's starting weights (a warm start, ml/continual/trainer.py); None: random ones."""


def _builder(
    settings: FitSettings, mean: np.ndarray, std: np.ndarray, initial: Initial | None = None
) -> Callable[[], keras.Model]:
    keras.utils.set_random_seed(settings.seed)

    def build() -> keras.Model:
        model = build_model(
            settings.window, mean, std, settings.units, settings.dropout, settings.noise, settings.learning_rate
        )
        if initial is not None:
            initial(model)
        return model

    return build


def _fit(
    collective: Collective,
    settings: FitSettings,
    mean: np.ndarray,
    std: np.ndarray,
    train: WindowSet,
    validation: WindowSet | None = None,
    initial: Initial | None = None,
) -> Fitted:
    build = _builder(settings, mean, std, initial)
    return fit(
        collective, build, train, validation, settings.epochs, settings.patience, settings.batch_size, settings.seed
    )


def car_key(car: str) -> int:
    """A car id as a number below 2**48, exact in the float64 the workers exchange."""
    return int.from_bytes(hashlib.blake2b(car.encode(), digest_size=6).digest(), "big")


def fit_and_evaluate(
    series: Series,
    settings: FitSettings,
    source: dict[str, Any],
    collective: Collective | None = None,
    share_cars: set[str] | None = None,
    initial: Initial | None = None,
) -> TrainedModel:
    """Split cars; fit scaling, the LSTM and the baselines on the training cars; calibrate and choose thresholds
    on the validation cars; report every model on the test cars. `source` describes where the data came from
    (metadata's `training`); `initial` sets the starting weights (random ones when None).

    In a cluster this runs on the chief, which holds every car: it hands the others the training cars and the
    scaling, trains on the training cars of its own partitions (`share_cars`), and evaluates alone."""
    collective = collective or Collective(SINGLE)
    prepared = prepare(series, settings)
    sets, parts, split = prepared.sets, prepared.parts, prepared.split
    train = sets["train"]
    if collective.cluster.size > 1:
        collective.array_from_chief(np.array([car_key(car) for car in split.train], np.float64))
        collective.from_chief(_kept_scaling(prepared))
        mine = parts["train"].select_cars(set(split.train) & (share_cars or set()))
        train = window_set(mine, settings.window, settings.horizon)
    fitted = _fit(collective, settings, prepared.mean, prepared.std, train, sets["validation"], initial)
    return _evaluated(prepared, fitted, settings, source, collective.cluster)


def _kept_scaling(prepared: Prepared) -> np.ndarray:
    """[3, len(SENSOR_FIELDS)] for the other workers: which sensor fields the model reads, their mean, their std."""
    kept = np.array([name in prepared.features for name in SENSOR_FIELDS])
    out = np.zeros((3, len(SENSOR_FIELDS)))
    out[0], out[1, kept], out[2, kept] = kept, prepared.mean, prepared.std
    return out


def train_share(series: Series, settings: FitSettings, collective: Collective) -> None:
    """A worker other than the chief: the training cars and the scaling from the chief, then the loop on its
    share. Its collectives mirror `fit_and_evaluate`'s, in the same order."""
    keys = set(collective.array_from_chief(None).astype(np.int64).tolist())
    kept, mean, std = collective.from_chief(None, (3, len(SENSOR_FIELDS))).reshape(3, -1)
    kept = kept > 0.5
    mean, std = mean[kept], std[kept]
    series = dataclasses.replace(series, features=series.features[:, kept])  # the chief's features
    cars = [car for car in series.cars if car_key(car) in keys]
    train = window_set(series.select_cars(cars), settings.window, settings.horizon)
    log.info("%d training cars of the %d in this worker's partitions", len(cars), len(series.cars))
    _fit(collective, settings, mean, std, train)


def _evaluated(
    prepared: Prepared, fitted: Fitted, settings: FitSettings, source: dict[str, Any], cluster: Cluster
) -> TrainedModel:
    """Calibration, thresholds, baselines and the report, on one process (the chief in a cluster)."""
    window, horizon = settings.window, settings.horizon
    series, split, parts, sets = prepared.series, prepared.split, prepared.parts, prepared.sets
    mean, std = prepared.mean, prepared.std
    validation = sets["validation"]
    model, history, epochs_run, seconds = fitted.model, fitted.history, fitted.epochs, fitted.seconds
    samples_per_s = fitted.samples_per_s
    log.info("trained %d epochs in %.1f s (%.0f windows/s)", epochs_run, seconds, samples_per_s)
    train = sets["train"]

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
        name: evaluate_model(raw, calibrated, parts, sets, settings) for name, (raw, calibrated) in candidates.items()
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
    if comparison is not None:
        comparison["outcome"] = comparison_outcome(comparison)
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
        "threshold_chosen_on": "validation cars, lowest threshold meeting the false-alarm budget (ml/episodes.py); "
        "its rate there and on the test cars: models.<name>.threshold_transfer",
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
        "strategy": STRATEGY if cluster.size > 1 else ONE_PROCESS,
        "workers": cluster.size,
        "windows_per_worker": fitted.windows_per_worker,
        "batch_per_worker": fitted.batch_per_worker,
    }
    metadata = {
        "created_at": _iso(int(time.time() * 1000)),
        "window": window,
        "horizon": horizon,
        "label": LABEL_DEFINITION,
        "features": list(prepared.features),
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
        ood.STATS_KEY: ood.training_statistics(parts["train"].features, prepared.features),
    }
    report = {
        "verdict": verdict_text,
        "lstm_beats_baseline": beats,
        "comparison": comparison,
        "targets": targets(models["lstm"]),
        "operating_point": operating_point(models),
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


def _agreed_range(settings: TrainSettings, collective: Collective) -> TopicRange:
    """The range the chief resolves, on every worker: the topic grows while they start, and all must read one."""
    kafka = (settings.kafka_bootstrap_servers, settings.kafka_security)
    flat = None
    if collective.cluster.is_chief:
        start_time = parse_time(settings.start_time) if settings.start_time else None
        resolved = resolve_range(*kafka, settings.topic, settings.start_offset, start_time, settings.max_records)
        flat = np.array([(p.partition, p.start, p.end) for p in resolved.partitions], np.float64).reshape(-1)
    rows = collective.array_from_chief(flat).astype(np.int64).reshape(-1, 3)
    return TopicRange(settings.topic, tuple(PartitionRange(int(p), int(a), int(b)) for p, a, b in rows))


def worker_share(topic_range: TopicRange, cluster: Cluster) -> TopicRange:
    """This worker's partitions: every size-th one from its index. A car's readings are in one partition (the key
    decides it), so its windows never cross workers."""
    return TopicRange(topic_range.topic, topic_range.partitions[cluster.index :: cluster.size])


def train(settings: TrainSettings, collective: Collective) -> Path | None:
    """Read, train, evaluate and save; in a cluster the chief reads every partition (it evaluates every car),
    the others only their share; only the chief saves, and returns the artifact's path."""
    cluster = collective.cluster
    topic_range = _agreed_range(settings, collective)
    if topic_range.count == 0:
        raise TrainingDataError(f"no records in {settings.topic} from the requested start")
    share = worker_share(topic_range, cluster)
    if cluster.size > len(topic_range.partitions):
        raise ConfigError(f"{cluster.size} workers for {len(topic_range.partitions)} partitions of {settings.topic}")
    kafka = (settings.kafka_bootstrap_servers, settings.kafka_security)
    result = read_records(
        *kafka, topic_range if cluster.is_chief else share, settings.reader, settings.schema_registry_url
    )
    # Arrival order (per partition, by offset): the order of readings whose seq is a content hash (ml/features.py).
    arrived = sorted(result.records, key=lambda record: (record.partition, record.offset))
    series = series_from_records([record.value for record in arrived])
    if not cluster.is_chief:
        train_share(series, settings, collective)
        collective.from_chief(None)  # wait for the chief's artifact: the run ends when the model is written
        return None
    source = source_description(topic_range, settings.reader, len(result.records), result.rejected)
    source["partitions_per_worker"] = [
        [p.partition for p in worker_share(topic_range, Cluster(cluster.hosts, i)).partitions]
        for i in range(cluster.size)
    ]
    mine = {p.partition for p in share.partitions}
    share_cars = {record.value["car_id"] for record in result.records if record.partition in mine}
    path = save_trained(fit_and_evaluate(series, settings, source, collective, share_cars), settings.model_dir)
    collective.from_chief(1.0)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml train",
        description="Train the failure LSTM on a bounded range of the readings topic (its start to the current end "
        "of every partition) and save a versioned model artifact with its evaluation report. With --workers N it "
        "trains on N worker processes (TensorFlow's MultiWorkerMirroredStrategy), each reading its share of the "
        "topic's partitions; ML_WORKER_HOSTS and ML_WORKER_INDEX (or TF_CONFIG) make this process one worker of a "
        "cluster on several machines.",
    )
    add_settings_arguments(parser, TrainSettings)
    settings = settings_from_args(TrainSettings, parser.parse_args(argv))
    cluster = cluster_from(settings.worker_hosts, settings.worker_index, settings.workers)
    setup_logging(tag=cluster.name if cluster.size > 1 else None)
    interrupt_on_signals()
    follow_launcher()
    if settings.workers > 1 and cluster.size == 1:
        return launch_local_workers(settings.workers, ["-m", "ml", "train", *argv])
    if settings.workers not in (1, cluster.size):
        raise ConfigError(f"--workers {settings.workers} but the cluster names {cluster.size} workers")
    log.info("training with %s", describe(settings))
    collective = Collective(cluster)
    path, code = None, 0
    try:
        path = train(settings, collective)
    except WorkerLost as exc:
        log.error("%s", exc)
        code = EXIT_FAILED
    if path is not None:
        print(path)
    if cluster.size > 1:
        leave(code)
    return code
