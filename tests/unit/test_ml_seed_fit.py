"""The seed form's window and horizon fitted to its training records, its floors and what it asks for, and its
refusal to train on records without failures (ml/training/seed_fit.py)."""

from __future__ import annotations

import pytest

from ml.features import series_from_records
from ml.training.dataset import TrainingDataError, window_set
from ml.training.seed_fit import (
    DEFAULT_HORIZON,
    DEFAULT_WINDOW,
    MIN_HORIZON,
    MIN_WINDOW,
    RecordsHeld,
    failing_cars,
    fit_window,
    records_held,
    require_failures,
    require_measured,
)
from simulator.fleet import generate_readings


def held(per_car: int, cars: int = 25) -> RecordsHeld:
    return RecordsHeld(records=cars * per_car, cars=cars, readings_per_car=per_car, interval_s=10.0)


def test_the_seeds_defaults_25_cars_and_1000_records_get_w_and_h_scaled_to_half_of_40_readings():
    fit = fit_window(held(40), None, None)
    assert (fit.window, fit.horizon) == (7, 13)  # W + H = 20 = 40 / 2, W : H as 36 : 60, W rounded down
    assert fit.fitted == ["window", "horizon"] and fit.labelled_windows_per_car == 40 - 7 - 13 + 1
    assert "25 cars, 40 readings per car, 400 s of each car" in fit.reason and "scaled down" in fit.reason


@pytest.mark.parametrize("per_car", [192, 400, 10_000])
def test_the_defaults_stay_where_they_fit_in_half_of_each_cars_readings(per_car):
    fit = fit_window(held(per_car), None, None)
    assert (fit.window, fit.horizon) == (DEFAULT_WINDOW, DEFAULT_HORIZON) == (36, 60)
    assert "the defaults (W=36, H=60) fit" in fit.reason


@pytest.mark.parametrize("per_car", range(24, 192, 7))
def test_fitted_w_and_h_never_pass_half_the_readings_nor_the_floors_nor_the_defaults(per_car):
    fit = fit_window(held(per_car), None, None)
    assert MIN_WINDOW <= fit.window <= DEFAULT_WINDOW and MIN_HORIZON <= fit.horizon <= DEFAULT_HORIZON
    assert fit.window + fit.horizon <= per_car // 2


def test_below_the_floor_it_refuses_and_names_the_records_that_would_do():
    assert (fit_window(held(24), None, None).window, fit_window(held(24), None, None).horizon) == (6, 6)
    with pytest.raises(TrainingDataError, match="need 24 readings per car: give --train-records 600 or more"):
        fit_window(held(23), None, None)


def test_given_values_are_kept_when_each_car_holds_one_labelled_window_and_refused_otherwise():
    fit = fit_window(held(40), 12, 28)
    assert (fit.window, fit.horizon, fit.fitted, fit.labelled_windows_per_car) == (12, 28, [], 1)
    with pytest.raises(TrainingDataError) as refused:
        fit_window(held(40), 36, 60)  # the failing run: training's defaults given to 40 readings a car
    message = str(refused.value)
    assert "--window 36 and --horizon 60 need 96 readings per car: give --train-records 2400 or more" in message
    assert "leave --window and --horizon unset" in message


def test_one_given_value_is_kept_and_the_other_fitted_to_the_rest():
    assert (fit_window(held(40), 12, None).window, fit_window(held(40), 12, None).horizon) == (12, 8)
    assert (fit_window(held(40), None, 10).window, fit_window(held(40), None, 10).horizon) == (10, 10)
    assert fit_window(held(40), None, 30).window == MIN_WINDOW  # 6 + 30 <= 40: one car holds 5 labelled windows
    with pytest.raises(TrainingDataError, match="--window 36 and a horizon of at least 6 need 42 readings"):
        fit_window(held(40), 36, None)


def test_records_held_counts_the_median_cars_longest_run():
    readings = list(generate_readings(5, 30, seed=3))
    gap = [r for r in readings if not (r["car_id"] == "car-00001" and 10 <= r["seq"] < 15)]
    counted = records_held(series_from_records(gap))
    assert (counted.records, counted.cars, counted.readings_per_car, counted.interval_s) == (145, 5, 30, 10.0)
    assert records_held(series_from_records(gap[:50])).readings_per_car == 10


def test_records_without_failures_are_refused_with_the_numbers():
    series = series_from_records(list(generate_readings(25, 40, seed=42, failure_rate=0.0)))
    fit = fit_window(records_held(series), None, None)
    failures = failing_cars(series, fit)
    assert failures == {"onsets": 0, "cars_with_onset": 0, "cars_with_labelled_onset": 0}
    with pytest.raises(TrainingDataError) as refused:
        require_failures(records_held(series), fit, failures, "t holds 1200 records from offset 0: none beyond.")
    message = str(refused.value)
    assert message.startswith("the 1000 training records (25 cars, 40 readings per car, 400 s of each car, 2.8 car")
    assert (
        "hold no failure to learn from (failure onsets: 0;" in message
        and "W=7, H=13: 0, where a model needs 3" in message
    )
    assert "no model was trained" in message and "t holds 1200 records from offset 0" in message


def test_failing_cars_counts_the_cars_whose_onset_has_a_labelled_window_before_it():
    series = series_from_records(list(generate_readings(25, 160, seed=0)))
    fit = fit_window(records_held(series), None, None)
    failures = failing_cars(series, fit)
    labelled = window_set(series, fit.window, fit.horizon)
    positive_cars = set(series.car_ids[labelled.ends[labelled.labels > 0]].tolist())
    assert failures["cars_with_labelled_onset"] == len(positive_cars) >= 3
    assert failures["onsets"] >= failures["cars_with_onset"] >= failures["cars_with_labelled_onset"]
    require_failures(records_held(series), fit, failures, "")  # enough: no error


def test_a_split_whose_held_out_cars_hold_no_failure_is_not_saved():
    require_measured({"train": 40, "validation": 5, "test": 3})
    with pytest.raises(TrainingDataError, match="the test cars of the split hold no labelled failure"):
        require_measured({"train": 40, "validation": 5, "test": 0})
    with pytest.raises(TrainingDataError, match="the validation and test cars"):
        require_measured({"train": 40, "validation": 0, "test": 0})
