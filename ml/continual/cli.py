"""`python -m ml judge`: judge the registry's challenger against its champion on live data, and promote or reject
it when the promotion gate (ml/gate.py) says so.

Reads the readings (ML_TOPIC, car-sensor), the champion's predictions (ML_PREDICTIONS_TOPIC, car-sensor-predictions)
and the challenger's shadow predictions (ML_SHADOW_TOPIC, car-sensor-predictions-shadow) from ML_LOOKBACK_SECONDS
back, keeps the newest ML_LOOKBACK_READINGS readings of at most ML_LOOKBACK_CARS cars, and every ML_JUDGE_INTERVAL
seconds compares the two models on the readings both predicted. A promotion or a rejection is written to the
registry in ML_MODEL_DIR (decisions.jsonl) and produced to ML_DECISIONS_TOPIC (car-sensor-model-decisions). The
gate's rule: ML_GATE_MIN_EPISODES (10), ML_GATE_PR_AUC_MARGIN (0.02), ML_GATE_FALSE_ALERT_MARGIN (0). SIGTERM or
Ctrl-C stops it after the current round (exit 0). See ml/README.md, "The judge".
"""

from __future__ import annotations

import argparse
import threading

from common.cli import add_settings_arguments, doc_parser, run_service
from ml.continual.settings import NOT_JUDGE_SETTINGS, JudgeSettings


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m ml judge", __doc__)
    add_settings_arguments(parser, JudgeSettings, exclude=NOT_JUDGE_SETTINGS)
    return parser


def main(argv: list[str]) -> int:
    return run_service(build_parser(), argv, JudgeSettings, "the current round", _judge)


def _judge(settings: JudgeSettings, stop: threading.Event) -> None:
    from ml.continual.judge import run_judge  # scikit-learn loads here, after --help and the settings check

    run_judge(settings, stop)
