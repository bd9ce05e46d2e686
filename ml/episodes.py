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
- "The car told us": W is the model's window (readings; the artifact metadata's `window`). A reading is SUPPRESSED
  when its car reported a failure (failure_occurred true) in it or in any of its previous W readings (the same
  car, in its order; a gap in seq does not end it, as it does not empty the predictor's window). No alert is
  raised on it: the predictors publish failure_predicted false whatever the probability, and alert_suppressed
  true when the probability was at or above the threshold (schemas/car_failure_prediction.avsc, version 3).
  Readings whose failure_occurred is null (real data) are never suppressed: the car told nothing.
- A false alert is an alarm (a run of consecutive alerting readings, counted once, where it starts) on a healthy
  reading outside every warning stretch; the rate is per hour of judged healthy driving ("healthy car-hour").
  Suppressed readings are neither: an alarm on them is a suppressed alert (`suppressed_alerts`, its own
  outcome, never a false or a true alarm), and they are not healthy driving. Nor can they warn an episode: its
  warning stretch is judged on its readings that are not suppressed.
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


def suppressed(series: Series, window: int) -> np.ndarray:
    """bool per reading: its car reported a failure in it or in its previous `window` readings (the car told us)."""
    if window < 0:
        raise ValueError(f"window must be >= 0 readings, got {window}")
    index = np.arange(len(series))
    # a car's readings in its order, as the Series sorts them (sender seqs and content hashes apart, as in runs)
    new_car = np.ones(len(series), dtype=bool)
    new_car[1:] = (series.car_ids[1:] != series.car_ids[:-1]) | (series.hashed[1:] != series.hashed[:-1])
    car_start = np.maximum.accumulate(np.where(new_car, index, 0)) if len(series) else index
    cumulative = np.concatenate([[0], np.cumsum(series.failure, dtype=np.int64)])
    first = np.maximum(index - window, car_start)
    return (cumulative[index + 1] - cumulative[first]) > 0


def _alarm_starts(series: Series, alerting: np.ndarray) -> np.ndarray:
    """bool per reading: the first of a run of consecutive alerting readings of one run."""
    previous = np.zeros(len(series), dtype=bool)
    previous[1:] = alerting[:-1]
    previous[np.arange(len(series)) == series.run_start] = False
    return alerting & ~previous


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
    suppressed_alerts: int = 0
    """Alarms on suppressed readings (in a failure the car reported, or within W readings after it)."""

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
            "suppressed_alerts": self.suppressed_alerts,
        }


def _scored(series: Series, judged: np.ndarray, horizon: int, window: int) -> np.ndarray:
    """Readings whose alert is judged: a prediction exists, not in failure, the future known, not suppressed."""
    _, eligible = onset_labels(series, horizon)
    return judged & eligible & ~suppressed(series, window)


def episode_leads(
    series: Series, alerts: np.ndarray, judged: np.ndarray, horizon: int, *, window: int
) -> dict[int, float | None]:
    """Every judged episode, by the index of its onset: its lead time in seconds, None when it was not warned.
    `alerts`, `judged` and `window` as in `episode_report`."""
    scored = _scored(series, judged, horizon, window)
    alerting = alerts & scored
    leads: dict[int, float | None] = {}
    for onset in np.flatnonzero(onsets(series)):
        start = max(onset - horizon, series.run_start[onset])
        stretch = slice(start, onset)
        if not scored[stretch].any():
            continue
        hits = np.flatnonzero(alerting[stretch])
        leads[int(onset)] = (
            (series.event_time[onset] - series.event_time[start + hits[0]]) / 1000 if len(hits) else None
        )
    return leads


def episode_report(
    series: Series, alerts: np.ndarray, judged: np.ndarray, horizon: int, *, window: int
) -> EpisodeReport:
    """What the alerts did: `alerts` and `judged` are bool per reading (judged: a prediction exists to judge,
    e.g. the reading closes a full window; alerts: its probability is at or above the threshold, suppressed or
    not). `window`: the model's W, for the suppression rule. Readings in failure and with an unknown future are
    not judged; alarms on suppressed readings are counted apart."""
    label, _ = onset_labels(series, horizon)
    scored = _scored(series, judged, horizon, window)
    stretch = label & ~series.failure
    alerting = alerts & scored
    episodes = episode_leads(series, alerts, judged, horizon, window=window)
    leads = [lead for lead in episodes.values() if lead is not None]
    false_alarms = _alarm_starts(series, alerting) & ~stretch
    healthy = scored & ~stretch
    would_alert = alerts & judged & suppressed(series, window)
    return EpisodeReport(
        episodes=len(episodes),
        warned=len(leads),
        leads_s=np.asarray(leads, dtype=np.float64),
        false_alerts=int(false_alarms.sum()),
        healthy_hours=float(healthy.sum()) * reading_interval_s(series) / 3600,
        suppressed_alerts=int(_alarm_starts(series, would_alert).sum()),
    )


def threshold_for_budget(
    series: Series,
    probabilities: np.ndarray,
    judged: np.ndarray,
    horizon: int,
    budget_per_car_hour: float,
    candidates: int = 200,
    *,
    window: int,
) -> float:
    """The lowest alert threshold whose false alerts per healthy car-hour stay within the budget, for it and for
    every higher candidate (so that a slightly higher threshold never breaks the budget). `probabilities` per
    reading (any value where not judged). Above every probability when no candidate meets the budget. The
    candidates are quantiles of the judged readings' probabilities, suppressed ones left out (`window`: the
    model's W): their alerts are never raised."""
    scored = _scored(series, judged, horizon, window)
    levels = np.unique(np.quantile(probabilities[scored], np.linspace(0, 1, candidates))) if scored.any() else []
    never = float(np.nextafter(max(1.0, float(np.max(probabilities, initial=0.0))), np.inf))
    chosen = never
    for threshold in sorted(levels, reverse=True):
        report = episode_report(series, probabilities >= threshold, judged, horizon, window=window)
        if not report.false_alerts_per_car_hour <= budget_per_car_hour:  # nan (no healthy hour) fails too
            break
        chosen = float(threshold)
    return chosen
