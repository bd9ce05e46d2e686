"""The demo's sizing: the live fleet's speed stays within the rate cap from 1 to 100,000 cars."""

import pytest

from common.errors import ConfigError
from scripts.demo.plan import MAX_LIVE_SPEEDUP, make_plan


@pytest.mark.parametrize("cars", [1, 25, 333, 100_000])
def test_live_rate_stays_within_the_cap(cars: int) -> None:
    plan = make_plan(cars, duration=120, max_rate=2000)
    assert plan.live_rate <= 2000 + 1e-6
    assert 0 < plan.live_speedup <= MAX_LIVE_SPEEDUP


def test_small_fleets_run_at_the_top_speedup_and_large_ones_slower_than_real_time() -> None:
    assert make_plan(25, 120).live_speedup == MAX_LIVE_SPEEDUP
    assert make_plan(100_000, 120, max_rate=2000).live_speedup == pytest.approx(0.2)


def test_the_history_holds_the_data_api_sizing_for_training() -> None:
    plan = make_plan(25, 120)
    assert plan.history_count == 300 * 300


def test_the_live_fleet_gets_what_is_left_but_at_least_30_s_or_half_the_duration() -> None:
    plan = make_plan(25, 120)
    assert plan.live_seconds(elapsed=50) == 70
    assert plan.live_seconds(elapsed=110) == 30
    assert make_plan(3, 20).live_seconds(elapsed=60) == 10


@pytest.mark.parametrize(("cars", "duration"), [(0, 120), (100_001, 120), (25, 0)])
def test_out_of_range_settings_are_refused_with_a_clear_error(cars: int, duration: float) -> None:
    with pytest.raises(ConfigError):
        make_plan(cars, duration)
