"""The evaluation report: report.json, report.txt (a short table) and PNG plots, written next to the model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ROWS = (
    ("pr_auc", "PR-AUC"),
    ("roc_auc", "ROC-AUC"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("threshold", "threshold"),
    ("mean_lead_time_readings", "lead (readings)"),
    ("mean_lead_time_s", "lead (s)"),
    ("episodes_alerted", "episodes alerted"),
    ("failure_episodes", "failure episodes"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def text_table(report: dict[str, Any]) -> str:
    """The LSTM beside the baseline on the held-out test cars, and the verdict."""
    lstm, base = report["metrics"], report["baseline"]
    lines = [f"{'test cars: ' + str(len(report['split']['test'])):<22}{'LSTM':>12}{'baseline':>12}"]
    lines += [f"{label:<22}{_cell(lstm.get(key)):>12}{_cell(base.get(key)):>12}" for key, label in ROWS]
    lines.append(report["verdict"])
    return "\n".join(lines)


def verdict(lstm: dict[str, Any], base: dict[str, Any]) -> tuple[bool | None, str]:
    if lstm["pr_auc"] is None or base["pr_auc"] is None:
        return None, "no verdict: the test cars hold a single class, so PR-AUC is undefined"
    beats = lstm["pr_auc"] > base["pr_auc"]
    word = "BEATS" if beats else "does NOT beat"
    return (
        beats,
        f"the LSTM {word} the baseline on PR-AUC on held-out cars ({lstm['pr_auc']:.3f} vs {base['pr_auc']:.3f})",
    )


def write_report(folder: Path, report: dict[str, Any], history: dict[str, list[float]], curves: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({**report, "history": history}, indent=2) + "\n")
    (folder / "report.txt").write_text(text_table(report) + "\n")
    _plots(folder, history, curves)


def _plots(folder: Path, history: dict[str, list[float]], curves: dict) -> None:
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
    for ax, title in zip(axes, ("loss (weighted binary cross-entropy)", "PR-AUC"), strict=True):
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
                ax.plot(points[x_key], points[y_key], label=model_name)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(f"{y_label} vs {x_label}, held-out test cars")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
