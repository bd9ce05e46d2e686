"""The model on simulator fleets, several seeds at once: the figures behind ml/README.md's tables.

    python -m scripts.studies.model_study --cars 300 --readings 300 --seeds 1,2,3

For each seed it generates a fleet (the same readings `generate_readings` gives), runs the shipped training code
(`fit_and_evaluate`, what `python -m ml train` runs after reading Kafka) and prints one row per seed: PR-AUC of the
LSTM and its baselines on the held-out test cars, the LSTM's lead over gradient boosting with its car-bootstrap
interval, the episode figures at the threshold chosen on validation cars, the Brier score before and after
calibration. Then, because the simulator knows which failure mode each episode was (Kafka's readings do not),
the test cars' episodes by mode: how many each model warned. `--json FILE` also writes every row.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from typing import Any

import numpy as np

from ml.episodes import episode_leads
from ml.features import Series, gather_windows, series_from_records, window_ends
from ml.training.settings import TrainSettings
from ml.training.train import fit_and_evaluate
from simulator.failures import FailureMode
from simulator.fleet import Fleet, FleetConfig


def fleet_with_modes(cars: int, readings_per_car: int, seed: int) -> tuple[list[dict], dict[tuple[str, int], str]]:
    """The readings `generate_readings(cars, readings_per_car, seed)` yields, and the failure mode of each episode
    by the (car_id, seq) of its onset."""
    fleet = Fleet(cars, seed, FleetConfig())
    readings: list[dict] = []
    modes: dict[tuple[str, int], str] = {}
    for _ in range(readings_per_car):
        step = fleet.step()
        readings.extend(step.readings(fleet.car_ids))
        for car in np.flatnonzero(step.new_failure):
            modes[(fleet.car_ids[car], step.seq)] = FailureMode(int(step.mode[car])).name.lower()
    return readings, modes


def warned_by_mode(
    series: Series, probabilities: np.ndarray, threshold: float, window: int, horizon: int, modes: dict
) -> dict[str, list[int]]:
    """{mode: [warned, episodes]} of the judged episodes of `series`, alerts at `threshold`."""
    ends = window_ends(series, window)
    judged = np.zeros(len(series), bool)
    judged[ends] = True
    alerts = np.zeros(len(series), bool)
    alerts[ends] = probabilities >= threshold
    warned, total = Counter(), Counter()
    for onset, lead in episode_leads(series, alerts, judged, horizon, window=window).items():
        mode = modes[(str(series.car_ids[onset]), int(series.seq[onset]))]
        total[mode] += 1
        warned[mode] += lead is not None
    return {mode: [warned[mode], total[mode]] for mode in sorted(total)}


def study(cars: int, readings_per_car: int, seed: int, settings: TrainSettings) -> dict[str, Any]:
    readings, modes = fleet_with_modes(cars, readings_per_car, seed)
    series = series_from_records(readings)
    started = time.monotonic()
    trained = fit_and_evaluate(series, settings, {"source": f"simulator fleet seed {seed}"})
    seconds = time.monotonic() - started
    metadata, report = trained.metadata, trained.report
    test = series.select_cars(metadata["training"]["split"]["test"])
    ends = window_ends(test, settings.window)
    windows = gather_windows(test.features, ends, settings.window)
    lstm = trained.model.predict(windows, batch_size=4096, verbose=0).reshape(-1)
    models = report["models"]
    return {
        "seed": seed,
        "cars": cars,
        "readings_per_car": readings_per_car,
        "pr_auc": {name: model["pr_auc"] for name, model in models.items()},
        "comparison": report["comparison"],
        "episodes": {name: model["episodes"] for name, model in models.items()},
        "brier": [metadata["calibration"]["brier_test_uncalibrated"], metadata["calibration"]["brier_test_calibrated"]],
        "lstm_by_mode": warned_by_mode(test, lstm, metadata["threshold"], settings.window, settings.horizon, modes),
        "targets": report["targets"],
        "seconds": round(seconds, 1),
        "epochs": metadata["training"]["epochs"],
    }


def _row(result: dict[str, Any]) -> str:
    pr, comparison, lstm = result["pr_auc"], result["comparison"], result["episodes"]["lstm"]
    gbm = result["episodes"]["gbm"]
    interval = f"{comparison['difference']:+.3f} [{comparison['low']:+.3f}, {comparison['high']:+.3f}]"
    by_mode = ", ".join(f"{mode} {w}/{n}" for mode, (w, n) in result["lstm_by_mode"].items())
    return (
        f"| {result['seed']} | {pr['lstm']:.3f} / {pr['gbm']:.3f} / {pr['logistic']:.3f} / {pr['prevalence']:.3f} "
        f"| {interval} | {lstm['warned']}/{lstm['episodes']} ({lstm['warned_share']:.0%}), "
        f"{lstm['median_lead_s']:.0f} s, {lstm['false_alerts_per_healthy_car_hour']:.2f} "
        f"| {gbm['warned']}/{gbm['episodes']} ({gbm['warned_share']:.0%}), {gbm['median_lead_s']:.0f} s, "
        f"{gbm['false_alerts_per_healthy_car_hour']:.2f} "
        f"| {result['brier'][0]:.4f} → {result['brier'][1]:.4f} | {result['seconds']:.0f} s, {result['epochs']} epochs "
        f"| {by_mode} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.studies.model_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cars", type=int, default=300, help="cars per fleet (default: %(default)s)")
    parser.add_argument("--readings", type=int, default=300, help="readings per car (default: %(default)s)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated fleet seeds (default: %(default)s)")
    parser.add_argument("--json", help="also write every result to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = []
    print(
        "| seed | PR-AUC LSTM / GBM / logistic / prevalence | LSTM - GBM [95 % car bootstrap] "
        "| LSTM warned, median lead, false alerts / car-h | GBM warned, median lead, false alerts / car-h "
        "| Brier LSTM raw → calibrated | fit | LSTM warned by failure mode |\n|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        result = study(args.cars, args.readings, seed, TrainSettings(seed=seed))
        results.append(result)
        print(_row(result), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
