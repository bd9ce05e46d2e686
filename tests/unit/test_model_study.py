import numpy as np

from ml.episodes import onsets
from ml.features import series_from_records
from scripts.studies.model_study import fleet_with_modes, with_modes
from simulator.failures import FailureMode
from simulator.fleet import generate_readings


def test_the_study_fleet_is_generate_readings_and_names_the_mode_of_every_episode():
    readings, modes = fleet_with_modes(20, 400, seed=5)
    assert readings == list(generate_readings(20, 400, seed=5))
    series = series_from_records(readings)
    starts = {(str(series.car_ids[i]), int(series.seq[i])) for i in np.flatnonzero(onsets(series))}
    assert starts and set(modes) == starts
    assert set(modes.values()) <= {mode.name.lower() for mode in FailureMode if mode is not FailureMode.NONE}


def test_every_failed_reading_carries_its_episodes_mode_and_healthy_readings_none():
    readings, modes = fleet_with_modes(20, 400, seed=5)
    series = with_modes(series_from_records(readings), modes)
    starts = np.flatnonzero(onsets(series))
    assert [series.failure_mode[i] for i in starts] == [
        modes[(str(series.car_ids[i]), int(series.seq[i]))] for i in starts
    ]
    assert (series.failure_mode[~series.failure] == "").all() and (series.failure_mode[series.failure] != "").all()
