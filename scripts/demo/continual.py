"""`make demo CONTINUAL=1`: the live phase with continual training beside the predictor.

The model the demo trains becomes the registry's champion (the demo's model folder may hold a registry of an earlier
run, whose champion would otherwise be served). `python -m ml continual` then reads the whole run's readings (the
history fleet and the live one), retrains once failures came that no version was trained on or after a period,
whichever is first; the predictor scores the challenger in the shadow; the judge decides. The live fleet drives
until that decision (at most CONTINUAL_TIMEOUT_S), and the summary prints every decision of the run.

The demo's settings are faster than the service's defaults, so that all of it happens in a few minutes: a check
every 5 s, a round every 10 s, retraining after 10 new failure episodes or 60 s.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ml.registry import Registry

CONTINUAL_TIMEOUT_S = 600.0
"""The longest the live fleet drives waiting for the judge's decision."""


def settings(history_cars: int, live_cars: int, since_s: float) -> dict[str, str]:
    """The continual service's environment in the demo; `since_s`: how far back the run's first reading is."""
    cars = str(history_cars + live_cars)  # every car of the run is kept, the history's and the live fleet's
    return {
        "ML_LOOKBACK_SECONDS": f"{since_s:.0f}",
        "ML_HISTORY_CARS": cars,
        "ML_LOOKBACK_CARS": cars,
        "ML_RETRAIN_EPISODES": "10",
        "ML_RETRAIN_PERIOD": "60",
        "ML_RETRAIN_MIN_INTERVAL": "0",
        "ML_CHECK_INTERVAL": "5",
        "ML_JUDGE_INTERVAL": "10",
    }


def make_champion(model_dir: Path, version: str) -> None:
    """The version the demo trained becomes the champion; a challenger an earlier run left pending is rejected."""
    registry = Registry(model_dir)
    if registry.challenger() is not None:
        registry.reject(f"make demo trained {version}")
    registry.register_challenger(version, "trained by make demo")
    registry.promote("trained by make demo")


def decisions_after(model_dir: Path, count: int) -> list[dict[str, Any]]:
    """The registry's decisions after its first `count`."""
    return [asdict(decision) for decision in Registry(model_dir).history()[count:]]


def decided(decisions: list[dict[str, Any]]) -> bool:
    """The judge promoted or rejected a challenger the continual trainer registered."""
    return any(d["action"] in ("promote", "reject") for d in decisions)


def describe(decisions: list[dict[str, Any]]) -> str:
    """The live view's line: where the continual loop stands."""
    if not decisions:
        return "continual: waiting for a retraining trigger (10 new failure episodes or 60 s)"
    last = decisions[-1]
    if last["action"] == "register":
        return f"continual: challenger {last['version']} in the shadow ({last['reason'][:60]})"
    return f"continual: {last['action']} {last['version']}"
