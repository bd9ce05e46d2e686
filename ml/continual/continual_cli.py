"""`python -m ml continual`: keep training challengers on the live readings and judge them against the champion.

The judge of `python -m ml judge` (same settings, same gate, same topics), and a continual trainer fed by the same
reading of the readings topic (ML_TOPIC): it keeps the newest ML_HISTORY_READINGS readings of up to
ML_HISTORY_CARS cars and trains a challenger when the fleet drifted from the champion's training data
(ML_RETRAIN_DRIFT_SHARE of the newest ML_DRIFT_READINGS readings out of distribution), when ML_RETRAIN_EPISODES
failure episodes came that no version was trained on, or every ML_RETRAIN_PERIOD seconds; never sooner than
ML_RETRAIN_MIN_INTERVAL seconds after the last one, and never while a challenger is pending. The challenger (the
champion's window and horizon, warm-started from its weights unless --no-warm-start) is saved in ML_MODEL_DIR and
registered as the challenger with its trigger as the reason (decisions.jsonl and ML_DECISIONS_TOPIC); the predictor
scores it in the shadow, the judge promotes or rejects it. SIGTERM or Ctrl-C stops it after the current round; a
training under way is abandoned. See ml/README.md, "Continual training".
"""

from __future__ import annotations

import argparse
import threading

from common.cli import add_settings_arguments, doc_parser, run_service
from ml.continual.settings import NOT_CONTINUAL_SETTINGS, ContinualSettings


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m ml continual", __doc__)
    add_settings_arguments(parser, ContinualSettings, exclude=NOT_CONTINUAL_SETTINGS)
    return parser


def main(argv: list[str]) -> int:
    return run_service(build_parser(), argv, ContinualSettings, "the current round", _continual)


def _continual(settings: ContinualSettings, stop: threading.Event) -> None:
    from ml.continual.judge import run_continual  # TensorFlow loads here, after --help and the settings check

    run_continual(settings, stop)
