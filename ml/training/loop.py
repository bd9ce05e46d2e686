"""The training loop, the same for one process and for a cluster of workers (ml/training/cluster.py).

A custom loop, not `model.fit`: Keras 3's `fit` under MultiWorkerMirroredStrategy fails on TensorFlow 2.16 to 2.18
(measured here: "Attempt to convert a value (PerReplica:...)"; keras#20585), while `strategy.run` with a gradient
tape trains the Keras 3 model as it is, so model.keras still reloads with safe_mode on and no tf-keras is needed.

What it keeps of `fit` with EarlyStopping(monitor="val_pr_auc", restore_best_weights=True): Adam on binary
cross-entropy averaged over the (global) batch, windows reshuffled every epoch, the validation PR-AUC (Keras's
AUC metric, 200 thresholds) after every epoch, training stopped after `patience` epochs without a better one, and
the best epoch's weights kept.

What a cluster changes: every worker trains on the windows of its own partitions' training cars, in batches of
batch_size / workers, so the global batch stays `batch_size`; the gradients are summed across workers every step
(the strategy's all-reduce). Every worker must run the same number of steps, so an epoch is a fixed number of
steps (the windows of every worker, over the global batch) drawn from each worker's repeated, reshuffled windows:
a worker whose share is smaller sees its windows a little more often. The chief holds the validation cars; it
scores them after every epoch and tells the others whether to go on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from ml.training.cluster import LOST_ERRORS, Collective, WorkerLost, lost_message
from ml.training.dataset import TrainingDataError, WindowSet, tf_dataset

log = logging.getLogger(__name__)

VALIDATION_BATCH = 2048


@dataclass
class Fitted:
    model: keras.Model
    """The best epoch's weights in a model of plain (not distributed) variables, built by the same function."""
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    windows: int
    """Training windows of every worker together."""
    windows_per_worker: list[int]
    batch_per_worker: int

    @property
    def samples_per_s(self) -> float:
        return self.epochs * self.windows / self.seconds if self.seconds > 0 else 0.0


def _validation_scores(predict: Callable[[tf.Tensor], tf.Tensor], validation: WindowSet) -> np.ndarray:
    parts = [
        predict(tf.constant(validation.windows_of(slice(i, i + VALIDATION_BATCH)))).numpy().reshape(-1)
        for i in range(0, len(validation), VALIDATION_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _validation_figures(predict: Callable[[tf.Tensor], tf.Tensor], validation: WindowSet) -> tuple[float, float]:
    """(PR-AUC as Keras's AUC metric computes it, mean binary cross-entropy) of the validation windows."""
    scores = _validation_scores(predict, validation)
    metric = keras.metrics.AUC(curve="PR")
    metric.update_state(validation.labels, scores)
    loss = keras.losses.binary_crossentropy(validation.labels[:, None], scores[:, None])
    return float(metric.result()), float(np.mean(loss))


def fit(
    collective: Collective,
    build: Callable[[], keras.Model],
    train: WindowSet,
    validation: WindowSet | None,
    epochs: int,
    patience: int,
    batch_size: int,
    seed: int,
) -> Fitted:
    """Train the model `build` makes (compiled with its optimizer) on this worker's `train` windows; `validation`
    only on the chief."""
    cluster, strategy = collective.cluster, collective.strategy
    mine = np.zeros(cluster.size)
    mine[cluster.index] = len(train)
    per_worker = [int(n) for n in collective.total(mine)]
    if min(per_worker) == 0:
        empty = [i for i, n in enumerate(per_worker) if n == 0]
        raise TrainingDataError(
            f"workers {empty} of {cluster.size} hold no training window: their partitions hold no training car"
        )
    windows = sum(per_worker)
    batch = max(1, batch_size // cluster.size)
    global_batch = batch * cluster.size
    steps = math.ceil(windows / global_batch)
    with strategy.scope():
        model = build()
    optimizer = model.optimizer
    dataset = tf_dataset(train, batch, shuffle_seed=seed + cluster.index, repeat=True)
    # From a function: each worker's dataset is its shard already and its batches are per replica (a dataset
    # given to experimental_distribute_dataset would be split again, its batch taken as the global one).
    batches = iter(strategy.distribute_datasets_from_function(lambda _context: dataset))

    def replica_step(windows: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            probabilities = model(windows, training=True)
            per_window = keras.losses.binary_crossentropy(labels[:, None], probabilities)
            loss = tf.nn.compute_average_loss(per_window, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def step() -> tf.Tensor:
        losses = strategy.run(replica_step, args=next(batches))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    predict = tf.function(lambda windows: model(windows, training=False))
    log.info(
        "%d training windows here, %d on all workers; %d steps per epoch of %d windows (%d per worker)",
        len(train),
        windows,
        steps,
        global_batch,
        batch,
    )
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_pr_auc": []}
    best, best_weights, waited = -math.inf, model.get_weights(), 0
    started = time.monotonic()
    try:
        for epoch in range(epochs):
            total = sum(float(step()) for _ in range(steps))
            figures = _validation_figures(predict, validation) if validation is not None else None
            val_pr_auc, val_loss = collective.from_chief(figures, (2,))
            history["loss"].append(total / steps)
            history["val_loss"].append(float(val_loss))
            history["val_pr_auc"].append(float(val_pr_auc))
            log.info(
                "epoch %d: loss=%.4f, val_loss=%.4f, val_pr_auc=%.4f", epoch + 1, total / steps, val_loss, val_pr_auc
            )
            waited += 1
            if val_pr_auc > best:
                best, best_weights, waited = val_pr_auc, model.get_weights(), 0
            elif waited >= patience and epoch > 0:
                break
    except LOST_ERRORS as exc:
        raise WorkerLost(lost_message(cluster, exc)) from exc
    seconds = time.monotonic() - started
    published = build()  # plain variables: what calibration, evaluation and the artifact use, as in one process
    published.set_weights(best_weights)
    return Fitted(published, history, len(history["loss"]), seconds, windows, per_worker, batch)
