import numpy as np

from ml.episodes import onsets
from ml.features import series_from_records
from simulator.failures import FailureMode
from simulator.fleet import Fleet, generate_readings


def test_the_study_fleet_names_the_mode_of_every_episode_as_the_simulator_drew_it():
    fleet = Fleet(20, seed=5)
    drawn: dict[tuple[str, int], str] = {}
    for _ in range(400):
        step = fleet.step()
        for car in np.flatnonzero(step.new_failure):
            drawn[(fleet.car_ids[car], step.seq)] = FailureMode(int(step.mode[car])).name.lower()
    series = series_from_records(list(generate_readings(20, 400, seed=5)))
    starts = np.flatnonzero(onsets(series))
    assert starts.size and {(str(series.car_ids[i]), int(series.seq[i])) for i in starts} == set(drawn)
    assert [series.failure_mode[i] for i in starts] == [
        drawn[(str(series.car_ids[i]), int(series.seq[i]))] for i in starts
    ]


def test_every_failed_reading_carries_its_episodes_mode_and_healthy_readings_none():
    series = series_from_records(list(generate_readings(20, 400, seed=5)))
    assert (series.failure_mode[~series.failure] == "").all() and (series.failure_mode[series.failure] != "").all()
