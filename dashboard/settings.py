"""Settings of `python -m dashboard`: flags, DASHBOARD_* environment variables, defaults (in that order)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.defaults import BRIDGE_METRICS_PORT, DASHBOARD_PORT, LOCALHOST, MODEL_DIR, PREDICTOR_METRICS_PORT
from common.settings import KafkaSettings
from common.topics import DLQ_TOPIC, PREDICTIONS_TOPIC, PREDICTOR_GROUP, READINGS_TOPIC
from dashboard.history import DEFAULT_POINTS_PER_CAR, DEFAULT_TOTAL_POINTS, MIN_POINTS

# Where the bridge and the predictor serve their metrics when both run on this machine with their defaults.
DEFAULT_METRICS_URLS = ",".join(
    f"{name}=http://{LOCALHOST}:{port}/metrics"
    for name, port in (("bridge", BRIDGE_METRICS_PORT), ("predictor", PREDICTOR_METRICS_PORT))
)


class DashboardSettings(KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", frozen=True, populate_by_name=True, extra="ignore")

    host: str = Field(LOCALHOST, description="Address the page is served on (0.0.0.0: every interface)")
    port: int = Field(DASHBOARD_PORT, ge=0, le=65535, description="Port the page is served on (0 = any free port)")
    readings_topic: str = Field(READINGS_TOPIC, description="Readings topic: the ground truth and the car-sensor rate")
    predictions_topic: str = Field(PREDICTIONS_TOPIC, description="Predictions topic: states, alerts, the model")
    dlq_topic: str = Field(DLQ_TOPIC, description="Dead-letter topic: the DLQ by reason")
    predictor_group: str = Field(
        PREDICTOR_GROUP, description="The predictors' consumer group, whose lag on the readings topic is charted"
    )
    metrics_urls: str = Field(
        DEFAULT_METRICS_URLS,
        description="The services' Prometheus endpoints, name=url[,name=url]; a name may repeat (scaled out: summed)",
    )
    model_dir: str = Field(MODEL_DIR, description="Folder of model versions: the serving model's report")
    lookback_seconds: float = Field(
        600.0, ge=0, description="Start reading the topics this many seconds back (their records before are ignored)"
    )
    push_interval: float = Field(1.0, gt=0, description="Seconds between two updates pushed to each open page")
    history_seconds: int = Field(300, gt=0, description="Seconds of rates and lag the chart shows")
    page_size: int = Field(500, gt=0, le=5000, description="Cars per page of the fleet grid")
    car_history_points: int = Field(
        DEFAULT_TOTAL_POINTS,
        ge=MIN_POINTS,
        description="Readings (and as many predictions) kept for the cars' pages, all cars together: the memory "
        "bound (~94 bytes a reading and a prediction)",
    )
    car_history_per_car: int = Field(
        DEFAULT_POINTS_PER_CAR, ge=MIN_POINTS, description="Readings (and predictions) kept per car at most"
    )
