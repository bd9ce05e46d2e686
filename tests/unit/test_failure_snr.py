"""The signal-to-noise study of simulator/README.md: every lead-up shows in what the car reports, and the shock
absorber's only over a window of readings."""

import pytest

from scripts.studies.failure_snr import Row, measure, table

DIRECTION = {"tire_pressure_loss": -1, "shock_absorber": 1, "drive_shaft": 1, "coolant_overheating": 1}
DIRECTION |= {"battery_cell": -1}


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return measure(cars=300, readings=240, seed=3, window=10)


def test_every_mode_shifts_its_statistic_in_its_direction_over_a_window(rows):
    assert {row.mode for row in rows} == set(DIRECTION)
    for row in rows:
        assert row.lead_ups > 10, row
        assert DIRECTION[row.mode] * row.snr_window > 1.2, row


def test_the_shock_absorber_hides_in_one_reading_and_shows_over_a_window(rows):
    shock = [row for row in rows if row.mode == "shock_absorber"]
    assert [row.statistic.split()[0] for row in shock] == ["log(accelerometer"] * 2  # its RMS and its peak
    for row in shock:
        assert 0 < row.snr_reading < 1.2 and row.snr_window > 1.5 * row.snr_reading, row


def test_the_table_has_a_row_per_statistic(rows):
    text = table(rows, 10)
    assert text.count("\n") == 1 + len(rows) and "| shock absorber |" in text
