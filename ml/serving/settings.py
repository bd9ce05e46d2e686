"""Settings of `python -m ml predict`: flags, ML_* environment variables, defaults (in that order)."""

from __future__ import annotations

from pydantic import Field

from common.defaults import LOCALHOST, PREDICTOR_METRICS_PORT
from common.topics import DLQ_TOPIC, PREDICTIONS_TOPIC, PREDICTOR_GROUP, SHADOW_PREDICTIONS_TOPIC
from ml.ood import DEFAULT_THRESHOLD
from ml.settings import MlSettings

# The window and horizon come from the model being served (its metadata), never from the predictor's settings.
NOT_PREDICTOR_SETTINGS = ("window", "horizon")


class PredictorSettings(MlSettings):
    group_id: str = Field(
        PREDICTOR_GROUP,
        description="Consumer group; predictors in one group split partitions (secured mode: it must begin with "
        f"{PREDICTOR_GROUP!r}, which the predictor's ACL names)",
    )
    instance_id: str | None = Field(
        None, description="Static group membership id (e.g. the pod name): a restart takes its partitions back at once"
    )
    output_topic: str = Field(PREDICTIONS_TOPIC, description="Topic the predictions go to (Avro, key = car_id)")
    shadow_topic: str = Field(
        SHADOW_PREDICTIONS_TOPIC,
        description="Topic the registry's challenger's predictions go to (the same schema and key), scored on the "
        "same readings as the champion's: never the product",
    )
    dlq_topic: str = Field(DLQ_TOPIC, description="Topic for records that cannot be decoded")
    metrics_port: int = Field(PREDICTOR_METRICS_PORT, ge=0, description="Port of the Prometheus endpoint (0 = off)")
    metrics_host: str = Field(
        LOCALHOST, description="Address the metrics and health endpoint binds to (0.0.0.0: every interface)"
    )
    max_batch: int = Field(5000, gt=0, description="Most records read from one partition per batch")
    rebuild_records: int = Field(
        20_000, ge=0, description="Records re-read before the committed offset of a newly assigned partition"
    )
    max_state_bytes: int = Field(
        512 * 2**20,
        ge=2**20,
        description="Most bytes of per-car state (windows of the cars held and ids of evicted ones); past it the "
        "least recently seen car is evicted, and its history re-read from Kafka if it returns. 512 MiB holds "
        "165,000 cars of a 36-reading window",
    )
    car_idle_seconds: float = Field(
        3600.0,
        ge=0,
        description="Evict a car after this many seconds without a reading, in event time (its partition's "
        "readings), so that a replay or a backlog evicts the same cars as live; 0 = only the byte bound evicts",
    )
    stall_seconds: float = Field(
        300.0, gt=0, description="Liveness (/healthz) fails when the predicting loop has not turned for this long"
    )
    reload_interval: float = Field(5.0, gt=0, description="Seconds between looks for a newer model version")
    model_threads: int = Field(
        1,
        ge=0,
        description="TensorFlow threads per model call (0: TensorFlow's default, about one per core); one spends "
        "the least CPU per window (on 2 busy cores: 11 µs against 16), more shorten a big batch's call on idle cores",
    )
    idle_wait: float = Field(0.05, gt=0, description="Seconds to wait when no partition has new records")
    batch_linger: float = Field(
        0.1,
        ge=0,
        description="Least seconds between two reads unless the last one left records behind (a backlog): a "
        "batch's fixed cost (model call, delivery wait, commit) spread over more readings, for at most this much "
        "more latency",
    )
    session_timeout_ms: int = Field(10_000, ge=1000, description="Consumer group session timeout (ms)")
    alert_repeat: float = Field(
        60.0, ge=0, description="Seconds before a car still out of distribution is logged again (alerts: once)"
    )
    threshold: float | None = Field(None, description="Decision threshold; unset means the model's own (metadata)")
    ood_threshold: float = Field(
        DEFAULT_THRESHOLD,
        ge=0,
        description="Out of distribution when a feature lies more than this many training-range widths outside "
        "the training range (ml/ood.py)",
    )
