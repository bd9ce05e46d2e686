"""The serving model's panel: its metadata and its report (ml/training/report.py, report.json) read from the model
folder, once per version, and what the panel says of it.

The verdict is built here from the report's structured keys, never from its `verdict` string:
- at the operating point (each model at its own threshold, on the held-out test cars), for the LSTM and gradient
  boosting: failure episodes warned (n of N, share), median lead, false alerts per healthy car-hour, each beside
  its target (report.json `targets`, from ml/training/report.py TARGETS) and whether it is met; per failure mode
  (`episodes.by_mode`) and the threshold's transfer (`models.<name>.threshold_transfer`, its false-alarm rate on
  the validation cars it was chosen on beside the test cars' and the budget) when the report has them;
- PR-AUC: one model "beats" the other only when the car-bootstrap 95 % interval of the difference (`comparison`)
  excludes 0; otherwise they are on par.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[\w.-]+$")
COMPARED = (("lstm", "the LSTM"), ("gbm", "gradient boosting"))
# The episode figures at the operating point, in the panel's order, with their unit.
OPERATING_POINT = (
    ("warned_share", "episodes warned"),
    ("median_lead_s", "median lead (simulated s)"),
    ("false_alerts_per_healthy_car_hour", "false alerts per healthy car-hour"),
)
LABELS = dict(OPERATING_POINT)
REPORT_ROWS = (
    ("PR-AUC", None, "pr_auc"),
    ("ROC-AUC", None, "roc_auc"),
    ("precision", None, "precision"),
    ("recall", None, "recall"),
    ("threshold", None, "threshold"),
)


class ModelReports:
    """The serving model's metadata, report and plots from the model folder, read once per version."""

    def __init__(self, model_dir: str) -> None:
        self.root = Path(model_dir)
        self._cache: dict[str, dict[str, Any] | None] = {}

    def describe(self, version: str | None) -> dict[str, Any] | None:
        if version is None:
            return None
        if version not in self._cache:
            self._cache[version] = self._read(version)
        return self._cache[version] or {"version": version, "metrics": [], "plots": [], "verdict": []}

    def plot(self, version: str, name: str) -> Path | None:
        """The path of a plot of a version's report, or None: only `<model_dir>/<version>/report/<name>.png`."""
        if not (SAFE_NAME.match(version) and SAFE_NAME.match(name) and name.endswith(".png")):
            return None
        path = self.root / version / "report" / name
        return path if path.is_file() else None

    def _read(self, version: str) -> dict[str, Any] | None:
        folder = self.root / version
        if not SAFE_NAME.match(version) or not (folder / "metadata.json").is_file():
            return None
        try:
            metadata = json.loads((folder / "metadata.json").read_text())
            report_file = folder / "report" / "report.json"
            report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        except (OSError, ValueError) as exc:
            log.warning("model %s: its metadata or report does not read: %s", version, exc)
            return None
        served = (metadata.get("model") or {}).get("type")
        point = operating_point(report, served)
        return {
            "version": version,
            "created_at": metadata.get("created_at"),
            "threshold": metadata.get("threshold"),
            "horizon": metadata.get("horizon"),
            "window": metadata.get("window"),
            "served": served,
            "verdict": verdict_lines(point),
            "operating_point": point,
            "metrics": report_metrics(report),
            "plots": [
                {"title": path.stem.replace("_", " "), "url": f"/model/{version}/{path.name}"}
                for path in sorted((folder / "report").glob("*.png"))
            ],
        }


def report_metrics(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's held-out figures over all windows, the LSTM beside gradient boosting."""
    models = report.get("models") or {}
    if "lstm" not in models:
        return []

    def value(model: str, part: str | None, key: str) -> Any:
        source = models.get(model) or {}
        return (source.get(part) or {}).get(key) if part else source.get(key)

    return [{"name": name, "lstm": value("lstm", p, k), "gbm": value("gbm", p, k)} for name, p, k in REPORT_ROWS]


def operating_point(report: dict[str, Any], served: str | None = None) -> dict[str, Any] | None:
    """Both models at their thresholds on the held-out cars, the targets, the PR-AUC comparison; None when the
    report holds neither model."""
    models = report.get("models") or {}
    if not any(name in models for name, _ in COMPARED):
        return None
    targets = report.get("targets") or {}
    columns = []
    for name, label in COMPARED:
        if name not in models:
            continue
        episodes = models[name].get("episodes") or {}
        columns.append(
            {
                "model": name,
                "label": label,
                "serving": name == served,
                "threshold": models[name].get("threshold"),
                **{
                    key: episodes.get(key)
                    for key in ("episodes", "warned", "false_alerts", "healthy_car_hours")
                    + tuple(k for k, _ in OPERATING_POINT)
                },
                "met": {key: meets(episodes.get(key), target) for key, target in targets.items()},
                "by_mode": episodes.get("by_mode"),
                "threshold_transfer": models[name].get("threshold_transfer"),
            }
        )
    return {
        "models": columns,
        "targets": [
            {"key": k, "label": LABELS.get(k, k), "target": t.get("target"), "at_most": "at_most" in t}
            for k, t in targets.items()
        ],
        "comparison": compare(report.get("comparison"), models),
    }


def meets(value: float | None, target: dict[str, Any]) -> bool:
    """Whether a figure meets its target (report.json `targets`: at_most or at_least); no figure meets none."""
    if value is None or target.get("target") is None:
        return False
    return value <= target["target"] if "at_most" in target else value >= target["target"]


def compare(comparison: dict[str, Any] | None, models: dict[str, Any]) -> dict[str, Any]:
    """The PR-AUC difference LSTM - gradient boosting with its car-bootstrap interval, and the better model: one
    only where the interval excludes 0."""
    pr_auc = {name: (models.get(name) or {}).get("pr_auc") for name, _ in COMPARED}
    result: dict[str, Any] = {"pr_auc": pr_auc, "better": None}
    if not comparison or comparison.get("difference") is None:
        return {**result, "text": "no PR-AUC comparison: the test cars hold a single class or no baseline"}
    low, high, difference = comparison.get("low"), comparison.get("high"), comparison["difference"]
    result.update(difference=difference, low=low, high=high, resamples=comparison.get("resamples"))
    figures = f"{_f(pr_auc['lstm'])} vs {_f(pr_auc['gbm'])}, difference {difference:+.3f}"
    if low is None or high is None:
        return {**result, "text": f"{figures}: no bootstrap interval (every resample held a single class)"}
    interval = f"95 % car-bootstrap interval [{low:+.3f}, {high:+.3f}] ({comparison.get('resamples')} resamples)"
    if low > 0:
        result["better"] = "lstm"
        text = f"the LSTM beats gradient boosting on PR-AUC: {figures}, {interval} above 0"
    elif high < 0:
        result["better"] = "gbm"
        text = f"gradient boosting beats the LSTM on PR-AUC: {figures}, {interval} below 0"
    else:
        text = f"the LSTM and gradient boosting are on par on PR-AUC: {figures}, {interval} includes 0"
    return {**result, "text": text}


def verdict_lines(point: dict[str, Any] | None) -> list[str]:
    """The panel's verdict: one line per model at its operating point against the targets, then PR-AUC."""
    if point is None:
        return []
    targets = {t["key"]: t for t in point["targets"]}
    lines = []
    for column in point["models"]:
        figure = partial(_figure, column, targets)
        parts = [
            figure(
                "warned_share",
                f"warned {_count(column['warned'])} of {_count(column['episodes'])} failure episodes, "
                f"{_share(column['warned_share'])}",
                _share,
            ),
            figure("median_lead_s", f"median lead {_seconds(column['median_lead_s'])}", _seconds),
            figure(
                "false_alerts_per_healthy_car_hour",
                f"{_f(column['false_alerts_per_healthy_car_hour'], 2)} false alerts per healthy car-hour",
                lambda v: _f(v, 2),
            ),
        ]
        transfer = column["threshold_transfer"] or {}
        chosen = (transfer.get("chosen_on") or {}).get("rate")
        if chosen is not None:
            parts.append(f"{_f(chosen, 2)} on the validation cars its threshold was chosen on")
        met = f": {sum(column['met'].values())} of {len(column['met'])} targets met" if column["met"] else ""
        name = f"{column['label']}{' (serving)' if column['serving'] else ''}"
        lines.append(f"{name}, threshold {_f(column['threshold'])}: {'; '.join(parts)}{met}")
    lines.append(point["comparison"]["text"])
    return lines


def _figure(column: dict[str, Any], targets: dict, key: str, text: str, show: Callable[[Any], str]) -> str:
    """`text` and, when the report has a target for `key`, the target and whether the model met it."""
    target = targets.get(key)
    if target is None:
        return text
    sign = "≤" if target["at_most"] else "≥"
    return f"{text} (target {sign} {show(target['target'])}, {'met' if column['met'][key] else 'missed'})"


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _seconds(value: float | None) -> str:
    return "n/a (none warned)" if value is None else f"{value:.0f} s"
