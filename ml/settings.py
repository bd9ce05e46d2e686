"""What every ml command's settings share: flags and ML_* environment variables, the Kafka names the
README lists. Training (ml/training/settings.py), the drift report and the predictor (ml/serving/settings.py) extend
`MlSettings`, so `--model-dir`, `--reader` and `--topic` mean the same in each."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.defaults import MODEL_DIR
from common.settings import KafkaSettings
from common.topics import READINGS_TOPIC

ML_CONFIG = SettingsConfigDict(env_prefix="ML_", frozen=True, populate_by_name=True, extra="ignore")


class MlSettings(KafkaSettings):
    """What every ml command shares; each command's settings extend this class."""

    model_config = ML_CONFIG

    model_dir: str = Field(MODEL_DIR, description="Folder of versioned model artifacts")
    reader: Literal["tfio", "confluent"] = Field(
        "tfio", description="Kafka reader: tensorflow-io (tfio) or a confluent-kafka consumer (confluent)"
    )
    topic: str = Field(READINGS_TOPIC, description="Kafka topic of the readings")
