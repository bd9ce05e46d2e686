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


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def targets(lstm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the LSTM's value and whether it is met (NaN, e.g. no episode warned, is not met)."""
    episodes = lstm["episodes"]
    result = {}
    for key, target in TARGETS.items():
        value = episodes[key]
        at_most = key.startswith("false_alerts")
        met = value is not None and (value <= target if at_most else value >= target)
        result[key] = {"target": target, "value": value, "at_most" if at_most else "at_least": True, "met": met}
    return result


def text_table(report: dict[str, Any]) -> str:
    """Every model on the held-out test cars, then the verdict and the targets."""
    models = report["models"]
    names = list(models)
    lines = [f"{'test cars: ' + str(len(report['split']['test'])):<26}" + "".join(f"{COLUMNS[n]:>12}" for n in names)]
    lines += [f"{label:<26}" + "".join(f"{_cell(models[n].get(key)):>12}" for n in names) for key, label in ROWS]
    lines += [
        f"{label:<26}" + "".join(f"{_cell(models[n]['episodes'].get(key)):>12}" for n in names)
        for key, label in EPISODE_ROWS
    ]
    episodes = models["lstm"]["episodes"]
    lines.append(
        f"label: a failure starts within {report['horizon']} readings; window {report['window']}; "
        f"{episodes['episodes']} failure episodes on the test cars"
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


def verdict(lstm: dict[str, Any], gbm: dict[str, Any], comparison: dict[str, Any] | None) -> tuple[bool | None, str]:
    """Whether the LSTM beats gradient boosting on PR-AUC of the held-out cars, and whether the car bootstrap's
    95 % interval of the difference excludes zero."""
    if comparison is None or lstm["pr_auc"] is None or gbm["pr_auc"] is None:
        return None, "no verdict: the test cars hold a single class, so PR-AUC is undefined"
    beats = lstm["pr_auc"] > gbm["pr_auc"]
    word = "BEATS" if beats else "does NOT beat"
    text = f"the LSTM {word} gradient boosting on PR-AUC on held-out cars ({lstm['pr_auc']:.3f} vs {gbm['pr_auc']:.3f})"
    if comparison["low"] is None:
        return beats, text + "; no bootstrap interval (every resample held a single class)"
    low, high = comparison["low"], comparison["high"]
    sure = "the interval excludes 0" if low > 0 or high < 0 else "the interval includes 0: not a reliable difference"
    return (
        beats,
        f"{text}; difference {comparison['difference']:+.3f}, 95 % interval over {comparison['resamples']} "
        f"resamples of the test cars [{low:+.3f}, {high:+.3f}]: {sure}",
    )


def write_report(folder: Path, report: dict[str, Any], history: dict[str, list[float]], curves: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(
        json.dumps({**report, "history": history}, indent=2, default=_json_default) + "\n"
    )
    (folder / "report.txt").write_text(text_table(report) + "\n")
    _plots(folder, report, history, curves)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _plots(folder: Path, report: dict[str, Any], history: dict[str, list[float]], curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "val_loss"):
        if key in history:
            axes[0].plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    for key in ("pr_auc", "val_pr_auc"):
        if key in history:
            axes[1].plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    for ax, title in zip(axes, ("loss (binary cross-entropy)", "PR-AUC"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "training_curves.png", dpi=100)
    plt.close(fig)

    for name, x_key, y_key, x_label, y_label in (
        ("precision_recall.png", "recall", "precision", "recall", "precision"),
        ("roc.png", "fpr", "tpr", "false positive rate", "true positive rate"),
    ):
        fig, ax = plt.subplots(figsize=(5, 4))
        for model_name, points in curves.items():
            if points is not None:
                ax.plot(points[x_key], points[y_key], label=COLUMNS[model_name])
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(f"{y_label} vs {x_label}, held-out test cars")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)

    _tradeoff_plot(plt, folder, report)


def _tradeoff_plot(plt: Any, folder: Path, report: dict[str, Any]) -> None:
    """Over thresholds on the test cars: false alerts per healthy car-hour against the median lead time and the
    share of episodes warned; the budget as a vertical line, each model's chosen threshold as a dot."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    budget = report["evaluation"]["false_alarm_budget_per_healthy_car_hour"]
    for name, points in report["tradeoff"].items():
        if name == "prevalence" or not points:
            continue
        x = np.array([p["false_alerts_per_healthy_car_hour"] for p in points], dtype=float)  # None: NaN
        chosen = report["models"][name]["episodes"]
        for ax, key in zip(axes, ("median_lead_s", "warned_share"), strict=True):
            line = ax.plot(x, np.array([p[key] for p in points], dtype=float), marker=".", label=COLUMNS[name])[0]
            dot = np.array([chosen["false_alerts_per_healthy_car_hour"], chosen[key]], dtype=float)
            ax.plot(dot[:1], dot[1:], "o", color=line.get_color())
    for ax, label in zip(axes, ("median lead time (s)", "share of episodes warned"), strict=True):
        ax.axvline(budget, color="grey", linestyle="--", label=f"budget {budget}/h")
        ax.set_xscale("symlog", linthresh=0.05)
        ax.set_xlim(left=0)
        ax.set_xlabel("false alerts per healthy car-hour (test cars)")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"alert threshold trade-off, label horizon {report['horizon']} readings (dots: chosen thresholds)")
    fig.tight_layout()
    fig.savefig(folder / "tradeoff.png", dpi=100)
    plt.close(fig)
