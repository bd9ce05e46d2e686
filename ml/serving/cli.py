"""`python -m ml predict`: predict car failures on the live `car-sensor` stream and write one Avro prediction
per reading to `car-sensor-predictions` (key = car_id).

Several predictors in one consumer group (ML_GROUP_ID) split the partitions. Offsets are committed only after
the predictions they caused were confirmed by Kafka; a newer model version in ML_MODEL_DIR is picked up between
batches; predictions at or above the threshold are logged as alerts; metrics on ML_METRICS_PORT. See
ml/serving/README.md.
"""

from __future__ import annotations

import argparse
import logging
import threading

from common.cli import add_settings_arguments, describe, doc_parser, settings_from_args
from common.lifecycle import stop_on_signals
from common.logs import setup_logging
from ml.serving.settings import NOT_PREDICTOR_SETTINGS, PredictorSettings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m ml predict", __doc__)
    add_settings_arguments(parser, PredictorSettings, exclude=NOT_PREDICTOR_SETTINGS)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = settings_from_args(PredictorSettings, args)
    log.info("settings: %s", describe(settings))
    stop = threading.Event()
    with stop_on_signals(stop, "the current batch and its commit"):
        from ml.serving.loop import Predictor  # TensorFlow loads here, after --help and the settings check

        return Predictor(settings, stop).run()
