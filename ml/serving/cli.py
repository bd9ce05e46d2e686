"""`python -m ml predict`: predict car failures on the live `car-sensor` stream and write one Avro prediction
per reading to `car-sensor-predictions` (key = car_id).

Several predictors in one consumer group (ML_GROUP_ID) split the partitions. Offsets are committed only after
the predictions they caused were confirmed by Kafka; a newer model version in ML_MODEL_DIR is picked up between
batches; predictions at or above the threshold are logged as alerts; metrics on ML_METRICS_PORT. See
ml/serving/README.md.
"""

from __future__ import annotations

import argparse
import threading

from common.cli import add_settings_arguments, doc_parser, run_service
from ml.serving.settings import NOT_PREDICTOR_SETTINGS, PredictorSettings


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m ml predict", __doc__)
    add_settings_arguments(parser, PredictorSettings, exclude=NOT_PREDICTOR_SETTINGS)
    return parser


def main(argv: list[str]) -> int:
    return run_service(build_parser(), argv, PredictorSettings, "the current batch and its commit", _predict)


def _predict(settings: PredictorSettings, stop: threading.Event) -> int:
    from ml.serving.loop import Predictor  # TensorFlow loads here, after --help and the settings check

    return Predictor(settings, stop).run()
