"""The evaluation report: report.json, report.txt (a short table) and PNG plots, written next to the model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODELS = {
    "lstm": "LSTM over the window's changes and the last reading, Platt-calibrated",
    "gbm": "gradient boosting on window summaries (last, mean, std, min, max, slope per sensor)",
    "logistic": "logistic regression on the last reading (balanced classes)",
    "prevalence": "constant: the training windows' prevalence (the floor)",
}
COLUMNS = {"lstm": "LSTM", "gbm": "GBM", "logistic": "logistic", "prevalence": "prevalence"}
TARGETS = {"warned_share": 0.8, "median_lead_s": 180.0, "false_alerts_per_healthy_car_hour": 0.1}
"""The issue's operating targets on held-out cars: at least 80 % of episodes warned before onset, a median lead
of at least 3 minutes, at most 0.1 false alerts per healthy car-hour."""
MODE_TARGET = 0.5
"""Every failure mode at least 50 % warned."""
OPERATING_MODELS = ("lstm", "gbm")
"""The models shown side by side at the operating point: the served one and the bar it must clear."""

ROWS = (
    ("pr_auc", "PR-AUC"),
    ("roc_auc", "ROC-AUC"),
    ("brier", "Brier (published)"),
    ("brier_uncalibrated", "Brier (uncalibrated)"),
    ("threshold", "threshold"),
    ("precision", "precision"),
    ("recall", "recall"),
)
EPISODE_ROWS = (
    ("warned_share", "episodes warned"),
    ("median_lead_s", "median lead (s)"),
    ("false_alerts_per_healthy_car_hour", "false alerts / car-h"),
)
TRANSFER_ROWS = (
    (("chosen_on", "rate"), "false alerts / car-h, valid."),
    (("test", "rate"), "false alerts / car-h, test"),
    (("transfer_error",), "test - budget"),
    (("gap",), "test - validation"),
)
"""The threshold's transfer (ml/training/evaluate.py: threshold_transfer): its rate where it was chosen, on the
test cars, and the differences."""


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def targets(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with a model's value and whether it is met (NaN, e.g. no episode warned, is not met)."""
    episodes = model["episodes"]
    result = {}
    for key, target in TARGETS.items():
        value = episodes[key]
        at_most = key.startswith("false_alerts")
        met = value is not None and (value <= target if at_most else value >= target)
        result[key] = {"target": target, "value": value, "at_most" if at_most else "at_least": True, "met": met}
    return result


def text_table(report: dict[str, Any]) -> str:
    """Every model on the held-out test cars, the threshold's transfer, the confusion counts and the episodes per
    failure mode at the operating point, then the verdict and the targets."""
    models = report["models"]
    names = list(models)
    lines = [f"{'test cars: ' + str(len(report['split']['test'])):<30}" + "".join(f"{COLUMNS[n]:>12}" for n in names)]
    lines += [f"{label:<30}" + "".join(f"{_cell(models[n].get(key)):>12}" for n in names) for key, label in ROWS]
    lines += [
        f"{label:<30}" + "".join(f"{_cell(models[n]['episodes'].get(key)):>12}" for n in names)
        for key, label in EPISODE_ROWS
    ]
    lines += [
        f"{label:<30}" + "".join(f"{_cell(_transfer_figure(models[n], path)):>12}" for n in names)
        for path, label in TRANSFER_ROWS
    ]
    episodes = models["lstm"]["episodes"]
    lines.append(
        f"label: a failure starts within {report['horizon']} readings; window {report['window']}; "
        f"{episodes['episodes']} failure episodes on the test cars"
    )
    for name in OPERATING_MODELS:
        confusion = models[name]["confusion"]
        windows, warned = confusion["windows"], confusion["episodes"]
        lines.append(
            f"{COLUMNS[name]} at its threshold: windows TP {windows['tp']} FP {windows['fp']} FN {windows['fn']} "
            f"TN {windows['tn']}; episodes warned {warned['warned']}, missed {warned['missed']}, false alarms "
            f"{warned['false_alarms']}, suppressed {_cell(warned['suppressed'])}"
        )
    by_mode = {name: models[name]["episodes"].get("by_mode") for name in OPERATING_MODELS}
    if by_mode["lstm"] is not None:
        lines.append(
            "episodes warned by failure mode (LSTM / GBM): "
            + ", ".join(
                f"{mode} {m['warned']}/{m['episodes']} / {by_mode['gbm'][mode]['warned']}/{m['episodes']}"
                for mode, m in by_mode["lstm"].items()
            )
        )
    lines.append(report["verdict"])
    lines.append(
        "targets (LSTM): "
        + ", ".join(
            f"{key} {_cell(t['value'])} {'met' if t['met'] else 'NOT met'} ({'<=' if 'at_most' in t else '>='} "
            f"{t['target']})"
            for key, t in report["targets"].items()
        )
    )
    return "\n".join(lines)


def _transfer_figure(model: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = model["threshold_transfer"]
    for key in path:
        value = value[key]
    return value


def comparison_outcome(comparison: dict[str, Any] | None) -> str | None:
    """`lstm_better` or `gbm_better` when the car bootstrap's 95 % interval of the PR-AUC difference excludes 0,
    `not_distinguishable` when it includes 0; None without an interval."""
    if comparison is None or comparison.get("low") is None:
        return None
    if comparison["low"] > 0:
        return "lstm_better"
    return "gbm_better" if comparison["high"] < 0 else "not_distinguishable"


def _at_operating_point(name: str, episodes: dict[str, Any]) -> str:
    if not episodes["episodes"]:
        return f"{name} has no test episode to warn"
    share = episodes["warned_share"]
    lead = episodes["median_lead_s"]
    rate = episodes["false_alerts_per_healthy_car_hour"]
    return (
        f"{name} warns {episodes['warned']} of {episodes['episodes']} episodes ({share:.0%})"
        + (f", median lead {lead:.0f} s" if lead is not None else "")
        + (f", {rate:.2f} false alerts per healthy car-hour" if rate is not None else "")
    )


def verdict(lstm: dict[str, Any], gbm: dict[str, Any], comparison: dict[str, Any] | None) -> tuple[bool | None, str]:
    """(whether the LSTM reliably beats gradient boosting, the verdict in words). It says "beats" only where the
    car bootstrap's 95 % interval of the PR-AUC difference excludes 0, and then speaks at the operating point:
    episodes warned, median lead and false alerts per healthy car-hour of both models on the test cars."""
    operating = (
        f"at the operating point {_at_operating_point('the LSTM', lstm['episodes'])}; "
        f"{_at_operating_point('gradient boosting', gbm['episodes'])}"
    )
    if comparison is None or lstm["pr_auc"] is None or gbm["pr_auc"] is None:
        return None, f"no PR-AUC verdict: the test cars hold a single class; {operating}"
    scores = f"{lstm['pr_auc']:.3f} vs {gbm['pr_auc']:.3f}, difference {comparison['difference']:+.3f}"
    outcome = comparison_outcome(comparison)
    if outcome is None:
        return (
            None,
            f"LSTM against gradient boosting on PR-AUC: {scores}, no interval (every resample held a "
            f"single class); {operating}",
        )
    interval = (
        f"95 % interval [{comparison['low']:+.3f}, {comparison['high']:+.3f}] over {comparison['resamples']} "
        "resamples of the test cars"
    )
    words = {
        "lstm_better": "the LSTM beats gradient boosting on PR-AUC",
        "gbm_better": "gradient boosting beats the LSTM on PR-AUC",
        "not_distinguishable": "the LSTM and gradient boosting are not distinguishable on PR-AUC",
    }
    return outcome == "lstm_better", f"{words[outcome]} ({scores}, {interval}); {operating}"


def operating_point(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The LSTM and gradient boosting at their thresholds on the test cars, each figure against its target."""
    figures = ("episodes", "warned", *TARGETS)
    return {
        "targets": TARGETS,
        "models": {
            name: {
                **{key: models[name]["episodes"][key] for key in figures},
                "threshold": models[name]["threshold"],
                "met": {key: t["met"] for key, t in targets(models[name]).items()},
            }
            for name in OPERATING_MODELS
        },
    }


def write_report(folder: Path, report: dict[str, Any], history: dict[str, list[float]], curves: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(
        json.dumps({**report, "history": history}, indent=2, default=_json_default) + "\n"
    )
    (folder / "report.txt").write_text(text_table(report) + "\n")
    from ml.training.plots import write_plots  # imports matplotlib, and this module's names: only when writing

    write_plots(folder, report, history, curves)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
