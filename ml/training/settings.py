"""Settings of `python -m ml train` and of the seed's form: flags and ML_* environment variables."""

from __future__ import annotations

from pydantic import Field

from ml.ood import DEFAULT_THRESHOLD
from ml.settings import MlSettings


class FitSettings(MlSettings):
    """What fits and evaluates a model: a bounded range of the topic, read once, then epochs through tf.data."""

    window: int = Field(36, ge=2, description="Readings per window (W): the model sees W consecutive readings")
    horizon: int = Field(
        60, ge=1, description="Label: a failure episode STARTS within the next H readings (60 = 10 min at 10 s)"
    )
    start_offset: int | None = Field(None, ge=0, description="First offset of every partition; unset: the earliest")
    start_time: str | None = Field(
        None, description="Start at the first record at or after this time (ISO 8601 or epoch ms)"
    )
    max_records: int | None = Field(None, ge=1, description="At most this many records per partition")
    epochs: int = Field(25, ge=1, description="Most training epochs (early stopping may end sooner)")
    patience: int = Field(5, ge=1, description="Early stopping: epochs without a better validation PR-AUC")
    batch_size: int = Field(256, ge=1, description="Windows per training batch")
    units: int = Field(32, ge=1, description="LSTM units")
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout before the output unit")
    noise: float = Field(0.2, ge=0, description="Gaussian noise on the scaled readings, in training only")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    false_alarm_budget: float = Field(
        0.1, gt=0, description="Alert threshold: at most this many false alerts per healthy car-hour (validation)"
    )
    bootstrap: int = Field(200, ge=10, description="Resamples of the test cars for the verdict's interval")
    validation_fraction: float = Field(0.2, gt=0, lt=0.5, description="Share of cars held out for validation")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Share of cars held out for the test report")
    seed: int = Field(42, description="Seed of the car split, shuffling and initial weights")
    split_seed: int | None = Field(None, description="Seed of the car split alone; unset: --seed")


class TrainSettings(FitSettings):
    """`python -m ml train`: one process, or one worker of a cluster."""

    workers: int = Field(
        1,
        ge=1,
        description="Training workers: N > 1 starts N worker processes on this machine (loopback ports), each "
        "reading its share of the topic's partitions, unless --worker-hosts (or TF_CONFIG) names the cluster",
    )
    worker_hosts: str | None = Field(
        None,
        description="host:port of every worker, comma-separated, the same list on each; one host with {index} in "
        "it stands for --workers hosts (trainer-{index}.svc:2222); dns:SERVICE:PORT: the addresses SERVICE resolves "
        "to, sorted. This process is the --worker-index-th. TF_CONFIG, when set, wins",
    )
    worker_index: int | None = Field(None, ge=0, description="This worker's place in --worker-hosts (0: the chief)")


class SeedFormSettings(FitSettings):
    """The seed's `python -m ml <servers> <topic> <start offset> [result topic]`."""

    # Unset here: fitted to the records (ml/training/seed_fit.py); the seed form trains with a copy that sets them.
    window: int | None = Field(None, ge=2, description="Readings per window (W); unset: fitted to the training records")
    horizon: int | None = Field(
        None, ge=1, description="Label: a failure starts within the next H readings; unset: fitted to the records"
    )
    train_records: int = Field(1000, ge=1, description="Records from the start offset to train on")
    predict_records: int = Field(200, ge=1, description="Records after those to predict")
    ood_threshold: float = Field(
        DEFAULT_THRESHOLD, ge=0, description="Out of distribution beyond this many training-range widths (ml/ood.py)"
    )
