"""Failure episodes: the label that measures prediction, and the figures a fleet operator counts.

Shared by training (labels, evaluation on held-out cars, the threshold) and the live demo's summary, so that a
"warning" means the same everywhere. Everything works on a `Series` (ml/features.py): readings of many cars, each
car's runs of consecutive readings, `failure` the ground truth per reading.

- An episode starts at its onset: a failed reading whose predecessor in the run is not failed.
- The label of reading t: an onset in (t, t+H] of the same run ("a failure starts within the next H readings").
  Readings already in failure are not eligible: the car shows a failure under way plainly, and counting it would
  mix detection with prediction. Nor are readings whose next H readings are not known (the end of a run) unless
  an onset is already among them.
- The warning stretch of an episode: the H readings before its onset. An episode is warned when an alert falls in
  that stretch; alerts at or after the onset do not count. Lead time: onset time minus the first such alert.
- A false alert is an alarm (a run of consecutive alerting readings, counted once, where it starts) on a healthy
  reading outside every warning stretch; the rate is per hour of judged healthy driving ("healthy car-hour").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.features import Series

DEFAULT_INTERVAL_S = 10.0  # the simulator's reading interval, when a series is too short to measure one


def onsets(series: Series) -> np.ndarray:
    """bool per reading: the first failed reading of an episode."""
    index = np.arange(len(series))
    previous_failed = np.zeros(len(series), dtype=bool)
    previous_failed[1:] = series.failure[:-1]
    previous_failed[index == series.run_start] = False
    return series.failure & ~previous_failed


def onset_labels(series: Series, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, eligible) per reading: label = an onset within the next `horizon` readings of the run; eligible =
    not in failure and with a known future (its next `horizon` readings exist, or an onset is among them)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 reading, got {horizon}")
    index = np.arange(len(series))
    cumulative = np.concatenate([[0], np.cumsum(onsets(series), dtype=np.int64)])
    last = np.minimum(index + horizon, series.run_end)
    label = (cumulative[last + 1] - cumulative[index + 1]) > 0
    known = (index + horizon <= series.run_end) | label
    return label, known & ~series.failure


def warning_stretches(series: Series, horizon: int) -> np.ndarray:
    """bool per reading: within the `horizon` readings before an onset of its run."""
    label, _ = onset_labels(series, horizon)
    return label & ~series.failure


def reading_interval_s(series: Series) -> float:
    """The median time between consecutive readings of a run, in seconds."""
    same_run = series.run_start[1:] == series.run_start[:-1]
    gaps = np.diff(series.event_time)[same_run]
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) / 1000 if len(gaps) else DEFAULT_INTERVAL_S


@dataclass(frozen=True)
class EpisodeReport:
    episodes: int
    """Failure episodes with at least one judged reading in their warning stretch."""
    warned: int
    leads_s: np.ndarray
    """Lead time of each warned episode, seconds from the first alert to the onset."""
    false_alerts: int
    healthy_hours: float

    @property
    def warned_share(self) -> float:
        return self.warned / self.episodes if self.episodes else float("nan")

    @property
    def median_lead_s(self) -> float:
        return float(np.median(self.leads_s)) if len(self.leads_s) else float("nan")

    @property
    def false_alerts_per_car_hour(self) -> float:
        return self.false_alerts / self.healthy_hours if self.healthy_hours else float("nan")

    def as_dict(self) -> dict[str, float | int | list[float]]:
        return {
            "episodes": self.episodes,
            "warned": self.warned,
            "warned_share": self.warned_share,
            "median_lead_s": self.median_lead_s,
            "lead_s_quartiles": [float(q) for q in np.quantile(self.leads_s, (0.25, 0.5, 0.75))]
            if len(self.leads_s)
            else [],
            "false_alerts": self.false_alerts,
            "healthy_car_hours": self.healthy_hours,
            "false_alerts_per_healthy_car_hour": self.false_alerts_per_car_hour,
        }


def episode_leads(series: Series, alerts: np.ndarray, judged: np.ndarray, horizon: int) -> dict[int, float | None]:
    """Every judged episode, by the index of its onset: its lead time in seconds, None when it was not warned.
    `alerts` and `judged` as in `episode_report`."""
    _, eligible = onset_labels(series, horizon)
    scored = judged & eligible
    alerting = alerts & scored
    leads: dict[int, float | None] = {}
    for onset in np.flatnonzero(onsets(series)):
        start = max(onset - horizon, series.run_start[onset])
        window = slice(start, onset)
        if not scored[window].any():
            continue
        hits = np.flatnonzero(alerting[window])
        leads[int(onset)] = (
            (series.event_time[onset] - series.event_time[start + hits[0]]) / 1000 if len(hits) else None
        )
    return leads


def episode_report(series: Series, alerts: np.ndarray, judged: np.ndarray, horizon: int) -> EpisodeReport:
    """What the alerts did: `alerts` and `judged` are bool per reading (judged: a prediction exists to judge,
    e.g. the reading closes a full window). Readings in failure and with an unknown future are not judged."""
    label, eligible = onset_labels(series, horizon)
    scored = judged & eligible
    stretch = label & ~series.failure
    alerting = alerts & scored
    index = np.arange(len(series))
    episodes = episode_leads(series, alerts, judged, horizon)
    leads = [lead for lead in episodes.values() if lead is not None]
    previous = np.zeros(len(series), dtype=bool)
    previous[1:] = alerting[:-1]
    previous[index == series.run_start] = False
    false_alarms = alerting & ~previous & ~stretch
    healthy = scored & ~stretch
    return EpisodeReport(
        episodes=len(episodes),
        warned=len(leads),
        leads_s=np.asarray(leads, dtype=np.float64),
        false_alerts=int(false_alarms.sum()),
        healthy_hours=float(healthy.sum()) * reading_interval_s(series) / 3600,
    )


def threshold_for_budget(
    series: Series,
    probabilities: np.ndarray,
    judged: np.ndarray,
    horizon: int,
    budget_per_car_hour: float,
    candidates: int = 200,
) -> float:
    """The lowest alert threshold whose false alerts per healthy car-hour stay within the budget, for it and for
    every higher candidate (so that a slightly higher threshold never breaks the budget). `probabilities` per
    reading (any value where not judged). Above every probability when no candidate meets the budget."""
    _, eligible = onset_labels(series, horizon)
    scored = judged & eligible
    levels = np.unique(np.quantile(probabilities[scored], np.linspace(0, 1, candidates))) if scored.any() else []
    never = float(np.nextafter(max(1.0, float(np.max(probabilities, initial=0.0))), np.inf))
    chosen = never
    for threshold in sorted(levels, reverse=True):
        report = episode_report(series, probabilities >= threshold, judged, horizon)
        if not report.false_alerts_per_car_hour <= budget_per_car_hour:  # nan (no healthy hour) fails too
            break
        chosen = float(threshold)
    return chosen
