"""Would a threshold chosen on cross-fitted scores transfer better? A measurement, not what training does.

    python -m scripts.studies.threshold_crossfit --seeds 1,2,3,4 --folds 4 --unseen-cars 600

For each fleet seed it trains the served model as `python -m ml train` does (`fit_and_evaluate`: training cars,
threshold on the validation cars), then splits the training and validation cars into K folds and trains K more
LSTMs of the same recipe, each on the other folds for the served model's number of epochs, calibrated on its
own fold: every non-test car gets an out-of-fold probability, K times the validation cars' healthy car-hours.
The shipped rule (`budget_threshold`) picks a threshold on those, which the served model then uses. Both
thresholds' false-alarm rates are measured on the test cars and on `--unseen-cars` cars of another fleet
(seed + 10000). The K fits are what it costs: their seconds are printed beside the served model's.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from ml.features import Series, gather_windows, series_from_records, window_ends
from ml.training.calibration import fit_platt
from ml.training.cluster import SINGLE, Collective
from ml.training.dataset import window_set
from ml.training.evaluate import alarm_rate, budget_threshold, car_false_alarms, episode_metrics
from ml.training.loop import fit
from ml.training.model import logit_model, with_calibration
from ml.training.settings import TrainSettings
from ml.training.train import PREDICT_BATCH, _builder, fit_and_evaluate, prepare
from scripts.studies.model_study import UNSEEN_SEED
from simulator.fleet import generate_readings

MONITORED_CARS = 20


def _scores(model: Any, series: Series, window: int) -> tuple[np.ndarray, np.ndarray]:
    ends = window_ends(series, window)
    windows = gather_windows(series.features, ends, window)
    return ends, model.predict(windows, batch_size=PREDICT_BATCH, verbose=0).reshape(-1)


def cross_fitted_threshold(series: Series, settings: TrainSettings, epochs: int, folds: int) -> tuple[float, float]:
    """(threshold, seconds of the K fits): the shipped rule on out-of-fold probabilities of the non-test cars."""
    prepared = prepare(series, settings)
    cars = np.random.default_rng(settings.seed).permutation(prepared.split.train + prepared.split.validation)
    pool = series.select_cars(cars.tolist())
    ends = window_ends(pool, settings.window)
    owner = pool.car_ids[ends].astype(str)
    scores = np.zeros(len(ends), np.float32)
    fixed = settings.model_copy(update={"epochs": epochs})
    started = time.monotonic()
    for k in range(folds):
        held = set(cars[k::folds].tolist())
        rest = sorted(set(cars.tolist()) - held)
        train = window_set(series.select_cars(rest), settings.window, settings.horizon)
        # The loop wants validation figures every epoch: some of the fold's own training cars, with patience
        # beyond the epochs, so that nothing of the held-out fold chooses the weights.
        watched = window_set(series.select_cars(rest[:MONITORED_CARS]), settings.window, settings.horizon)
        fitted = fit(
            Collective(SINGLE),
            _builder(fixed, prepared.mean, prepared.std),
            train,
            watched,
            fixed.epochs,
            fixed.epochs + 1,
            fixed.batch_size,
            fixed.seed + k,
        )
        own = window_set(series.select_cars(held), settings.window, settings.horizon)
        logits = logit_model(fitted.model).predict(own.windows(), batch_size=PREDICT_BATCH, verbose=0).reshape(-1)
        platt = fit_platt(logits, own.labels)
        published = with_calibration(fitted.model, platt.slope, platt.intercept)
        mine = np.isin(owner, list(held))
        scores[mine] = published.predict(
            gather_windows(pool.features, ends[mine], settings.window), batch_size=PREDICT_BATCH, verbose=0
        ).reshape(-1)
    seconds = time.monotonic() - started
    budget = settings.false_alarm_budget
    return budget_threshold(pool, ends, scores, settings.horizon, budget, window=settings.window), seconds


def measure(seed: int, cars: int, readings: int, folds: int, unseen_cars: int) -> dict[str, Any]:
    settings = TrainSettings(seed=seed)
    series = series_from_records(list(generate_readings(cars, readings, seed=seed)))
    started = time.monotonic()
    trained = fit_and_evaluate(series, settings, {"source": f"simulator fleet seed {seed}"})
    served_seconds = time.monotonic() - started
    epochs = trained.metadata["training"]["epochs"]
    crossfit, crossfit_seconds = cross_fitted_threshold(series, settings, epochs, folds)
    test = series.select_cars(trained.metadata["training"]["split"]["test"])
    unseen = series_from_records(list(generate_readings(unseen_cars, readings, seed=UNSEEN_SEED + seed)))
    result: dict[str, Any] = {"seed": seed, "served_s": served_seconds, "crossfit_s": crossfit_seconds}
    for name, part in (("test", test), ("unseen", unseen)):
        ends, scores = _scores(trained.model, part, settings.window)
        for rule, threshold in (("validation", trained.metadata["threshold"]), ("crossfit", crossfit)):
            counts = car_false_alarms(part, ends, scores, threshold, settings.horizon, window=settings.window)
            result[f"{name}_{rule}"] = {
                "threshold": threshold,
                **alarm_rate(*counts, settings.bootstrap, seed),
                "warned_share": episode_metrics(
                    part, ends, scores, threshold, settings.horizon, window=settings.window
                )["warned_share"],
            }
    return result


def _cell(figures: dict[str, Any]) -> str:
    low, high = figures["interval"]
    return f"{figures['rate']:.3f} [{low:.3f}, {high:.3f}] ({figures['warned_share']:.0%})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.studies.threshold_crossfit", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--cars", type=int, default=300, help="cars per fleet (default: %(default)s)")
    parser.add_argument("--readings", type=int, default=300, help="readings per car (default: %(default)s)")
    parser.add_argument("--seeds", default="1,2,3,4", help="comma-separated fleet seeds (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=4, help="folds of the non-test cars (default: %(default)s)")
    parser.add_argument("--unseen-cars", type=int, default=600, help="cars of another fleet (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(
        "| seed | threshold: validation / cross-fitted | test cars: rate (warned) validation / cross-fitted "
        "| unseen cars: rate [95 %] (warned) validation / cross-fitted | fit s: served / K more |",
        "|---|---|---|---|---|",
        sep="\n",
        flush=True,
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        r = measure(seed, args.cars, args.readings, args.folds, args.unseen_cars)
        test, unseen = (
            f"{_cell(r[f'{part}_validation'])} / {_cell(r[f'{part}_crossfit'])}" for part in ("test", "unseen")
        )
        thresholds = f"{r['test_validation']['threshold']:.4f} / {r['test_crossfit']['threshold']:.4f}"
        print(
            f"| {seed} | {thresholds} | {test} | {unseen} | {r['served_s']:.0f} / {r['crossfit_s']:.0f} |", flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
