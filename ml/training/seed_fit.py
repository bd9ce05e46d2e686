"""What the seed form's records hold: the window W and horizon H fitted to them, and the failures to learn from.

The seed's command line trains on a fixed count of records (1000) whatever the fleet: 25 cars hold 40 readings
each, and training's defaults (W = 36, H = 60) need 96 readings of a car for one labelled window. So the seed form
fits W and H to the training records, unless given (ml/README.md, "The seed's form"):

- n: readings per car in the training records (the median car's longest run of consecutive readings);
- W + H at most half of n (`LABELLED_SHARE`): each car then ends at least n/2 + 1 labelled windows, where W + H = n
  would leave it one;
- the defaults when they fit in that; otherwise both scaled down in the defaults' ratio, W rounded down;
- at least `MIN_WINDOW` and `MIN_HORIZON` readings: below that it refuses and says how many records would do;
- a --window or --horizon given is kept when W + H <= n (one labelled window per car), the other one fitted.

Every following reading of a car seen in training closes a window: its car's n training readings lend the W - 1
readings before it (W <= n / 2).

A model needs failures to learn from, and held-out cars to measure it on: at least `MIN_FAILING_CARS` cars whose
failure starts in the records after a labelled window, one each for training, validation and test. Fewer, and no
model is trained (the labels are never made up); a model whose validation or test cars hold no failure after all
is not saved.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ml.episodes import onsets, reading_interval_s
from ml.features import Series
from ml.training.dataset import TrainingDataError, window_set
from ml.training.settings import FitSettings

DEFAULT_WINDOW: int = FitSettings.model_fields["window"].default
DEFAULT_HORIZON: int = FitSettings.model_fields["horizon"].default
LABELLED_SHARE = 0.5
MIN_WINDOW = 6
"""A window of a minute at one reading per 10 s: fewer readings hold a level, hardly a trend."""
MIN_HORIZON = 6
"""A warning at least a minute ahead at one reading per 10 s: less is no time to act."""
MIN_FAILING_CARS = 3
"""One car whose failure starts in the records for each of training, validation and test (ml/training/dataset.py
splits cars stratified by failure): with fewer, validation and test hold no failure and the model is unmeasured."""


@dataclass(frozen=True)
class RecordsHeld:
    """The training records, as the fit sees them."""

    records: int
    cars: int
    readings_per_car: int
    interval_s: float

    @property
    def car_hours(self) -> float:
        return self.cars * self.readings_per_car * self.interval_s / 3600

    def describe(self) -> str:
        return (
            f"the {self.records} training records ({self.cars} cars, {self.readings_per_car} readings per car, "
            f"{self.readings_per_car * self.interval_s:.0f} s of each car, {self.car_hours:.1f} car-hours)"
        )


def records_held(series: Series) -> RecordsHeld:
    starts = np.unique(series.run_start)
    longest: dict[str, int] = {}
    for car, length in zip(series.car_ids[starts], series.run_end[starts] - starts + 1, strict=True):
        longest[car] = max(longest.get(car, 0), int(length))
    per_car = int(np.median(list(longest.values()))) if longest else 0
    return RecordsHeld(len(series), len(longest), per_car, reading_interval_s(series))


@dataclass(frozen=True)
class WindowFit:
    window: int
    horizon: int
    fitted: list[str]
    """Which of window and horizon were fitted (not given)."""
    readings_per_car: int
    labelled_windows_per_car: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _what_would_do(held: RecordsHeld, window: int | None, horizon: int | None) -> str:
    """The readings per car, and records, that the given W and H (or the floors of fitted ones) need."""
    w, h = window or MIN_WINDOW, horizon or MIN_HORIZON
    if window is None and horizon is None:
        needed = math.ceil((w + h) / LABELLED_SHARE)
        wanted = f"a window of at least {w} and a horizon of at least {h} readings within {LABELLED_SHARE:.0%} of them"
    else:
        needed = w + h
        parts = [f"--window {w}" if window else f"a window of at least {w}"]
        parts.append(f"--horizon {h}" if horizon else f"a horizon of at least {h}")
        wanted = " and ".join(parts)
    advice = f"give --train-records {needed * held.cars} or more"
    if window or horizon:
        advice += ", or leave --window and --horizon unset to fit them to the records"
    return f"{wanted} need {needed} readings per car: {advice}"


def _how(fitted: list[str], n: int, defaults: bool) -> str:
    share = f"{LABELLED_SHARE:.0%} of the {n} readings per car"
    if not fitted:
        return "W and H given"
    if len(fitted) == 1:
        return f"{'W' if fitted == ['horizon'] else 'H'} given, {fitted[0]} fitted to W + H <= {share}"
    if defaults:
        return f"the defaults (W={DEFAULT_WINDOW}, H={DEFAULT_HORIZON}) fit in W + H <= {share}"
    return f"W + H at most {share}: the defaults (W={DEFAULT_WINDOW}, H={DEFAULT_HORIZON}) scaled down in their ratio"


def fit_window(held: RecordsHeld, window: int | None, horizon: int | None) -> WindowFit:
    """W and H for the training records (the module's rule); TrainingDataError with what would do when none fits."""
    n = held.readings_per_car
    budget = int(n * LABELLED_SHARE)
    if window is None and horizon is None:
        scale = min(1.0, budget / (DEFAULT_WINDOW + DEFAULT_HORIZON))
        w = max(MIN_WINDOW, int(DEFAULT_WINDOW * scale))
        h = max(MIN_HORIZON, min(DEFAULT_HORIZON, budget - w))
    elif window is None:
        h, w = horizon, max(MIN_WINDOW, min(DEFAULT_WINDOW, budget - horizon))
    elif horizon is None:
        w, h = window, max(MIN_HORIZON, min(DEFAULT_HORIZON, budget - window))
    else:
        w, h = window, horizon
    fitted = [name for name, given in (("window", window), ("horizon", horizon)) if given is None]
    limit = budget if len(fitted) == 2 else n
    if w + h > limit:
        raise TrainingDataError(f"{held.describe()}: too few readings per car: {_what_would_do(held, window, horizon)}")
    how = _how(fitted, n, (w, h) == (DEFAULT_WINDOW, DEFAULT_HORIZON))
    reason = (
        f"{held.describe()}; {how}: W={w} readings ({w * held.interval_s:.0f} s) seen, a failure starting within "
        f"H={h} ({h * held.interval_s:.0f} s) predicted, {n - w - h + 1} labelled windows per car; every following "
        f"reading of a car seen in training closes a window (its car's training readings lend the W - 1 before it)"
    )
    return WindowFit(w, h, fitted, n, n - w - h + 1, reason)


def failing_cars(series: Series, fit: WindowFit) -> dict[str, int]:
    """Failure onsets in the training records, and the cars with a labelled window before one."""
    labelled = window_set(series, fit.window, fit.horizon)
    starting = onsets(series)
    return {
        "onsets": int(starting.sum()),
        "cars_with_onset": len(set(series.car_ids[starting].tolist())),
        "cars_with_labelled_onset": len(set(series.car_ids[labelled.ends[labelled.labels > 0]].tolist())),
    }


def require_failures(held: RecordsHeld, fit: WindowFit, failures: dict[str, int], more: str) -> None:
    """TrainingDataError, with the numbers, unless MIN_FAILING_CARS cars fail after a labelled window. `more`:
    what the topic holds beyond the records, for the advice."""
    cars = failures["cars_with_labelled_onset"]
    if cars >= MIN_FAILING_CARS:
        return
    what = "no failure" if failures["onsets"] == 0 else "too few failures"
    raise TrainingDataError(
        f"{held.describe()} hold {what} to learn from (failure onsets: {failures['onsets']}; cars whose failure "
        f"starts after a labelled window of W={fit.window}, H={fit.horizon}: {cars}, where a model needs "
        f"{MIN_FAILING_CARS}, one each for training, validation and test): no model was trained and nothing was "
        f"predicted. {more} Train on "
        "records that hold failures: more of them (--train-records) or a START_OFFSET where failures are "
        "(ml/README.md, the seed's form)"
    )


def require_measured(positives: dict[str, int]) -> None:
    """TrainingDataError unless the validation and test cars of the split hold a labelled failure (`positives`:
    the trained model's `training.positives`). The split is stratified by cars with any failed reading, so a car
    already failed at the range's start (no onset in it) can take a held-out place of a car with an onset."""
    empty = [name for name in ("validation", "test") if positives.get(name, 0) == 0]
    if empty:
        raise TrainingDataError(
            f"the {' and '.join(empty)} cars of the split hold no labelled failure (positive windows per split: "
            f"{positives}): the model cannot be calibrated and measured, so it was not saved and nothing was "
            "predicted. Train on records that hold more failures (--train-records, or another START_OFFSET)"
        )
