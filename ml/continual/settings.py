"""Settings of the judge (`python -m ml judge`) and of the continual trainer (`python -m ml continual`): flags,
ML_* environment variables, defaults (in that order).

The gate's own rule (min_episodes and the margins) is `ml.gate.GateRule`'s: ML_GATE_* variables only. The
decisions topic and its timeout have the names `python -m ml registry` gives them (ML_DECISIONS_TOPIC,
ML_DECISIONS_TIMEOUT): one setting for both writers of that topic.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from common.topics import MODEL_DECISIONS_TOPIC, PREDICTIONS_TOPIC, SHADOW_PREDICTIONS_TOPIC
from ml.ood import DEFAULT_THRESHOLD
from ml.settings import MlSettings
from ml.training.settings import FitSettings

# The judge reads with a confluent-kafka consumer of its own: the training readers' choice means nothing to it.
NOT_JUDGE_SETTINGS = ("reader",)


class JudgeSettings(MlSettings):
    """`topic` (ML_TOPIC) is the readings' topic, `model_dir` (ML_MODEL_DIR) the registry's model folder."""

    predictions_topic: str = Field(
        PREDICTIONS_TOPIC, description="Topic of the champion's predictions (the product), Avro CarFailurePrediction"
    )
    shadow_topic: str = Field(
        SHADOW_PREDICTIONS_TOPIC, description="Topic of the challenger's shadow predictions, Avro CarFailurePrediction"
    )
    decisions_topic: str = Field(MODEL_DECISIONS_TOPIC, description="Kafka topic of the model decisions")
    decisions_timeout: float = Field(30.0, gt=0, description="Seconds Kafka has to confirm a decision")
    judge_interval: float = Field(
        60.0, gt=0, description="Seconds between two rounds of judging (figures logged, maybe a decision)"
    )
    lookback_readings: int = Field(
        360,
        ge=2,
        description="Readings kept per car, the newest, and as many predictions per car of each topic: the stretch "
        "judged. 360 is six horizons of the training default (H = 60) and an hour of a car at one reading per 10 s; "
        "only readings with H later ones have matured, so it must be well above the champion's horizon",
    )
    lookback_cars: int = Field(
        500,
        ge=1,
        description="Most cars kept, the first ones seen; past it a new car takes the place of the car seen least "
        "recently only when that one has been silent for lookback_idle_seconds, else its records are ignored. 500 "
        "cars of 360 readings (500 car-hours at one reading per 10 s) hold about 100 MB, and a round takes about as "
        "much again",
    )
    lookback_idle_seconds: float = Field(
        600.0, ge=0, description="Seconds without a record after which a car kept may give its place to a new car"
    )
    lookback_seconds: float = Field(
        3600.0,
        ge=0,
        description="At the start, read every topic from this many seconds back (the first record at or after "
        "then); 0 = from now on",
    )

    @model_validator(mode="after")
    def _distinct_topics(self) -> JudgeSettings:
        topics = (self.topic, self.predictions_topic, self.shadow_topic)
        if len(set(topics)) != len(topics):
            raise ValueError(f"the readings, predictions and shadow topics must differ, got {topics}")
        return self


class ContinualSettings(JudgeSettings, FitSettings):
    """`python -m ml continual`: the judge's settings, how a challenger is fitted (FitSettings: epochs, units, ...;
    the window and horizon are the champion's) and when one is trained."""

    retrain_episodes: int = Field(
        20,
        ge=1,
        description="Retrain once this many failure episodes started after the newest reading any version in the "
        "model folder was trained on",
    )
    retrain_drift_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Retrain once this share of the newest readings (drift_readings of them) lies out of the "
        "champion's training distribution (ml/ood.py, ML_OOD_THRESHOLD widths beyond its training range)",
    )
    drift_readings: int = Field(
        1000, ge=10, description="Newest readings of any car the drift check scores (counted from the last training)"
    )
    ood_threshold: float = Field(
        DEFAULT_THRESHOLD, gt=0, description="Widths of the training range beyond which a value is out of distribution"
    )
    retrain_period: float = Field(
        86400.0, ge=0, description="Retrain when this many seconds passed since the last training; 0: never by time"
    )
    retrain_min_interval: float = Field(
        300.0, ge=0, description="Seconds at least between the starts of two trainings (and after one that failed)"
    )
    warm_start: bool = Field(
        True,
        description="Start from the champion's weights (the layers its architecture shares) rather than from "
        "random ones; features that differ from the champion's start from random ones",
    )
    history_readings: int = Field(
        720, ge=2, description="Readings kept per car for training, the newest (720: two hours at one per 10 s)"
    )
    history_cars: int = Field(
        300, ge=3, description="Most cars kept for training, the first ones seen (as lookback_cars)"
    )
    check_interval: float = Field(30.0, gt=0, description="Seconds between two checks of whether to retrain")


# Read from the champion, or meaningless for a trainer fed by the live topic.
NOT_CONTINUAL_SETTINGS = (*NOT_JUDGE_SETTINGS, "window", "horizon", "start_offset", "start_time", "max_records")
