"""python -m ml, or the console script `car-ml`: `train`, `predict`, `drift`, `registry`, `judge`, `continual`, or
the seed's form `<bootstrap servers> <topic> <start offset> [result topic]`."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

USAGE = """usage: python -m ml train [options]         train the LSTM on a bounded range of car-sensor, save it
       python -m ml predict [options]       live predictions from car-sensor to car-sensor-predictions
       python -m ml drift [options]         recent car-sensor data against the serving model's training data:
                                            an HTML report per feature (PSI, KS, share outside the training range)
       python -m ml registry ACTION [options]
                                            the model registry: show, register VERSION, promote, reject,
                                            rollback (the predictor serves the champion)
       python -m ml judge [options]         the challenger's shadow predictions against the champion's on live
                                            data: promote or reject it by the promotion gate
       python -m ml continual [options]     the judge, and a trainer that registers a challenger trained on the
                                            live readings when the fleet drifts, new failures come, or on a period
       python -m ml SERVERS TOPIC START_OFFSET [RESULT_TOPIC] [options]
                                            the seed's form: train on the first records from START_OFFSET
                                            (window and horizon fitted to them), predict the following ones
                                            (to RESULT_TOPIC when given)

`python -m ml <command> --help` explains each command's options and their environment variables. The console
script `car-ml` is the same command (`car-ml train`, `car-ml predict`, ...)."""


def main(argv: list[str]) -> int:
    # TensorFlow's C++ start-up chatter (CUDA probes, CPU features) says nothing about this program.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "predict":
        from ml.serving.cli import main as predict_main

        return predict_main(rest)
    if command == "train":
        from ml.training.train import main as train_main

        return train_main(rest)
    if command == "drift":
        from ml.training.drift import main as drift_main

        return drift_main(rest)
    if command == "registry":
        from ml.registry_cli import main as registry_main

        return registry_main(rest)
    if command == "continual":
        from ml.continual.continual_cli import main as continual_main

        return continual_main(rest)
    if command == "judge":
        from ml.continual.cli import main as judge_main

        return judge_main(rest)
    from ml.training.seed_form import main as seed_main

    return seed_main(argv)


def run() -> NoReturn:
    """The console script `car-ml`: `python -m ml`, with run_main's exit codes."""
    from common.lifecycle import run_main

    run_main(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    run()
