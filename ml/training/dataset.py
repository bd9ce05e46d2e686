"""Held-out cars and the tf.data pipeline of training windows.

Cars, not readings, are split: validation and test cars are never seen in training, so the report measures how
the model does on a car it meets for the first time. Windows are gathered from one array of raw readings by their
end index inside the pipeline, so an epoch streams batches without a copy of every window in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from common.errors import CarStreamError
from ml.episodes import onset_labels
from ml.features import Series, gather_windows, window_ends


class TrainingDataError(CarStreamError):
    """The data in the range cannot train or evaluate a model (too few cars, no failure, no full window)."""


LABELS_NEEDED = (
    "the readings carry no failure label (every failure_occurred is null or false), and training needs labelled "
    "failures: the label is each reading's failure_occurred field (true while a failure happens); the simulator "
    "labels its readings, and recorded data must carry a failure_occurred column (python -m simulator replay FILE.csv)"
)


def require_labels(series: Series) -> None:
    """Stop before a model is fitted to a single class: unlabelled data (a recording without labels, the seed
    simulator's payloads) would otherwise end in a model that never alerts, or in an obscure error later."""
    if not series.failure.any():
        raise TrainingDataError(f"{len(series)} readings: {LABELS_NEEDED}")


@dataclass(frozen=True)
class CarSplit:
    train: list[str]
    validation: list[str]
    test: list[str]


def split_cars(series: Series, validation_fraction: float, test_fraction: float, seed: int) -> CarSplit:
    """Stratified by whether a car ever failed, so that every split holds failing cars when there are enough."""
    cars = series.cars
    if len(cars) < 3:
        raise TrainingDataError(
            f"need at least 3 cars to hold cars out for validation and test, the data has {len(cars)}"
        )
    failing = set(series.car_ids[series.failure].tolist())
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for group in ([c for c in cars if c in failing], [c for c in cars if c not in failing]):
        shuffled = [group[i] for i in rng.permutation(len(group))]
        n_test = round(len(group) * test_fraction)
        n_validation = round(len(group) * validation_fraction)
        split["test"] += shuffled[:n_test]
        split["validation"] += shuffled[n_test : n_test + n_validation]
        split["train"] += shuffled[n_test + n_validation :]
    for name in ("test", "validation"):  # rounding may leave a held-out split empty on few cars
        if not split[name]:
            split[name].append(split["train"].pop())
    return CarSplit(*(sorted(split[name]) for name in ("train", "validation", "test")))


@dataclass(frozen=True)
class WindowSet:
    """The labelled windows of some cars: `ends` index `series` (the last reading of each window)."""

    series: Series
    ends: np.ndarray
    labels: np.ndarray
    window: int

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def windows(self) -> np.ndarray:
        return gather_windows(self.series.features, self.ends, self.window)

    def windows_of(self, part: slice) -> np.ndarray:
        return gather_windows(self.series.features, self.ends[part], self.window)

    def last_readings(self) -> np.ndarray:
        return self.series.features[self.ends]


def window_set(series: Series, window: int, horizon: int) -> WindowSet:
    """The full windows whose last reading is eligible (ml/episodes.py): not in failure, its next `horizon`
    readings known; label = a failure episode starts within them."""
    label, eligible = onset_labels(series, horizon)
    ends = window_ends(series, window)
    ends = ends[eligible[ends]]
    return WindowSet(series, ends, label[ends].astype(np.float32), window)


def tf_dataset(
    windows: WindowSet, batch_size: int, shuffle_seed: int | None = None, repeat: bool = False
) -> tf.data.Dataset:
    """(windows [B, W, F], labels [B]); reshuffled every epoch when a seed is given; `repeat`: endless, every
    batch full (the training loop counts its steps)."""
    features = tf.constant(windows.series.features)
    offsets = tf.range(-windows.window + 1, 1, dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((windows.ends.astype(np.int64), windows.labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(windows), seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def gather(ends: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(features, ends[:, None] + offsets), labels

    return dataset.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
