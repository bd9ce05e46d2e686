"""The report's PNG plots. The dashboard shows them about 480 px wide: each is 640 px wide at most, with large
fonts, few lines and a title that says what it shows. Matplotlib is imported here only, when a report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ml.training.report import COLUMNS, MODE_TARGET, OPERATING_MODELS, TARGETS

WIDTH_IN, DPI = 6.4, 100
STYLE = {
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "legend.fontsize": 12,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "lines.linewidth": 2.2,
}
CURVE_MODELS = ("lstm", "gbm", "logistic")
"""Models drawn in the curve plots: the prevalence ranks nothing and would only add a line."""
LEAD_BIN_S = 60
RELIABILITY_MIN_WINDOWS = 20
"""A reliability bin with fewer windows is drawn in the counts only: its frequency is noise."""


def write_plots(folder: Path, report: dict[str, Any], history: dict[str, list[float]], curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with plt.rc_context(STYLE):
        for name, draw in (
            ("training_curves.png", lambda: _training(plt, history)),
            ("precision_recall.png", lambda: _curve(plt, curves, "recall", "precision")),
            ("roc.png", lambda: _curve(plt, curves, "fpr", "tpr")),
            ("tradeoff.png", lambda: _tradeoff(plt, report)),
            ("reliability.png", lambda: _reliability(plt, report)),
            ("leads.png", lambda: _leads(plt, report)),
            ("operating_point.png", lambda: _operating_point(plt, report)),
            ("recall_by_mode.png", lambda: _by_mode(plt, report)),
        ):
            fig = draw()
            if fig is not None:
                fig.tight_layout()
                fig.savefig(folder / name, dpi=DPI)
                plt.close(fig)


def _training(plt: Any, history: dict[str, list[float]]) -> Any:
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, 6.4), sharex=True)
    for ax, keys, title in (
        (axes[0], ("loss", "val_loss"), "loss (cross-entropy) per epoch"),
        (axes[1], ("pr_auc", "val_pr_auc"), "PR-AUC per epoch"),
    ):
        for key in keys:
            if key in history:
                ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=key.replace("val_", "validation "))
        ax.set_title(title)
        ax.legend()
    axes[1].set_xlabel("epoch")
    return fig


def _curve(plt: Any, curves: dict, x_key: str, y_key: str) -> Any:
    labels = {"recall": "recall", "precision": "precision", "fpr": "false positive rate", "tpr": "true positive rate"}
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.8))
    for name in CURVE_MODELS:
        if curves.get(name) is not None:
            ax.plot(curves[name][x_key], curves[name][y_key], label=COLUMNS[name])
    ax.set_xlabel(labels[x_key])
    ax.set_ylabel(labels[y_key])
    ax.set_title(f"{'precision-recall' if x_key == 'recall' else 'ROC'}, test cars' windows")
    if ax.lines:  # none when the test windows hold a single class
        ax.legend()
    return fig


def _tradeoff(plt: Any, report: dict[str, Any]) -> Any:
    """Over thresholds on the test cars: false alerts per healthy car-hour against the share of episodes warned
    and the median lead; the budget dashed, each model's chosen threshold a dot."""
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, 6.4), sharex=True)
    budget = report["evaluation"]["false_alarm_budget_per_healthy_car_hour"]
    for name in OPERATING_MODELS:
        points = report["tradeoff"].get(name) or []
        x = np.array([p["false_alerts_per_healthy_car_hour"] for p in points], dtype=float)  # None: NaN
        chosen = report["models"][name]["episodes"]
        for ax, key in zip(axes, ("warned_share", "median_lead_s"), strict=True):
            line = ax.plot(x, np.array([p[key] for p in points], dtype=float), label=COLUMNS[name])[0]
            dot = np.array([chosen["false_alerts_per_healthy_car_hour"], chosen[key]], dtype=float)
            ax.plot(dot[:1], dot[1:], "o", markersize=10, color=line.get_color())
    for ax, label in zip(axes, ("episodes warned", "median lead (s)"), strict=True):
        ax.axvline(budget, color="grey", linestyle="--", label=f"budget {budget:g}/h")
        ax.set_xscale("symlog", linthresh=0.05)
        ax.set_xlim(left=0)
        ax.set_ylabel(label)
    axes[0].legend()
    axes[0].set_title("threshold trade-off on test cars (dots: chosen)")
    axes[1].set_xlabel("false alerts per healthy car-hour")
    return fig


def _reliability(plt: Any, report: dict[str, Any]) -> Any:
    """Calibrated probability against the observed frequency per bin, and each bin's windows below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH_IN, 6.4), sharex=True, height_ratios=(2, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1.5, label="perfect")
    width = 0.1 / (len(OPERATING_MODELS) + 1)
    for i, name in enumerate(OPERATING_MODELS):
        table = report["models"][name].get("reliability") or []
        solid = [b for b in table if b["windows"] >= RELIABILITY_MIN_WINDOWS]
        top.plot(
            [b["mean_probability"] for b in solid], [b["observed"] for b in solid], marker="o", label=COLUMNS[name]
        )
        centres = np.array([b["low"] for b in table]) + width * (i + 0.5)
        bottom.bar(centres, [b["windows"] for b in table], width=width, label=COLUMNS[name])
    top.set_ylabel("observed frequency")
    top.set_title(f"reliability, test cars (bins of {RELIABILITY_MIN_WINDOWS}+ windows)")
    top.legend(loc="upper left")
    bottom.set_yscale("log")
    bottom.set_ylabel("windows")
    bottom.set_xlabel("published probability (bins of 0.1)")
    return fig


def _leads(plt: Any, report: dict[str, Any]) -> Any:
    """How long before the onset each warned episode was warned, for both models at their thresholds."""
    interval = report["evaluation"]["reading_interval_s"]
    longest = report["horizon"] * interval
    bins = np.arange(0, longest + LEAD_BIN_S, LEAD_BIN_S)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.8))
    for name in OPERATING_MODELS:
        episodes = report["models"][name]["episodes"]
        ax.hist(
            episodes["lead_s"],
            bins=bins,
            histtype="step",
            linewidth=2.5,
            label=f"{COLUMNS[name]}: {episodes['warned']} of {episodes['episodes']} warned",
        )
    ax.axvline(TARGETS["median_lead_s"], color="grey", linestyle="--", label="target median lead")
    ax.set_xlabel("lead: seconds before onset")
    ax.set_ylabel("episodes")
    ax.set_title("lead time of warned episodes, test cars")
    ax.legend()
    return fig


def _operating_point(plt: Any, report: dict[str, Any]) -> Any:
    """Both models at their thresholds on the test cars, one panel per target (dashed)."""
    panels = (
        ("warned_share", "episodes warned", 100.0, "%"),
        ("median_lead_s", "median lead", 1.0, "s"),
        ("false_alerts_per_healthy_car_hour", "false alerts", 1.0, "/car-h"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH_IN, 3.8))
    names = [COLUMNS[name] for name in OPERATING_MODELS]
    for ax, (key, title, scale, unit) in zip(axes, panels, strict=True):
        values = [report["models"][name]["episodes"][key] for name in OPERATING_MODELS]
        heights = [0.0 if v is None else v * scale for v in values]
        bars = ax.bar(names, heights, color=["tab:blue", "tab:orange"])
        for bar, value in zip(bars, values, strict=True):
            text = "n/a" if value is None else f"{value * scale:.2f}" if unit == "/car-h" else f"{value * scale:.0f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
        ax.axhline(TARGETS[key] * scale, color="grey", linestyle="--")
        ax.set_title(f"{title} ({unit})")
        ax.margins(y=0.2)
    fig.suptitle("operating point, test cars (dashed: target)")
    return fig


def _by_mode(plt: Any, report: dict[str, Any]) -> Any:
    """Share of episodes warned per failure mode for both models; only where the data name the modes."""
    by_mode = {name: report["models"][name]["episodes"].get("by_mode") for name in OPERATING_MODELS}
    if not by_mode["lstm"]:
        return None
    modes = list(by_mode["lstm"])
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 1.2 + 0.8 * len(modes)))
    height = 0.8 / len(OPERATING_MODELS)
    for i, name in enumerate(OPERATING_MODELS):
        rows = [by_mode[name][mode] for mode in modes]
        y = np.arange(len(modes)) + (i - 0.5) * height
        ax.barh(y, [100 * r["warned_share"] for r in rows], height=height, label=COLUMNS[name])
        for y_at, row in zip(y, rows, strict=True):
            ax.annotate(f" {row['warned']}/{row['episodes']}", (100 * row["warned_share"], y_at), va="center")
    ax.axvline(100 * MODE_TARGET, color="grey", linestyle="--")
    ax.set_yticks(np.arange(len(modes)), [mode.replace("_", " ") for mode in modes])
    ax.set_xlim(0, 155)  # room for the counts beside a full bar, and for the legend past 100 %
    ax.set_xticks(np.arange(0, 101, 25))
    ax.invert_yaxis()
    ax.set_xlabel("episodes warned (%)")
    ax.set_title("episodes warned by failure mode, test cars")
    ax.legend(loc="lower right")
    return fig
